package session

// Runtime heap sampling in a session: which sampler to join with the ops,
// and, for V8, the inspector session that keeps its profiler running and
// reads which samples are still alive.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/memdiag/memdiag/dump"
	"github.com/memdiag/memdiag/event"
)

// Bounds on the V8 sampler's inspector calls.
const (
	samplerStartTimeout = 15 * time.Second
	samplerQueryTimeout = 60 * time.Second // a full GC of a large heap, then the profile
)

// defaultInspectorPort is Node's: ignored from the start, so no connection
// memdiag makes to it (heap sampling, dumps) is ever one of the target's ops.
const defaultInspectorPort = 9229

// Sampler is what runtime heap sampling needs of the kernel side: the
// uprobes on the runtime's sampling path and the counts they keep.
// target.Sampler adapts *tracer.Tracer to it; nil turns sampling off.
type Sampler interface {
	// AttachGo attaches the Go memory profiler's uprobes to process pid
	// running exe, turning the profiler on if the linker turned it off.
	AttachGo(pid int, exe string) (GoProfiler, error)
	// AttachV8 attaches the SampleObject uprobe to process pid.
	AttachV8(pid int, exe string) error
	// IgnorePort keeps connections to a local port out of the ops.
	IgnorePort(port uint16) error
	// ResetV8Samples restarts the count of V8 samples of pid.
	ResetV8Samples(pid int) error
	// V8Samples is how many V8 samples of pid the kernel has seen.
	V8Samples(pid int) (uint64, error)
}

// GoProfiler is the Go memory profiler of a target, as AttachGo found it.
type GoProfiler struct {
	Version string // the binary's Go version
	Rate    uint64 // runtime.MemProfileRate: bytes between samples
	// TurnedOn: the binary's linker had turned the profiler off
	// (MemProfileRate 0) and memdiag set it to Go's default for the
	// session; it is set back to 0 when memdiag detaches.
	TurnedOn bool
	// Assumed: a stripped binary, whose rate cannot be read, taken to run
	// the profiler at Go's default.
	Assumed bool
}

// heapSampling is a session's runtime sampler.
type heapSampling struct {
	v8      *dump.HeapSampler // nil unless V8 sampling runs
	pid     int
	busy    bool // a profile read is under way
	results chan liveResult
}

type liveResult struct {
	ev  *event.HeapLive
	err error
}

// startSampling joins the target's runtime sampler with its ops, as
// --heap-sampling says, and records what it did (an event.Sampling).
func (s *Session) startSampling() {
	exe := s.cfg.Exe
	pid := int(s.target.PID)
	s.sampling.pid = pid
	s.sampling.results = make(chan liveResult, 1)
	st := &event.Sampling{Header: event.Header{Time: time.Now().Round(0), PID: uint32(pid)}}
	defer func() {
		s.consume(st)
		s.log.Sampling(st)
	}()
	mode := s.cfg.HeapSampling
	if mode == "" || mode == "off" {
		st.Reason = "off (--heap-sampling=off): the runtime heap is the mapping estimate"
		return
	}
	if s.cfg.Sampler == nil {
		st.Reason = "no runtime sampler in this build of the session: the runtime heap is the mapping estimate"
		return
	}
	if s.target.Mode == "run" {
		st.Reason = "memdiag run does not sample runtime heaps yet (attach to the running process does): the runtime heap is the mapping estimate"
		return
	}
	var errs []error
	if mode == "auto" || mode == "all" || mode == "go" {
		gp, err := s.cfg.Sampler.AttachGo(pid, exe)
		if err == nil {
			st.Runtime, st.Active, st.Interval = event.RuntimeGo, true, gp.Rate
			st.Reason = fmt.Sprintf("the Go memory profiler (%s), uprobes on mProf_Malloc, freeSpecial and gcMarkTermination", gp.Version)
			if gp.Assumed {
				st.Reason += "; the binary is stripped: its runtime.MemProfileRate cannot be read and is taken as Go's default (it links the profile reader); if no sample comes over several GC cycles, the runtime heap falls back to the mapping estimate"
			}
			if gp.TurnedOn {
				st.Reason += "; it was off (the binary never reads the profile, so Go's linker set runtime.MemProfileRate to 0): memdiag set it to Go's default for the session and sets it back to 0 when it detaches"
			}
			return
		}
		errs = append(errs, err)
	}
	if mode == "auto" {
		errs = append(errs, errors.New("V8 heap sampling is opt-in: for a Node.js target, --heap-sampling v8 joins V8's sampling heap profiler through the inspector (it costs the service throughput: see BENCHMARKS.md)"))
	}
	if mode == "all" || mode == "v8" {
		err := s.startV8(pid, exe)
		if err == nil {
			st.Runtime, st.Active, st.Interval = event.RuntimeV8, true, s.sampling.v8.Interval
			st.Reason = fmt.Sprintf("V8's sampling heap profiler, started over the inspector on port %d (loopback, the target's network namespace), open until memdiag exits; a full GC before each read", s.sampling.v8.Port)
			return
		}
		errs = append(errs, err)
	}
	st.Reason = "no runtime sampler (" + errors.Join(errs...).Error() + "): the runtime heap is the mapping estimate"
}

