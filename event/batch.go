package event

import "sync"

// Batch is events handed over together, oldest first: the tracer sends
// what it finds in its ring buffer at once as one batch, so the reader and
// its consumer pay one channel operation (a lock, often a wakeup) for up to
// BatchLen events instead of one each.
type Batch struct {
	Events []Event
}

// BatchLen is the most events a batch the tracer sends carries: its
// consumer looks at its other work (ticks, signals) at least this often.
const BatchLen = 256

var batches = sync.Pool{New: func() any { return &Batch{Events: make([]Event, 0, BatchLen)} }}

// NewBatch returns an empty batch, one recycled when there is one.
func NewBatch() *Batch { return batches.Get().(*Batch) }

// Recycle hands back the batch and each of its events (Recycle): nothing
// may refer to either afterwards.
func (b *Batch) Recycle() {
	for _, ev := range b.Events {
		Recycle(ev)
	}
	b.Release()
}

// Release hands back the batch alone, its events being someone else's now
// (consumed and recycled one by one, or passed on).
func (b *Batch) Release() {
	clear(b.Events)
	b.Events = b.Events[:0]
	batches.Put(b)
}
