package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/memdiag/memdiag/bench/benchkit"
)

// userHZ is the unit of utime and stime in /proc/PID/stat: USER_HZ, 100 on
// every Linux architecture memdiag runs on.
const userHZ = 100

// children is every process the benchmark started and has not reaped yet.
// Each runs in its own process group (its pid), so an interrupt ends them
// and whatever they started by that id, and nothing else on the machine.
type children struct {
	mu   sync.Mutex
	pids map[int]string // pid → what it is, for messages
	shut bool           // killAll ran: start nothing more
}

func newChildren() *children { return &children{pids: map[int]string{}} }

// start starts cmd pinned to cpu, in a process group of its own. The
// affinity is set on a locked OS thread just before the fork, so the
// child and every thread it makes inherit it (no window on another CPU).
func (c *children) start(cmd *exec.Cmd, cpu int, what string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.shut {
		return errInterrupted
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err := benchkit.StartPinned(cmd, cpu); err != nil {
		return fmt.Errorf("starting %s: %w", what, err)
	}
	c.pids[cmd.Process.Pid] = what
	return nil
}

// reaped forgets a process once Wait returned.
func (c *children) reaped(pid int) {
	c.mu.Lock()
	delete(c.pids, pid)
	c.mu.Unlock()
}

// killAll SIGKILLs the process group of every child still running and
// refuses new ones. memdiag killed this way loses its BPF programs with
// its file descriptors: nothing stays attached.
func (c *children) killAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.shut = true
	for pid := range c.pids {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
}

// errInterrupted is returned once Ctrl-C or SIGTERM reached the benchmark.
var errInterrupted = errors.New("interrupted")

// proc is a started child whose exit is watched.
type proc struct {
	cmd     *exec.Cmd
	what    string
	exited  chan struct{} // closed once Wait returned
	waitErr error
}

// spawn starts cmd pinned to cpu and watches its exit.
func (c *children) spawn(cmd *exec.Cmd, cpu int, what string) (*proc, error) {
	if err := c.start(cmd, cpu, what); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, what: what, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		c.reaped(cmd.Process.Pid)
		close(p.exited)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// done reports whether the process has exited.
func (p *proc) done() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// stop sends sig and waits up to timeout for the exit, then SIGKILLs the
// process group and waits for that. It returns whether the process exited
// within timeout.
func (p *proc) stop(sig syscall.Signal, timeout time.Duration) bool {
	if p.done() {
		return true
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
		return true
	case <-time.After(timeout):
		_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
		<-p.exited
		return false
	}
}

// procCPU returns the user and system CPU time (utime, stime) of process
// pid, all its threads.
func procCPU(pid int) (user, sys time.Duration, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	u, s, err := cpuTicks(string(data))
	if err != nil {
		return 0, 0, err
	}
	return time.Duration(u) * time.Second / userHZ, time.Duration(s) * time.Second / userHZ, nil
}

// cpuTicks returns utime and stime (fields 14 and 15) of a /proc/PID/stat
// line. The command name, field 2, may hold spaces and parentheses: the
// fields are counted after its last ')'.
func cpuTicks(stat string) (utime, stime uint64, err error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("malformed /proc stat line %q", stat)
	}
	f := strings.Fields(stat[i+1:]) // f[0] is field 3 (state): utime is f[11]
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("short /proc stat line %q", stat)
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, fmt.Errorf("parsing /proc stat times: %w", err)
	}
	return utime, stime, nil
}

// memory is what /proc/PID/status says of a process's resident memory.
type memory struct {
	HWM, RSS, Anon, File int64 // bytes: VmHWM, VmRSS, RssAnon, RssFile
}

// procMemory reads the resident memory lines of /proc/PID/status.
func procMemory(pid int) (memory, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, err
	}
	return parseStatus(string(data))
}

func parseStatus(status string) (memory, error) {
	var m memory
	fields := map[string]*int64{"VmHWM:": &m.HWM, "VmRSS:": &m.RSS, "RssAnon:": &m.Anon, "RssFile:": &m.File}
	seen := 0
	for _, line := range strings.Split(status, "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || f[2] != "kB" {
			continue
		}
		dst, ok := fields[f[0]]
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return m, fmt.Errorf("parsing %q: %w", line, err)
		}
		*dst = kb << 10
		seen++
	}
	if seen != len(fields) {
		return m, errors.New("missing VmHWM, VmRSS, RssAnon or RssFile in /proc status")
	}
	return m, nil
}