// startV8 attaches the SampleObject uprobe, then opens the inspector and
// starts V8's sampling heap profiler.
func (s *Session) startV8(pid int, exe string) error {
	if err := s.cfg.Sampler.AttachV8(pid, exe); err != nil {
		return err
	}
	if err := s.cfg.Sampler.IgnorePort(defaultInspectorPort); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), samplerStartTimeout)
	defer cancel()
	h, err := dump.StartHeapSampler(ctx, pid, s.cfg.HeapInterval, func(port int) error {
		if err := s.cfg.Sampler.IgnorePort(uint16(port)); err != nil {
			return err
		}
		return s.cfg.Sampler.ResetV8Samples(pid)
	})
	if err != nil {
		return err
	}
	s.sampling.v8 = h
	// The heap as sampling starts, after a full GC: what the samples are
	// checked against (attribution: heapLive).
	used, err := h.Baseline(ctx)
	if err != nil {
		s.log.Printf("SAMPLING", "reading V8's heap size: %v", err)
		return nil
	}
	s.consume(&event.HeapLive{Header: event.Header{Time: time.Now().Round(0), PID: uint32(pid)}, Runtime: event.RuntimeV8, HeapUsed: used})
	return nil
}

// readLive starts reading which V8 samples are alive, in the background;
// the answer comes on s.sampling.results.
func (s *Session) readLive() {
	h := &s.sampling
	if h.v8 == nil || h.busy {
		return
	}
	h.busy = true
	go func() { h.results <- s.queryLive() }()
}

// queryLive reads the samples still alive after a full GC. The ordinals
// the kernel had handed out before the read are the ones it speaks for.
func (s *Session) queryLive() liveResult {
	h := &s.sampling
	upTo, err := s.cfg.Sampler.V8Samples(h.pid)
	if err != nil {
		return liveResult{err: err}
	}
	ctx, cancel := context.WithTimeout(context.Background(), samplerQueryTimeout)
	defer cancel()
	live, used, err := h.v8.Live(ctx, true)
	if err != nil {
		return liveResult{err: fmt.Errorf("reading V8's sampling profile: %w", err)}
	}
	return liveResult{ev: &event.HeapLive{Header: event.Header{Time: time.Now().Round(0), PID: uint32(h.pid)}, Runtime: event.RuntimeV8, Samples: live, UpTo: upTo, HeapUsed: used}}
}

// gotLive applies a profile read.
func (s *Session) gotLive(r liveResult) {
	s.sampling.busy = false
	if r.err != nil {
		s.log.Printf("SAMPLING", "%v", r.err)
		return
	}
	s.consume(r.ev)
}

// stopSampling takes the last profile (waiting for one under way), then
// stops V8's profiler and closes the inspector memdiag opened.
func (s *Session) stopSampling() {
	h := &s.sampling
	if h.v8 == nil {
		return
	}
	if h.busy {
		s.gotLive(s.awaitLive(h.results))
	}
	last := make(chan liveResult, 1)
	go func() { last <- s.queryLive() }()
	s.gotLive(s.awaitLive(last))
	ctx, cancel := context.WithTimeout(context.Background(), samplerStartTimeout)
	defer cancel()
	// One more collection: V8 frees the backing stores of the ArrayBuffers
	// the last one found dead on its own threads, and a collection starts
	// by waiting for that, so what operations had in flight is given back
	// before the final counters are read.
	settled := make(chan liveResult, 1)
	go func() {
		_, err := h.v8.Baseline(ctx)
		settled <- liveResult{err: err}
	}()
	if r := s.awaitLive(settled); r.err != nil {
		s.log.Printf("SAMPLING", "the last collection: %v", r.err)
	}
	if err := h.v8.Close(ctx); err != nil {
		s.log.Printf("SAMPLING", "%v", err)
	}
	h.v8 = nil
}

// awaitLive waits for a profile read, taking the tracer's events meanwhile
// so the ring buffer does not fill while V8 collects and answers.
func (s *Session) awaitLive(results <-chan liveResult) liveResult {
	events := s.tr.Events()
	for {
		select {
		case r := <-results:
			return r
		case b, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			s.consumeBatch(b)
		}
	}
}
