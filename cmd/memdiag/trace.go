package main

import (
	"errors"
	"time"

	"github.com/memdiag/memdiag/metrics"
	"github.com/memdiag/memdiag/session"
	"github.com/memdiag/memdiag/target"
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

// openTracer opens the tracer on p (target.Open) with the flags' tables
// and uprobes, its Close in cl, and gives the session what it reads
// through the tracer: stack samples for dumps, the runtime heap sampler.
func openTracer(o *options, p target.Probes, cl *closers) (*tracer.Tracer, []int, error) {
	p.TLS, p.Exact, p.NativeHeap = o.TLS, o.ExactExternal, o.NativeHeap
	tr, traced, err := target.Open(o.tracerConfig(p.Launcher, p.Cgroup), p, cl.add)
	if err != nil {
		return nil, nil, err
	}
	o.Stacks, o.Sampler, o.Exe = target.Stacks(tr), target.Sampler{Tracer: tr}, p.Exe
	return tr, traced, nil
}

// now is the start of a trace: wall time only, so that a replay computes
// the same durations.
func now() time.Time { return time.Now().Round(0) }
