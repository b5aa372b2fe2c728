package target

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/memdiag/memdiag/launch"
	"github.com/memdiag/memdiag/metrics"
	"github.com/memdiag/memdiag/procfs"
	"github.com/memdiag/memdiag/report"
	"github.com/memdiag/memdiag/session"
	"github.com/memdiag/memdiag/tracer"
)

// Options are a trace's settings: the session's, the sizes of the
// tracer's tables and the metrics address (the flags of attach, run and
// fleet).
type Options struct {
	session.Config
	RingbufBytes   int    // the lifecycle ring buffer, a power of two
	MaxBuckets     int    // the kernel's bucket table
	MaxOutstanding int    // the table of live blocks (--exact-external, --native-heap)
	MetricsAddr    string // serve Prometheus metrics here; "" for none
}

// Validate refuses settings the session or the kernel's tables cannot
// have, with the flag to change (ErrInput).
func (o *Options) Validate() error {
	if err := o.Config.Validate(); err != nil {
		return Input(err)
	}
	switch {
	case o.RingbufBytes < 4096 || o.RingbufBytes&(o.RingbufBytes-1) != 0:
		return inputf("--ringbuf-size must be a power of two of at least 4096, got %d", o.RingbufBytes)
	case o.MaxBuckets < 64 || o.MaxBuckets > tracer.MaxBuckets:
		return inputf("--max-buckets must be between 64 and %d, got %d", tracer.MaxBuckets, o.MaxBuckets)
	case o.MaxOutstanding < 1:
		return inputf("--max-outstanding must be at least 1, got %d", o.MaxOutstanding)
	}
	return nil
}

// tracerConfig is the tracer's configuration for a trace; launcher is
// run's launcher pid (0 for attach), cgroup a cgroup v2 directory to follow.
func (o *Options) tracerConfig(launcher int, cgroup string) tracer.Config {
	cfg := tracer.Config{
		Launcher: launcher, Cgroup: cgroup,
		RingbufBytes: o.RingbufBytes, MaxBuckets: o.MaxBuckets, MaxOutstanding: o.MaxOutstanding,
		KeepQueryValues: o.KeepQueryValues,
	}
	// The table of live blocks is preallocated (~27 MiB of kernel memory at
	// its default size): only the modes that fill it get it.
	if !o.ExactExternal && !o.NativeHeap {
		cfg.MaxOutstanding = 1
	}
	// User stacks are sampled for dumps' profiles, when dumps can happen.
	if !o.NoDumps && len(o.DumpAt) > 0 {
		cfg.StackSampleBytes = 64 << 10
	}
	return cfg
}

// Closers holds what a trace opened, closed in reverse order on every
// path out (as opentelemetry-go-instrumentation's probes keep theirs).
type Closers []func() error

// Add keeps a close function for later.
func (c *Closers) Add(f func() error) { *c = append(*c, f) }

// Close closes everything in reverse and joins the errors. Closing twice
// is safe: each function runs once.
func (c *Closers) Close() error {
	var errs []error
	for i := len(*c) - 1; i >= 0; i-- {
		errs = append(errs, (*c)[i]())
	}
	*c = nil
	return errors.Join(errs...)
}

// CloseInto closes everything and sets *err to what failed when it was
// nil: the first error is the one-line message, not the cleanup after it.
func (c *Closers) CloseInto(err *error) {
	if cerr := c.Close(); *err == nil {
		*err = cerr
	}
}

// PrepareOutputs refuses, before anything is traced or written, outputs
// that could not be written at the end, and opens --metrics-addr so a busy
// address is refused too (both ErrInput). The session serves and closes
// the listener; cl closes it if the session never started.
func (o *Options) PrepareOutputs(cl *Closers) error {
	if err := session.CheckOutputs(o.Config); err != nil {
		return Input(err)
	}
	if o.MetricsAddr == "" {
		return nil
	}
	ln, err := metrics.Listen(o.MetricsAddr)
	if err != nil {
		return Input(err)
	}
	cl.Add(func() error { ln.Close(); return nil }) // closed twice when served: that error means nothing
	o.Metrics = ln
	return nil
}

