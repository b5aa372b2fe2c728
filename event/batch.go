package event

import "sync"

// Batch is events handed over together, oldest first: the tracer sends
// what it finds in its ring buffer at once as one batch, so the reader and
// its consumer pay one channel operation (a lock, often a wakeup) for up to
// BatchLen events instead of one each.
//
// A batch also carries spare op begins and ends: Recycle keeps its events'
// there, and the next holder of the batch takes them (NewOpBegin, NewOpEnd)
// before event's pools: a pool's Get and Put per op event were 8% of
// memdiag's CPU in a record storm.
type Batch struct {
	Events []Event

	begins []*OpBegin // zero, for NewOpBegin
	ends   []*OpEnd   // zero, for NewOpEnd
}

// BatchLen is the most events a batch the tracer sends carries: its
// consumer looks at its other work (ticks, signals) at least this often.
const BatchLen = 256

// maxSpares bounds the spare op begins and ends a batch keeps, of each
// (about what it carried); more go to event's pools.
const maxSpares = BatchLen

var batches = sync.Pool{New: func() any { return &Batch{Events: make([]Event, 0, BatchLen)} }}

// NewBatch returns an empty batch, one recycled when there is one.
func NewBatch() *Batch { return batches.Get().(*Batch) }

// NewOpBegin returns a zero OpBegin, a spare of b's when it has one; a nil
// b takes it from event's pool.
func (b *Batch) NewOpBegin() *OpBegin {
	if b == nil {
		return NewOpBegin()
	}
	return takeSpare(&b.begins, NewOpBegin)
}

// NewOpEnd returns a zero OpEnd, as NewOpBegin does.
func (b *Batch) NewOpEnd() *OpEnd {
	if b == nil {
		return NewOpEnd()
	}
	return takeSpare(&b.ends, NewOpEnd)
}

// takeSpare takes the last of spares, or one from fresh when none is left.
func takeSpare[T any](spares *[]*T, fresh func() *T) *T {
	n := len(*spares)
	if n == 0 {
		return fresh()
	}
	e := (*spares)[n-1]
	*spares = (*spares)[:n-1]
	return e
}

// Recycle hands back the batch and each of its events, as Recycle does:
// nothing may refer to either afterwards.
func (b *Batch) Recycle() {
	b.keepSpares()
	b.Release()
}

// keepSpares zeroes the batch's op events and keeps them as spares (up to
// maxSpares of each), recycling the rest.
func (b *Batch) keepSpares() {
	for _, ev := range b.Events {
		switch e := ev.(type) {
		case *OpBegin:
			if len(b.begins) < maxSpares {
				*e = OpBegin{}
				b.begins = append(b.begins, e)
				continue
			}
		case *OpEnd:
			if len(b.ends) < maxSpares {
				*e = OpEnd{}
				b.ends = append(b.ends, e)
				continue
			}
		}
		Recycle(ev)
	}
}

// Release hands back the batch alone, its events being someone else's now
// (passed on, or recycled one by one).
func (b *Batch) Release() {
	clear(b.Events)
	b.Events = b.Events[:0]
	batches.Put(b)
}
