package event

import "sync"

// A busy server makes an op begin and an op end record per request, ~100k
// of each a second under a plain Node.js server, and making each event
// anew was most of what memdiag allocated, and so most of its GC (issue
// #15). The tracer takes them from pools; whoever consumes the tracer's
// events hands each back when done with it.
var (
	opBegins = sync.Pool{New: func() any { return new(OpBegin) }}
	opEnds   = sync.Pool{New: func() any { return new(OpEnd) }}
)

// NewOpBegin returns a zero OpBegin, one recycled when there is one.
func NewOpBegin() *OpBegin { return opBegins.Get().(*OpBegin) }

// NewOpEnd returns a zero OpEnd, one recycled when there is one.
func NewOpEnd() *OpEnd { return opEnds.Get().(*OpEnd) }

// Recycle hands back an event its holder is done with, for NewOpBegin or
// NewOpEnd to return again: nothing may refer to it afterwards. Events of
// other kinds are left to the GC.
func Recycle(ev Event) {
	switch e := ev.(type) {
	case *OpBegin:
		*e = OpBegin{}
		opBegins.Put(e)
	case *OpEnd:
		*e = OpEnd{}
		opEnds.Put(e)
	}
}
