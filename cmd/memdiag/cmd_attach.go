package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/memdiag/memdiag/container"
	"github.com/memdiag/memdiag/metrics"
	"github.com/memdiag/memdiag/procfs"
	"github.com/memdiag/memdiag/report"
	"github.com/memdiag/memdiag/session"
)

func newAttachCommand() *cli.Command {
	return &cli.Command{
		Name:      "attach",
		Usage:     "trace a running process or container until Ctrl-C, --duration, or its exit",
		UsageText: "memdiag attach (--pid N [--in-container NAME] | --container NAME | --cgroup PATH) [flags]",
		Flags: append([]cli.Flag{
			&cli.IntFlag{Name: "pid", Usage: "trace process `N` (and the children it starts); a host pid, or one inside --in-container"},
			&cli.StringFlag{Name: "in-container", Usage: "--pid is a pid inside container `NAME` (a name or id, as for --container; its pid namespace)"},
			&cli.StringFlag{Name: "container", Usage: "trace every process of container `NAME`, including ones started later: a docker/podman/nerdctl name, a Compose service (oip-gpu) or container name (project-oip-gpu-1), Kubernetes namespace/pod/container (pod may be a glob: shop/web-*/app), or an id or unique id prefix"},
			&cli.StringFlag{Name: "cgroup", Usage: "trace every process of the cgroup v2 directory `PATH` (absolute, or below the v2 root), including ones started later"},
		}, commonFlags()...),
		Action: func(c *cli.Context) error {
			if c.Args().Len() > 0 {
				return usageErr("attach takes no arguments, got %q (give the process with --pid N)", c.Args().First())
			}
			sel := selection{pid: c.Int("pid"), inContainer: c.String("in-container"), container: c.String("container"), cgroup: c.String("cgroup")}
			n := 0
			for _, set := range []bool{c.IsSet("pid"), sel.container != "", sel.cgroup != ""} {
				if set {
					n++
				}
			}
			switch {
			case n == 0:
				return usageErr("attach needs --pid N (the process to trace), --container ID or --cgroup PATH")
			case n > 1:
				return usageErr("give one of --pid, --container and --cgroup")
			case sel.inContainer != "" && !c.IsSet("pid"):
				return usageErr("--in-container goes with --pid N (a pid inside the container)")
			}
			opts, err := optionsFrom(c)
			if err != nil {
				return err
			}
			return runAttach(c.Context, sel, opts)
		},
	}
}

// selection is what attach was asked to trace.
type selection struct {
	pid         int
	inContainer string
	container   string
	cgroup      string
}

// resolved is a selection turned into host pids.
type resolved struct {
	main      int    // the process reports name; its exit ends tracing
	pids      []int  // every process to trace now
	cgroup    string // cgroup v2 directory whose new processes are followed, or ""
	container string // container id, for reports and metrics
}

// resolve finds the processes of a selection.
func resolve(sel selection) (resolved, error) {
	roots := container.DefaultRoots()
	switch {
	case sel.container != "":
		c, err := container.Resolve(context.Background(), sel.container, container.DefaultSources())
		if err != nil {
			return resolved{}, usageErr("%v", err)
		}
		dir := c.V2
		if dir == "" {
			dir = c.V1Memory
		}
		pids, err := container.Procs(dir)
		if err != nil || len(pids) == 0 {
			return resolved{}, usageErr("container %s has no processes (is it running?)", c.ID[:12])
		}
		return resolved{main: container.Main(pids), pids: pids, cgroup: c.V2, container: c.ID}, nil
	case sel.cgroup != "":
		dir := sel.cgroup
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(roots.V2, dir)
		}
		if fi, err := os.Stat(filepath.Join(dir, "cgroup.procs")); err != nil || fi.IsDir() {
			return resolved{}, usageErr("--cgroup %s is not a cgroup v2 directory (want a directory with cgroup.procs under %s)", sel.cgroup, roots.V2)
		}
		pids, err := container.Procs(dir)
		if err != nil || len(pids) == 0 {
			return resolved{}, usageErr("cgroup %s has no processes", dir)
		}
		return resolved{main: container.Main(pids), pids: pids, cgroup: dir, container: metrics.ContainerID(dir)}, nil
	case sel.inContainer != "":
		c, err := container.Resolve(context.Background(), sel.inContainer, container.DefaultSources())
		if err != nil {
			return resolved{}, usageErr("%v", err)
		}
		host, err := container.HostPID(c, sel.pid)
		if err != nil {
			return resolved{}, usageErr("%v", err)
		}
		return resolved{main: host, pids: []int{host}, container: c.ID}, nil
	}
	if sel.pid <= 0 {
		return resolved{}, usageErr("--pid must be a positive process id, got %d", sel.pid)
	}
	return resolved{main: sel.pid, pids: []int{sel.pid}}, nil
}

// checkProcess refuses a pid memdiag cannot trace, with what to do.
func checkProcess(pid int) (procfs.Status, error) {
	st, err := procfs.ReadStatus(pid)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return st, usageErr("no process with pid %d (check the pid with ps)", pid)
	case err != nil:
		return st, fmt.Errorf("reading process %d: %w", pid, err)
	case st.Zombie:
		return st, usageErr("process %d has already exited (it is a zombie waiting for its parent)", pid)
	case st.Kernel:
		return st, usageErr("pid %d is a kernel thread (%s): it has no memory of its own to trace", pid, st.Name)
	case st.Tgid != pid:
		return st, usageErr("pid %d is a thread of process %d: give the process id", pid, st.Tgid)
	}
	return st, nil
}

func runAttach(ctx context.Context, sel selection, opts options) (err error) {
	res, err := resolve(sel)
	if err != nil {
		return err
	}
	pid := res.main
	if _, err := checkProcess(pid); err != nil {
		return err
	}
	var cl closers
	defer cl.closeInto(&err)
	if err := prepareOutputs(&opts, &cl); err != nil {
		return err
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("watching process %d: %w", pid, err)
	}
	cl.add(func() error { return unix.Close(pidfd) })
	exe := fmt.Sprintf("/proc/%d/exe", pid)
	tr, others, err := openTracer(&opts, probes{cgroup: res.cgroup, main: pid, pids: res.pids, exe: exe, uprobe: pid}, &cl)
	if err != nil {
		return err
	}
	// The baseline is read after the targets are in the kernel's table,
	// so no change falls between the two.
	base, err := procfs.ReadStatus(pid)
	if err != nil || exited(pidfd) {
		return fmt.Errorf("process %d exited while memdiag was attaching", pid)
	}
	baseline := baselineOf(base)
	for _, p := range others {
		if st, err := procfs.ReadStatus(p); err == nil {
			baseline.Memory = baseline.Memory.Add(baselineOf(st).Memory)
		}
	}
	target := report.Target{PID: uint32(pid), Comm: base.Name, Exe: procfs.Exe(pid), Cmdline: procfs.Cmdline(pid), Mode: "attach", Container: res.container, Cgroup: res.cgroup}
	s := session.New(tr, opts.Config, target, baseline, now())
	// Signals are caught before the ready file says memdiag is there.
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	_, err = trace(ctx, s, waitExit(pidfd), nil, stop)
	return err
}

// exited reports whether the process behind pidfd has exited.
func exited(pidfd int) bool {
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	n, _ := unix.Poll(fds, 0)
	return n > 0
}

// waitExit returns a channel closed when the process behind pidfd exits.
func waitExit(pidfd int) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		for {
			n, err := unix.Poll(fds, -1)
			if n > 0 || err != nil && !errors.Is(err, unix.EINTR) {
				return
			}
		}
	}()
	return done
}
