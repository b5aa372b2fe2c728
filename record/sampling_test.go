package record

import (
	"io"
	"reflect"
	"testing"
	"time"

	"github.com/memdiag/memdiag/event"
)

// TestRoundTripSampling checks the runtime-sampling events round-trip, in
// order and with their times, among other events: a reader that skipped
// them would lose the time deltas they carry.
func TestRoundTripSampling(t *testing.T) {
	h := func(sec int) event.Header {
		return event.Header{Time: t0.Add(time.Duration(sec) * time.Second), PID: 7, TID: 8}
	}
	evs := []event.Event{
		&event.Sampling{Header: h(1), Runtime: event.RuntimeV8, Active: true, Interval: 65536, Reason: "v8"},
		&event.HeapLive{Header: h(2), Runtime: event.RuntimeV8, HeapUsed: 1 << 20},
		&event.HeapSample{Header: h(3), Runtime: event.RuntimeV8, Ordinal: 1, Addr: 0xdead, Size: 40, Owner: event.BucketKey{PID: 7, Kind: event.BucketOp, ID: 9}},
		&event.HeapSample{Header: h(4), Runtime: event.RuntimeGo, Addr: 0xbeef, Size: 1 << 20, Owner: event.BucketKey{PID: 7, Kind: event.BucketIdle}},
		&event.GCCycle{Header: h(5), Runtime: event.RuntimeGo},
		&event.HeapFree{Header: h(6), Runtime: event.RuntimeGo, Addr: 0xbeef},
		&event.HeapLive{Header: h(7), Runtime: event.RuntimeV8, UpTo: 3, HeapUsed: 2 << 20,
			Samples: []event.LiveSample{{Ordinal: 1, Bytes: 65536}, {Ordinal: 3, Bytes: 70000}}},
		&event.Marker{Header: h(8), Kind: "dump", Label: "after"},
	}
	path := writeAll(t, testHeader(), evs, Trailer{EndedAt: t0.Add(time.Hour), Reason: "signal"})
	r, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := readAll(t, r)
	if err != io.EOF {
		t.Fatalf("reading: %v, want io.EOF", err)
	}
	if len(got) != len(evs) {
		t.Fatalf("read %d events, want %d", len(got), len(evs))
	}
	for i := range evs {
		if !reflect.DeepEqual(normalizedAll(evs[i : i+1])[0], got[i]) {
			t.Errorf("event %d = %+v, want %+v", i, got[i], evs[i])
		}
	}
}
