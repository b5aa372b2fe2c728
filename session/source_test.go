package session

import (
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/memdiag/memdiag/event"
)

// sliceTracer is a Tracer that plays back events and snapshots a test
// built, in the order the test drives them. It implements the interface
// for real (Stop drains, Close closes, Forget forgets); it has no kernel.
type sliceTracer struct {
	events chan *event.Batch // unbuffered: a send returns once the loop took it

	mu        sync.Mutex
	snap      *event.Snapshot // what Snapshot returns next
	rest      []event.Event   // what Stop drains
	final     *event.Snapshot // what Snapshot returns after Stop
	forgotten []event.BucketKey
	deadPIDs  []uint32
	oldImages []uint32
	learned   []int
	snapshots int
	stopped   bool
	closed    bool
}

func newSliceTracer() *sliceTracer { return &sliceTracer{events: make(chan *event.Batch)} }

func (f *sliceTracer) Events() <-chan *event.Batch { return f.events }

// send sends evs as one batch, as the tracer sends what it read at once.
func (f *sliceTracer) send(evs ...event.Event) {
	b := event.NewBatch()
	b.Events = append(b.Events, evs...)
	f.events <- b
}

func (f *sliceTracer) Snapshot() (*event.Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.snapshots++
	if f.stopped && f.final != nil {
		return f.final, nil
	}
	return f.snap, nil
}

func (f *sliceTracer) Forget(buckets []event.BucketKey, deadPIDs []uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forgotten = append(f.forgotten, buckets...)
	f.deadPIDs = append(f.deadPIDs, deadPIDs...)
	return nil
}

func (f *sliceTracer) ForgetOldImage(pid uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.oldImages = append(f.oldImages, pid)
	return nil
}

func (f *sliceTracer) LearnProcess(pid int, seed bool) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.learned = append(f.learned, pid)
	return true, nil
}

// Stop delivers what is left, then closes Events, as the tracer drains its
// ring buffer.
func (f *sliceTracer) Stop() error {
	f.mu.Lock()
	if f.stopped {
		f.mu.Unlock()
		return nil
	}
	f.stopped = true
	rest := slices.Clone(f.rest)
	f.mu.Unlock()
	// Two batches, when there is more than one event: the session takes
	// every batch the tracer drains.
	if half := len(rest) / 2; half > 0 {
		f.send(rest[:half]...)
		f.send(rest[half:]...)
	} else if len(rest) > 0 {
		f.send(rest...)
	}
	close(f.events)
	return nil
}

func (f *sliceTracer) Close() error {
	f.Stop()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

// step is one thing a test makes happen to a live session: an event, a
// counter read (flush) with the snapshot it returns, a periodic line, or a
// report request.
type step struct {
	ev        event.Event
	snap      *event.Snapshot
	periodic  bool
	reportNow bool
	dumpNow   bool
	fn        func() // run by the driver between two steps
}

// driver runs a session's loop over steps, one at a time: every channel
// is unbuffered, so each step is taken only after the previous one was
// handled, and the run is deterministic.
type driver struct {
	tr        *sliceTracer
	flush     chan time.Time
	periodic  chan time.Time
	reportNow chan os.Signal
	dumpNow   chan os.Signal
	done      chan struct{}
}

func newDriver(s *Session, tr *sliceTracer) *driver {
	d := &driver{tr: tr, flush: make(chan time.Time), periodic: make(chan time.Time), reportNow: make(chan os.Signal), dumpNow: make(chan os.Signal), done: make(chan struct{})}
	s.flushTick, s.periodicTick = d.flush, d.periodic
	return d
}

// play feeds the steps, then says the target exited. Events one after the
// other go in one batch.
func (d *driver) play(t *testing.T, steps []step) {
	defer close(d.done)
	for i := 0; i < len(steps); i++ {
		st := steps[i]
		switch {
		case st.ev != nil:
			evs := []event.Event{st.ev}
			for i+1 < len(steps) && steps[i+1].ev != nil {
				i++
				evs = append(evs, steps[i].ev)
			}
			d.tr.send(evs...)
		case st.snap != nil:
			d.tr.mu.Lock()
			d.tr.snap = st.snap
			d.tr.mu.Unlock()
			d.flush <- st.snap.Time
		case st.periodic:
			d.periodic <- time.Time{}
		case st.reportNow:
			d.reportNow <- syscall.SIGUSR1
		case st.dumpNow:
			d.dumpNow <- syscall.SIGUSR2
		case st.fn != nil:
			st.fn()
		}
	}
}
