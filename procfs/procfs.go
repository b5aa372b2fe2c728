// Package procfs reads the few /proc files memdiag needs: a process's
// memory status, name and executable.
package procfs

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Status is the memory part of /proc/PID/status, in bytes.
type Status struct {
	Name     string
	Tgid     int
	VmRSS    int64
	RssAnon  int64
	RssFile  int64
	RssShmem int64
	VmHWM    int64
	VmSwap   int64
	Kernel   bool // a kernel thread: no memory of its own
	Zombie   bool // exited, not yet reaped
}

// ReadStatus reads /proc/PID/status.
func ReadStatus(pid int) (Status, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Status{}, err
	}
	return ParseStatus(data)
}

// ParseStatus parses the text of a /proc/PID/status file.
func ParseStatus(data []byte) (Status, error) {
	var st Status
	seenVm := false
	// No line-length limit: a Groups: line can be longer than a scanner's.
	for line := range bytes.Lines(data) {
		key, val, ok := strings.Cut(strings.TrimRight(string(line), "\n"), ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		kb := func() int64 {
			n, _ := strconv.ParseInt(strings.TrimSuffix(val, " kB"), 10, 64)
			return n * 1024
		}
		switch key {
		case "Name":
			st.Name = val
		case "State":
			st.Zombie = strings.HasPrefix(val, "Z") || strings.HasPrefix(val, "X")
		case "Tgid":
			st.Tgid, _ = strconv.Atoi(val)
		case "VmRSS":
			st.VmRSS, seenVm = kb(), true
		case "RssAnon":
			st.RssAnon = kb()
		case "RssFile":
			st.RssFile = kb()
		case "RssShmem":
			st.RssShmem = kb()
		case "VmHWM":
			st.VmHWM = kb()
		case "VmSwap":
			st.VmSwap = kb()
		}
	}
	if st.Tgid == 0 {
		return st, fmt.Errorf("no Tgid line")
	}
	st.Kernel = !seenVm && !st.Zombie
	return st, nil
}

// Exe returns the target of /proc/PID/exe, or "" when it cannot be read.
func Exe(pid int) string {
	p, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	return p
}

// Cmdline returns the arguments in /proc/PID/cmdline, or nil when it cannot
// be read or is empty (a kernel thread, a zombie).
func Cmdline(pid int) []string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil
	}
	return ParseCmdline(data)
}

// ParseCmdline splits the NUL-separated arguments of a /proc/PID/cmdline
// file. A process that rewrote its arguments into one space-separated string
// (as some servers do to set their title) gives that one string.
func ParseCmdline(data []byte) []string {
	data = bytes.TrimRight(data, "\x00")
	if len(data) == 0 {
		return nil
	}
	return strings.Split(string(data), "\x00")
}
