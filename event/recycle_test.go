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
