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
