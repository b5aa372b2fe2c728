package tracer

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Tracefs is where memdiag expects tracefs; Probe mounts it there when
// nothing is mounted (the kernel has it, the distribution did not mount it).
const Tracefs = "/sys/kernel/tracing"

// btfPath is the kernel's own BTF, needed for CO-RE relocations.
const btfPath = "/sys/kernel/btf/vmlinux"

// Tracepoint names one tracepoint as group/name.
type Tracepoint struct{ Group, Name string }

func (t Tracepoint) String() string { return t.Group + "/" + t.Name }

// Capabilities memdiag needs when it does not run as root.
const (
	capSysAdmin  = 21
	capSysPtrace = 19
	capPerfmon   = 38
	capBPF       = 39
)

// Probe checks, in order, every feature the tracer needs and returns an
// error that says exactly which one is missing and what to do.
func Probe(tracepoints []Tracepoint) error {
	if err := probePrivileges(); err != nil {
		return err
	}
	if err := probeKernel(); err != nil {
		return err
	}
	if _, err := os.Stat(btfPath); err != nil {
		return fmt.Errorf("kernel BTF is missing (%s): memdiag needs a kernel built with CONFIG_DEBUG_INFO_BTF=y", btfPath)
	}
	if err := ensureTracefs(); err != nil {
		return err
	}
	for _, tp := range tracepoints {
		if _, err := os.Stat(filepath.Join(Tracefs, "events", tp.Group, tp.Name, "id")); err != nil {
			return fmt.Errorf("tracepoint %s is missing from %s/events: memdiag needs a kernel with it (check CONFIG_FTRACE_SYSCALLS for syscalls/*)", tp, Tracefs)
		}
	}
	return nil
}

func probePrivileges() error {
	if os.Geteuid() == 0 {
		return nil
	}
	eff, err := effectiveCaps()
	if err != nil {
		return fmt.Errorf("reading capabilities: %w", err)
	}
	has := func(c uint) bool { return eff&(1<<c) != 0 }
	if (has(capBPF) && has(capPerfmon) || has(capSysAdmin)) && has(capSysPtrace) {
		return nil
	}
	return errors.New("memdiag needs root (or CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE): run it with sudo")
}

// effectiveCaps returns the CapEff mask of this process.
func effectiveCaps() (uint64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, errors.New("no CapEff line in /proc/self/status")
}

// probeKernel checks for Linux >= 5.17 (ring buffer, bpf_loop,
// bpf_task_pt_regs).
func probeKernel() error {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return fmt.Errorf("reading kernel version: %w", err)
	}
	release := unix.ByteSliceToString(u.Release[:])
	var major, minor int
	if _, err := fmt.Sscanf(release, "%d.%d", &major, &minor); err != nil {
		return fmt.Errorf("cannot parse kernel release %q", release)
	}
	if major < 5 || major == 5 && minor < 17 {
		return fmt.Errorf("kernel %s is too old: memdiag needs Linux 5.17 or newer (BPF ring buffer, bpf_loop)", release)
	}
	return nil
}

// ensureTracefs mounts tracefs at Tracefs when it is not mounted.
func ensureTracefs() error {
	var st unix.Statfs_t
	if err := unix.Statfs(Tracefs, &st); err == nil && st.Type == unix.TRACEFS_MAGIC {
		return nil
	}
	if err := unix.Mount("tracefs", Tracefs, "tracefs", 0, ""); err != nil {
		return fmt.Errorf("tracefs is not mounted at %s and mounting it failed (%v): run `mount -t tracefs tracefs %s`", Tracefs, err, Tracefs)
	}
	return nil
}
