// Package eventtest builds the event values the unprivileged tests of
// attribution and session feed their engines: a fixed clock and buckets.
package eventtest

import (
	"time"

	"github.com/memdiag/memdiag/event"
)

// T0 is the start of every test's clock.
var T0 = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// At is a time i seconds into a test.
func At(i int) time.Time { return T0.Add(time.Duration(i) * time.Second) }

// Anon is a bucket whose resident change is all anonymous memory.
func Anon(pid uint32, kind event.BucketKind, id uint64, bytes int64, comm string) event.Bucket {
	b := event.Bucket{Key: event.BucketKey{PID: pid, Kind: kind, ID: id}}
	b.RSS[event.RSSAnon] = bytes
	b.Comm = comm
	return b
}