// OpenTracer opens the tracer on p (Open) with the options' tables and
// uprobes, its Close in cl, and gives the session what it reads through
// the tracer: stack samples for dumps, the runtime heap sampler.
func (o *Options) OpenTracer(p Probes, cl *Closers) (*tracer.Tracer, []int, error) {
	p.TLS, p.Exact, p.NativeHeap = o.TLS, o.ExactExternal, o.NativeHeap
	tr, traced, err := Open(o.tracerConfig(p.Launcher, p.Cgroup), p, cl.Add)
	if err != nil {
		return nil, nil, err
	}
	o.Stacks, o.Sampler, o.Exe = Stacks(tr), Sampler{Tracer: tr}, p.Exe
	return tr, traced, nil
}

// SharedOpener is fleet mode's open sequence: one tracer for every
// container, following the pods' cgroup root with o's tables; unknown is
// told of each cgroup a process exec'd in before a container names it.
func (o Options) SharedOpener() func(root string, unknown func(uint64)) (*tracer.Shared, error) {
	return func(root string, unknown func(uint64)) (*tracer.Shared, error) {
		return tracer.OpenShared(o.tracerConfig(0, root), unknown)
	}
}

// Attach is `memdiag attach`'s sequence up to the live loop: resolve sel,
// refuse what cannot be traced, check the outputs, watch the main
// process's exit, open the tracer on every process, then read the
// baseline. Everything opened is in cl, for the caller to close after
// the session ran; done closes when the main process exits.
func Attach(ctx context.Context, sel Selection, o Options, cl *Closers) (s *session.Session, done <-chan struct{}, err error) {
	res, err := Resolve(ctx, sel)
	if err != nil {
		return nil, nil, err
	}
	pid := res.Main
	if _, err := Check(pid); err != nil {
		return nil, nil, err
	}
	if err := o.PrepareOutputs(cl); err != nil {
		return nil, nil, err
	}
	proc, err := Watch(pid)
	if err != nil {
		return nil, nil, err
	}
	cl.Add(proc.Close)
	exe := fmt.Sprintf("/proc/%d/exe", pid)
	tr, others, err := o.OpenTracer(Probes{Cgroup: res.Cgroup, Main: pid, PIDs: res.PIDs, Exe: exe, UprobePID: pid}, cl)
	if err != nil {
		return nil, nil, err
	}
	// The baseline is read after the targets are in the kernel's table,
	// so no change falls between the two.
	base, err := procfs.ReadStatus(pid)
	if err != nil || proc.Exited() {
		return nil, nil, fmt.Errorf("process %d exited while memdiag was attaching", pid)
	}
	baseline := Baseline(base)
	for _, p := range others {
		if st, err := procfs.ReadStatus(p); err == nil {
			baseline.Memory = baseline.Memory.Add(Baseline(st).Memory)
		}
	}
	tgt := report.Target{PID: uint32(pid), Comm: base.Name, Exe: procfs.Exe(pid), Cmdline: procfs.Cmdline(pid), Mode: "attach", Container: res.Container, Cgroup: res.Cgroup}
	return session.New(tr, o.Config, tgt, baseline, now()), proc.Done(), nil
}

// Run is `memdiag run`'s sequence up to the live loop: find the command,
// check the outputs, start it through a launcher that waits until the
// probes are attached before it execs (so nothing the command does is
// missed), then open the tracer. Everything opened is in cl; cmd releases
// the command and gives its status.
func Run(argv []string, o Options, cl *Closers) (s *session.Session, cmd *launch.Cmd, err error) {
	path, err := launch.LookPath(argv[0])
	if err != nil {
		return nil, nil, err
	}
	if err := o.PrepareOutputs(cl); err != nil {
		return nil, nil, err
	}
	if cmd, err = launch.Start(path, argv); err != nil {
		return nil, nil, err
	}
	// Until the command is released, closing the gate makes the launcher
	// exit without exec'ing; memdiag waits for it. On --duration memdiag
	// stops tracing and lets the command run on: this waits for it too.
	cl.Add(cmd.Close)
	// Uprobes go on the command's binary before it runs: the launcher's
	// pid is the command's after the exec.
	tr, _, err := o.OpenTracer(Probes{Launcher: cmd.Pid(), Exe: path, UprobePID: cmd.Pid()}, cl)
	if err != nil {
		return nil, nil, err
	}
	tgt := report.Target{PID: uint32(cmd.Pid()), Comm: argv[0], Exe: path, Cmdline: argv, Mode: "run"}
	return session.New(tr, o.Config, tgt, report.Baseline{}, now()), cmd, nil
}

// now is the start of a trace: wall time only, so that a replay computes
// the same durations.
func now() time.Time { return time.Now().Round(0) }
