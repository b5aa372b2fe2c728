package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/memdiag/memdiag/dump"
	"github.com/memdiag/memdiag/metrics"
	"github.com/memdiag/memdiag/procfs"
	"github.com/memdiag/memdiag/report"
	"github.com/memdiag/memdiag/session"
	"github.com/memdiag/memdiag/tracer"
)

// closers holds what a command opened, closed in reverse order on every
// path out (as opentelemetry-go-instrumentation's probes keep theirs).
type closers []func() error

// add keeps a close function for later.
func (c *closers) add(f func() error) { *c = append(*c, f) }

// close closes everything in reverse and joins the errors. Closing twice
// is safe: each function runs once.
func (c *closers) close() error {
	var errs []error
	for i := len(*c) - 1; i >= 0; i-- {
		errs = append(errs, (*c)[i]())
	}
	*c = nil
	return errors.Join(errs...)
}

// closeInto closes everything and sets *err to what failed when it was
// nil: the first error is the one-line message, not the cleanup after it.
func (c *closers) closeInto(err *error) {
	if cerr := c.close(); *err == nil {
		*err = cerr
	}
}

// prepareOutputs refuses, before anything is traced or written, outputs
// that could not be written at the end, and opens --metrics-addr so a busy
// address is refused too. The session serves and closes the listener; cl
// closes it if the session never started.
func prepareOutputs(o *options, cl *closers) error {
	if err := session.CheckOutputs(o.Config); err != nil {
		return usageErr("%v", err)
	}
	if o.metricsAddr == "" {
		return nil
	}
	ln, err := metrics.Listen(o.metricsAddr)
	if err != nil {
		return usageErr("%v", err)
	}
	cl.add(func() error { ln.Close(); return nil }) // closed twice when served: that error means nothing
	o.Metrics = ln
	return nil
}

// probes says where a trace attaches.
type probes struct {
	launcher int    // run: the launcher's pid, a target from its exec; 0 for attach
	cgroup   string // attach --container/--cgroup: follow new processes of this cgroup v2 directory
	main     int    // the process reports name
	pids     []int  // attach: every process to trace now, main among them
	exe      string // the binary uprobes (--tls, --exact-external) go on, for process uprobePID
	uprobe   int    // the process uprobes are for
}

// openTracer is the one open/attach sequence of attach and run: load the
// BPF program, make the processes targets and learn their mappings, attach
// the opt-in uprobes. The tracer's Close goes to cl; traced lists the
// pids of p.pids other than main that are traced (some may have exited).
func openTracer(o *options, p probes, cl *closers) (tr *tracer.Tracer, traced []int, err error) {
	tr, err = tracer.Open(o.tracerConfig(p.launcher, p.cgroup))
	if err != nil {
		return nil, nil, err
	}
	cl.add(tr.Close)
	for _, pid := range p.pids {
		if err := tr.AddTarget(pid); err != nil {
			return nil, nil, err
		}
		if _, err := tr.LearnProcess(pid, true); err != nil {
			if pid == p.main {
				return nil, nil, fmt.Errorf("process %d exited while memdiag was attaching (%v)", pid, err)
			}
			continue // a container process that just exited
		}
		if pid != p.main {
			traced = append(traced, pid)
		}
	}
	if o.TLS {
		if err := tr.AttachTLS(p.uprobe, p.exe); err != nil {
			return nil, nil, usageErr("%v", err)
		}
	}
	if o.ExactExternal {
		if err := tr.AttachExact(p.uprobe, p.exe); err != nil {
			return nil, nil, usageErr("%v", err)
		}
	}
	if o.NativeHeap {
		libc := "" // attach: the library the process maps
		if p.launcher != 0 {
			libc = hostLibc() // run: attached before the exec
		}
		if err := tr.AttachNativeHeap(p.uprobe, libc); err != nil {
			return nil, nil, usageErr("%v", err)
		}
	}
	o.Stacks = stackSamples(tr)
	o.Sampler, o.Exe = sampler{tr}, p.exe
	return tr, traced, nil
}

// stackSamples reads a tracer's sampled growth by user stack for dumps.
func stackSamples(tr *tracer.Tracer) func(uint32) ([]dump.StackSample, error) {
	return func(pid uint32) ([]dump.StackSample, error) {
		raw, err := tr.StackSamples(pid)
		if err != nil {
			return nil, err
		}
		out := make([]dump.StackSample, 0, len(raw))
		for _, r := range raw {
			out = append(out, dump.StackSample{PID: r.PID, Stack: r.Stack, Bytes: r.Bytes, Pages: int64(r.Samples)})
		}
		return out, nil
	}
}

// now is the start of a trace: wall time only, so that a replay computes
// the same durations.
func now() time.Time { return time.Now().Round(0) }

// baselineOf is a process's memory as /proc/PID/status gives it.
func baselineOf(st procfs.Status) report.Baseline {
	return report.Baseline{
		Memory: report.Memory{RSS: st.RssAnon + st.RssFile + st.RssShmem, Anon: st.RssAnon, File: st.RssFile, Shmem: st.RssShmem},
		HWM:    st.VmHWM,
	}
}

// trace runs a session: start it (the ready file), release the command
// (run; nil for attach), loop until ctx ends, done closes or --duration
// passes, then finish. loopEnded runs between the loop and the final
// report (attach stops catching signals: a second Ctrl-C ends memdiag at
// once). SIGUSR1 writes the current report meanwhile, SIGUSR2 takes a
// dump on demand.
func trace(ctx context.Context, s *session.Session, done <-chan struct{}, release func() error, loopEnded func()) (why string, err error) {
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	defer signal.Stop(usr2)
	if err := s.Start(); err != nil {
		return "", err
	}
	if release != nil {
		if err := release(); err != nil {
			return "", err
		}
	}
	why = s.Loop(ctx, done, usr1, usr2)
	if loopEnded != nil {
		loopEnded()
	}
	return why, s.Finish(why)
}

// sampler adapts the tracer to the session's runtime heap samplers.
type sampler struct{ *tracer.Tracer }

// AttachGo attaches the Go memory profiler's uprobes, turning the
// profiler on where the linker turned it off.
func (s sampler) AttachGo(pid int, exe string) (session.GoProfiler, error) {
	gs, err := s.AttachGoSampler(pid, exe, true)
	return session.GoProfiler{Version: gs.GoVersion, Rate: gs.Rate, TurnedOn: gs.TurnedOn, Assumed: gs.Assumed}, err
}

// AttachV8 attaches V8's SampleObject uprobe.
func (s sampler) AttachV8(pid int, exe string) error { return s.AttachV8Sampler(pid, exe) }

// hostLibc is the C library a dynamically linked program memdiag run
// starts will load: the first of the usual places that exists.
func hostLibc() string {
	for _, p := range []string{"/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6", "/usr/lib64/libc.so.6", "/lib/libc.so.6"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "/lib/x86_64-linux-gnu/libc.so.6"
}
