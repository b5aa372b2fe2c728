package event

import (
	"testing"
	"time"
)

// TestRecycledEventsComeBackZero: what NewOpBegin and NewOpEnd return is a
// zero event, recycled or not.
func TestRecycledEventsComeBackZero(t *testing.T) {
	for range 3 {
		b, e := NewOpBegin(), NewOpEnd()
		if *b != (OpBegin{}) || *e != (OpEnd{}) {
			t.Fatalf("not zero: %+v, %+v", *b, *e)
		}
		*b = OpBegin{Header: Header{Time: time.Unix(1, 0), PID: 7}, OpID: 3, HTTP: true, Request: Request{Method: "GET", Path: "/"}}
		*e = OpEnd{OpID: 3, HasFinal: true, Final: Counters{Faults: 9, Comm: "node"}}
		Recycle(b)
		Recycle(e)
	}
}

// TestRecycledBatchesComeBackEmpty: what NewBatch returns is empty and
// refers to no event of its last holder.
func TestRecycledBatchesComeBackEmpty(t *testing.T) {
	for i := range 3 {
		b := NewBatch()
		if len(b.Events) != 0 {
			t.Fatalf("round %d: a new batch holds %d events", i, len(b.Events))
		}
		if held := b.Events[:cap(b.Events)]; len(held) > 0 && held[0] != nil {
			t.Fatalf("round %d: a new batch still refers to %#v", i, held[0])
		}
		b.Events = append(b.Events, NewOpBegin(), NewOpEnd(), &Fork{Child: 9})
		if i%2 == 0 {
			b.Recycle()
		} else {
			b.Release()
		}
	}
}

// TestBatchSparesComeBackZero: a recycled batch's op events come back
// zero from its NewOpBegin and NewOpEnd, and a nil batch takes them from
// the pools.
func TestBatchSparesComeBackZero(t *testing.T) {
	var none *Batch
	if b, e := none.NewOpBegin(), none.NewOpEnd(); *b != (OpBegin{}) || *e != (OpEnd{}) {
		t.Fatalf("not zero: %+v, %+v", *b, *e)
	}
	b := &Batch{}
	ob, oe := b.NewOpBegin(), b.NewOpEnd()
	*ob = OpBegin{Header: Header{PID: 7}, OpID: 3, HTTP: true, Request: Request{Method: "GET", Path: "/"}}
	*oe = OpEnd{OpID: 3, HasFinal: true, Final: Counters{Faults: 9, Comm: "node"}}
	b.Events = append(b.Events, ob, oe, &Fork{Child: 9})
	b.keepSpares() // Recycle, but for handing the batch back
	if len(b.begins) != 1 || len(b.ends) != 1 {
		t.Fatalf("a recycled batch keeps %d spare begins, %d spare ends; want 1, 1", len(b.begins), len(b.ends))
	}
	if got := b.NewOpBegin(); got != ob || *got != (OpBegin{}) {
		t.Fatalf("the spare begin is %p %+v, want %p zero", got, *got, ob)
	}
	if got := b.NewOpEnd(); got != oe || *got != (OpEnd{}) {
		t.Fatalf("the spare end is %p %+v, want %p zero", got, *got, oe)
	}
}
