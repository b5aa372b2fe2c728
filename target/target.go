package target

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/memdiag/memdiag/container"
	"github.com/memdiag/memdiag/metrics"
	"github.com/memdiag/memdiag/procfs"
	"github.com/memdiag/memdiag/report"
)

// ErrInput marks an error caused by what the user asked for.
var ErrInput = errors.New("bad input")

// inputError is a one-line message that is ErrInput.
type inputError struct{ err error }

func (e inputError) Error() string        { return e.err.Error() }
func (e inputError) Unwrap() error        { return e.err }
func (e inputError) Is(target error) bool { return target == ErrInput }

// Input wraps err as ErrInput (nil stays nil).
func Input(err error) error {
	if err == nil {
		return nil
	}
	return inputError{err}
}

// inputf is Input(fmt.Errorf(...)).
func inputf(format string, args ...any) error { return inputError{fmt.Errorf(format, args...)} }

// Selection is what `memdiag attach` was asked to trace: one of PID (with
// InContainer, a pid in that container's namespace), Container or Cgroup.
type Selection struct {
	PID         int
	PIDSet      bool // --pid was given (0 is a value to refuse, not an absence)
	InContainer string
	Container   string
	Cgroup      string
}

// Validate refuses a selection that names no target, or more than one.
func (sel Selection) Validate() error {
	n := 0
	for _, set := range []bool{sel.PIDSet, sel.Container != "", sel.Cgroup != ""} {
		if set {
			n++
		}
	}
	switch {
	case n == 0:
		return inputf("attach needs --pid N (the process to trace), --container ID or --cgroup PATH")
	case n > 1:
		return inputf("give one of --pid, --container and --cgroup")
	case sel.InContainer != "" && !sel.PIDSet:
		return inputf("--in-container goes with --pid N (a pid inside the container)")
	}
	return nil
}

// Resolved is a Selection turned into host pids.
type Resolved struct {
	Main      int    // the process reports name; its exit ends tracing
	PIDs      []int  // every process to trace now, Main among them
	Cgroup    string // cgroup v2 directory whose new processes are followed, or ""
	Container string // container id, for reports and metrics
}

// Resolve finds the processes of a selection.
func Resolve(ctx context.Context, sel Selection) (Resolved, error) {
	roots := container.DefaultRoots()
	switch {
	case sel.Container != "":
		c, err := container.Resolve(ctx, sel.Container, container.DefaultSources())
		if err != nil {
			return Resolved{}, Input(err)
		}
		dir := c.V2
		if dir == "" {
			dir = c.V1Memory
		}
		pids, err := container.Procs(dir)
		if err != nil || len(pids) == 0 {
			return Resolved{}, inputf("container %s has no processes (is it running?)", c.ID[:12])
		}
		return Resolved{Main: container.Main(pids), PIDs: pids, Cgroup: c.V2, Container: c.ID}, nil
	case sel.Cgroup != "":
		dir := sel.Cgroup
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(roots.V2, dir)
		}
		if fi, err := os.Stat(filepath.Join(dir, "cgroup.procs")); err != nil || fi.IsDir() {
			return Resolved{}, inputf("--cgroup %s is not a cgroup v2 directory (want a directory with cgroup.procs under %s)", sel.Cgroup, roots.V2)
		}
		pids, err := container.Procs(dir)
		if err != nil || len(pids) == 0 {
			return Resolved{}, inputf("cgroup %s has no processes", dir)
		}
		return Resolved{Main: container.Main(pids), PIDs: pids, Cgroup: dir, Container: metrics.ContainerID(dir)}, nil
	case sel.InContainer != "":
		c, err := container.Resolve(ctx, sel.InContainer, container.DefaultSources())
		if err != nil {
			return Resolved{}, Input(err)
		}
		host, err := container.HostPID(c, sel.PID)
		if err != nil {
			return Resolved{}, Input(err)
		}
		return Resolved{Main: host, PIDs: []int{host}, Container: c.ID}, nil
	}
	if sel.PID <= 0 {
		return Resolved{}, inputf("--pid must be a positive process id, got %d", sel.PID)
	}
	return Resolved{Main: sel.PID, PIDs: []int{sel.PID}}, nil
}

// Check refuses a pid memdiag cannot trace, with what to do.
func Check(pid int) (procfs.Status, error) {
	st, err := procfs.ReadStatus(pid)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return st, inputf("no process with pid %d (check the pid with ps)", pid)
	case err != nil:
		return st, fmt.Errorf("reading process %d: %w", pid, err)
	case st.Zombie:
		return st, inputf("process %d has already exited (it is a zombie waiting for its parent)", pid)
	case st.Kernel:
		return st, inputf("pid %d is a kernel thread (%s): it has no memory of its own to trace", pid, st.Name)
	case st.Tgid != pid:
		return st, inputf("pid %d is a thread of process %d: give the process id", pid, st.Tgid)
	}
	return st, nil
}

// Baseline is a process's memory as /proc/PID/status gives it.
func Baseline(st procfs.Status) report.Baseline {
	return report.Baseline{
		Memory: report.Memory{RSS: st.RssAnon + st.RssFile + st.RssShmem, Anon: st.RssAnon, File: st.RssFile, Shmem: st.RssShmem},
		HWM:    st.VmHWM,
	}
}
