package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/memdiag/memdiag/attribution"
	"github.com/memdiag/memdiag/procfs"
	"github.com/memdiag/memdiag/report"
	"github.com/memdiag/memdiag/tracer"
)

func newAttachCommand() *cli.Command {
	return &cli.Command{
		Name:      "attach",
		Usage:     "trace a running process until Ctrl-C, --duration, or its exit",
		UsageText: "memdiag attach --pid N [flags]",
		Flags: append([]cli.Flag{
			&cli.IntFlag{Name: "pid", Usage: "trace process `N` (and the children it starts)"},
		}, commonFlags()...),
		Action: func(c *cli.Context) error {
			if c.Args().Len() > 0 {
				return usageErr("attach takes no arguments, got %q (give the process with --pid N)", c.Args().First())
			}
			if !c.IsSet("pid") {
				return usageErr("attach needs --pid N (the process to trace)")
			}
			opts, err := optionsFrom(c)
			if err != nil {
				return err
			}
			return runAttach(c.Context, c.Int("pid"), opts)
		},
	}
}

func runAttach(ctx context.Context, pid int, opts sessionOptions) error {
	if pid <= 0 {
		return usageErr("--pid must be a positive process id, got %d", pid)
	}
	st, err := procfs.ReadStatus(pid)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return usageErr("no process with pid %d (check the pid with ps)", pid)
	case err != nil:
		return fmt.Errorf("reading process %d: %w", pid, err)
	case st.Zombie:
		return usageErr("process %d has already exited (it is a zombie waiting for its parent)", pid)
	case st.Kernel:
		return usageErr("pid %d is a kernel thread (%s): it has no memory of its own to trace", pid, st.Name)
	case st.Tgid != pid:
		return usageErr("pid %d is a thread of process %d: give the process id", pid, st.Tgid)
	}
	if err := checkOutputs(opts); err != nil {
		return err
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("watching process %d: %w", pid, err)
	}
	defer unix.Close(pidfd)

	tr, err := tracer.Open(tracer.Config{RingbufBytes: opts.ringbufBytes, MaxBuckets: opts.maxBuckets, MaxOutstanding: opts.maxOutstanding, KeepQueryValues: opts.keepQuery})
	if err != nil {
		return err
	}
	if err := tr.AddTarget(pid); err != nil {
		tr.Close()
		return err
	}
	if _, err := tr.LearnProcess(pid, true); err != nil {
		tr.Close()
		return fmt.Errorf("process %d exited while memdiag was attaching (%v)", pid, err)
	}
	exe := fmt.Sprintf("/proc/%d/exe", pid)
	if opts.tls {
		if err := tr.AttachTLS(pid, exe); err != nil {
			tr.Close()
			return usageErr("%v", err)
		}
	}
	if opts.exact {
		if err := tr.AttachExact(pid, exe); err != nil {
			tr.Close()
			return usageErr("%v", err)
		}
	}
	// The baseline is read after the target is in the kernel's table, so
	// no change falls between the two.
	base, err := procfs.ReadStatus(pid)
	if err != nil || exited(pidfd) {
		tr.Close()
		return fmt.Errorf("process %d exited while memdiag was attaching", pid)
	}
	started := time.Now()
	s := &session{
		opts:    opts,
		tr:      tr,
		acct:    attribution.New(uint32(pid), started),
		target:  report.Target{PID: uint32(pid), Comm: base.Name, Exe: procfs.Exe(pid), Mode: "attach"},
		base:    baselineOf(base),
		started: started,
	}
	s.acct.SetComm(uint32(pid), base.Name)
	s.acct.SetOptions(opts.accountOptions())
	if err := s.start(); err != nil {
		tr.Close()
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	why := s.loop(ctx, waitExit(pidfd))
	return s.finish(why)
}

func baselineOf(st procfs.Status) report.Baseline {
	return report.Baseline{
		Memory: report.Memory{RSS: st.RssAnon + st.RssFile + st.RssShmem, Anon: st.RssAnon, File: st.RssFile, Shmem: st.RssShmem},
		HWM:    st.VmHWM,
	}
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
