package fleet

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/memdiag/memdiag/metrics"
	"github.com/memdiag/memdiag/session"
)

// Traced is one target's trace, started by a Runner's Open: a session
// whose Start has run, and a channel closed when its main process exits.
type Traced struct {
	Session *session.Session
	Exited  <-chan struct{}
}

// Runner traces every target a Watcher reports, one session each, for as
// long as the target runs: fleet mode's engine. Sessions run on their own
// goroutines; the Runner's goroutine only polls, starts and stops.
type Runner struct {
	Watcher *Watcher
	// Metrics, when not nil, exports each target's series under its
	// labels while it is traced.
	Metrics *metrics.Fleet
	// Version is memdiag's version, for the metrics' labels.
	Version string
	// Open starts tracing a target whose metrics go to exp (nil without
	// Metrics). An error is logged and the target left untraced until it
	// restarts.
	Open func(t Target, exp *metrics.Exporter) (Traced, error)
	// Logf writes one line of the fleet's own log ([FLEET] lines).
	Logf func(tag, format string, args ...any)
	// Ready, when not nil, is called once the targets running at the
	// first poll are all traced.
	Ready func() error

	mu     sync.Mutex
	active map[string]*running // by container id
	wg     sync.WaitGroup
	// failed holds the containers whose trace could not start, retried
	// at every poll while selected; their error is logged once.
	failed map[string]bool
}

// running is a target being traced.
type running struct {
	target Target
	stop   chan struct{} // closed when the target is gone or memdiag stops
	why    string        // why stop was closed, as the final [SUMMARY] says it
	exp    *metrics.Exporter
	once   sync.Once
}

// end closes stop once, saying why.
func (run *running) end(why string) {
	run.once.Do(func() {
		run.why = why
		close(run.stop)
	})
}

// Run follows the targets until ctx ends, then finishes every trace
// (final reports written) and returns. It returns an error only when the
// first poll fails (a selector that cannot work on this node) or Ready
// fails; later failed polls are logged and retried.
func (r *Runner) Run(ctx context.Context) error {
	r.active = map[string]*running{}
	r.failed = map[string]bool{}
	defer r.stopAll()
	evs, err := r.Watcher.Poll(ctx)
	if err != nil {
		return err
	}
	r.handle(evs)
	if r.Watcher.afterPoll != nil {
		r.Watcher.afterPoll()
	}
	r.Logf("FLEET", "tracing %d containers (%s)", r.Active(), r.dropped())
	if r.Ready != nil {
		if err := r.Ready(); err != nil {
			return err
		}
	}
	r.Watcher.Run(ctx, func(e Event) { r.handle([]Event{e}) }, func(err error) {
		r.Logf("ERROR", "listing the node's containers: %s", oneLine(err))
	})
	return nil
}

// dropped says how many selected containers are over the bound.
func (r *Runner) dropped() string {
	if n := r.Watcher.Dropped(); n > 0 {
		return fmt.Sprintf("%d more selected, not traced: --max-targets %d reached", n, r.Watcher.opts.MaxTargets)
	}
	return "none over --max-targets"
}

// handle starts and stops traces for a poll's events.
func (r *Runner) handle(evs []Event) {
	for _, e := range evs {
		switch e.Kind {
		case Removed:
			delete(r.failed, e.Target.ID)
			r.mu.Lock()
			run := r.active[e.Target.ID]
			r.mu.Unlock()
			if run != nil {
				run.end("the container is gone or no longer selected")
			}
		case Added:
			r.start(e.Target)
		}
	}
	if n := r.Watcher.Dropped(); n > 0 {
		r.Logf("FLEET", "%d selected containers not traced: --max-targets %d reached", n, r.Watcher.opts.MaxTargets)
	}
}

// start traces a target on its own goroutine.
func (r *Runner) start(t Target) {
	var exp *metrics.Exporter
	if r.Metrics != nil {
		var err error
		exp, err = r.Metrics.Add(metrics.Labels{Namespace: t.Namespace, Pod: t.Pod, Container: t.Container, ContainerID: t.ID, PodUID: t.PodUID, Version: r.Version})
		if err != nil {
			r.Logf("ERROR", "%s (%s): %v", t.Name(), t.ID[:12], err)
			return
		}
	}
	tr, err := r.Open(t, exp)
	if err != nil {
		if exp != nil {
			r.Metrics.Remove(exp)
		}
		// Retried at the next poll: a container caught between its
		// cgroup's creation and its first process, or one whose
		// process was exiting, is traced once it can be.
		r.Watcher.Forget(t.ID)
		if len(r.failed) > 4*r.Watcher.MaxTargets() {
			clear(r.failed) // ones that went without being traced: bounded
		}
		if !r.failed[t.ID] {
			r.failed[t.ID] = true
			r.Logf("ERROR", "not tracing %s (%s) yet, retrying at every poll: %s", t.Name(), t.ID[:12], oneLine(err))
		}
		return
	}
	delete(r.failed, t.ID)
	run := &running{target: t, stop: make(chan struct{}), exp: exp}
	r.mu.Lock()
	r.active[t.ID] = run
	r.mu.Unlock()
	r.Logf("FLEET", "tracing %s (%s)", t.Name(), t.ID[:12])
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		done := make(chan struct{})
		go func() {
			select {
			case <-run.stop:
			case <-tr.Exited:
			}
			close(done)
		}()
		why := tr.Session.Loop(context.Background(), done, nil, nil)
		select {
		case <-run.stop:
			why = run.why
		default:
		}
		err := tr.Session.Finish(why)
		run.end(why)
		if exp != nil {
			r.Metrics.Remove(exp)
		}
		r.mu.Lock()
		if r.active[t.ID] == run {
			delete(r.active, t.ID)
		}
		n := len(r.active)
		r.mu.Unlock()
		if err != nil {
			r.Logf("ERROR", "finishing the trace of %s (%s): %s", t.Name(), t.ID[:12], oneLine(err))
		}
		r.Logf("FLEET", "stopped tracing %s (%s): %s; %d containers traced", t.Name(), t.ID[:12], why, n)
	}()
}

// stopAll ends every trace and waits for their final reports.
func (r *Runner) stopAll() {
	r.mu.Lock()
	for _, run := range r.active {
		run.end("memdiag stopped (signal or --duration)")
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// Active is the number of targets traced now.
func (r *Runner) Active() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.active)
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }

// Prefixed writes each line it is given to w with prefix in front, one
// Write per line, so that the lines of several targets' logs sharing a
// terminal stay whole and say whose they are. Lines shorter than a whole
// are kept until their newline.
type Prefixed struct {
	mu     *sync.Mutex // shared by every Prefixed writing to w
	w      io.Writer
	prefix string
	buf    []byte
}

// NewPrefixed returns a writer of lines to w with prefix; mu serializes
// the writers sharing w.
func NewPrefixed(w io.Writer, mu *sync.Mutex, prefix string) *Prefixed {
	return &Prefixed{mu: mu, w: w, prefix: prefix}
}

// Write implements io.Writer.
func (p *Prefixed) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		line := append([]byte(p.prefix), p.buf[:i+1]...)
		p.buf = p.buf[i+1:]
		if _, err := p.w.Write(line); err != nil {
			return len(b), err
		}
	}
}
