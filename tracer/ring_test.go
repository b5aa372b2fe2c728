package tracer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
)

// fakeRing is a ring over plain memory laid out as the reader maps it:
// the data once, so a record that wraps around its end is in two parts.
type fakeRing struct {
	*ring
	size uint64
	prod uint64 // the producer position
}

func newFakeRing(size uint64) *fakeRing {
	return &fakeRing{ring: &ring{cons: make([]byte, 8), prod: make([]byte, 8), data: make([]byte, size), mask: size - 1}, size: size}
}

// put writes a record of payload at the producer position with the given
// extra length bits (busy, discard) and moves the position past it.
func (f *fakeRing) put(payload []byte, bits uint32) {
	var rec []byte
	rec = binary.LittleEndian.AppendUint32(rec, uint32(len(payload))|bits)
	rec = binary.LittleEndian.AppendUint32(rec, 0)
	rec = append(rec, payload...)
	for len(rec)%8 != 0 {
		rec = append(rec, 0)
	}
	for i, b := range rec {
		at := (f.prod + uint64(i)) & f.mask
		f.data[at] = b
	}
	f.prod += uint64(len(rec))
	binary.LittleEndian.PutUint64(f.ring.prod, f.prod)
}

// setBits rewrites the length word of the record at position pos.
func (f *fakeRing) setBits(pos uint64, size int, bits uint32) {
	at := pos & f.mask
	binary.LittleEndian.PutUint32(f.data[at:], uint32(size)|bits)
}

func (f *fakeRing) cons() uint64 { return binary.LittleEndian.Uint64(f.ring.cons) }

func (f *fakeRing) readAll(t *testing.T, max int) (got []string, busy bool) {
	t.Helper()
	_, busy, err := f.read(max, func(b []byte) { got = append(got, string(b)) })
	if err != nil {
		t.Fatal(err)
	}
	return got, busy
}

// TestRingReadsInOrder: records come in order, whole when they wrap
// around the end of the data, a discarded one skipped, at most max at a
// time, and the consumer position moves past what was read.
func TestRingReadsInOrder(t *testing.T) {
	f := newFakeRing(64)
	var want, all []string
	for i := range 12 {
		p := fmt.Sprintf("record %d", i) // 8-9 bytes: 24 with the header and padding
		if i == 3 {
			f.put([]byte("dropped"), ringDiscard)
		} else {
			want = append(want, p)
			f.put([]byte(p), 0)
		}
		if i%2 == 1 { // two in, then read: the ring is 64 bytes
			got, _ := f.readAll(t, 100)
			all = append(all, got...)
			if f.cons() != f.prod {
				t.Fatalf("consumer at %d, producer at %d", f.cons(), f.prod)
			}
		}
	}
	if fmt.Sprint(all) != fmt.Sprint(want) {
		t.Fatalf("read %q, want %q", all, want)
	}
	g := newFakeRing(256)
	for i := range 5 {
		g.put([]byte{byte('a' + i)}, 0)
	}
	if got, _ := g.readAll(t, 3); fmt.Sprint(got) != "[a b c]" {
		t.Fatalf("read %q with max 3, want [a b c]", got)
	}
	if got, _ := g.readAll(t, 3); fmt.Sprint(got) != "[d e]" {
		t.Fatalf("read %q next, want [d e]", got)
	}
}

// TestRingStopsAtBusy: a record reserved but not submitted stops the
// read there, and is read once submitted.
func TestRingStopsAtBusy(t *testing.T) {
	f := newFakeRing(256)
	f.put([]byte("first"), 0)
	pos := f.prod
	f.put([]byte("second"), ringBusy)
	f.put([]byte("third"), 0)
	got, busy := f.readAll(t, 100)
	if fmt.Sprint(got) != "[first]" || !busy || f.cons() != pos {
		t.Fatalf("read %q, busy %v, consumer at %d; want [first], busy, at %d", got, busy, f.cons(), pos)
	}
	f.setBits(pos, len("second"), 0)
	got, busy = f.readAll(t, 100)
	if fmt.Sprint(got) != "[second third]" || busy || f.cons() != f.prod {
		t.Fatalf("read %q, busy %v; want [second third]", got, busy)
	}
}

// TestRingCorrupt: a length past the producer position drops what was
// written and says so.
func TestRingCorrupt(t *testing.T) {
	f := newFakeRing(256)
	f.put([]byte("ok"), 0)
	pos := f.prod
	f.put([]byte("short"), 0)
	f.setBits(pos, 200, 0)
	_, _, err := f.read(100, func([]byte) {})
	if !errors.Is(err, errRingCorrupt) || f.cons() != f.prod {
		t.Fatalf("err %v, consumer at %d; want errRingCorrupt, at %d", err, f.cons(), f.prod)
	}
}

// TestRingJoinsWrappedRecord: a record whose bytes run past the data's
// end (mapped once) reads whole, and so does one whose header is in the
// data's last bytes.
func TestRingJoinsWrappedRecord(t *testing.T) {
	f := newFakeRing(64)
	long := "0123456789abcdefghij" // 20 bytes: 32 with the header and padding
	for _, p := range []string{"first 24 bytes, padded.", "", long, "x", long} {
		f.put([]byte(p), 0)
		got, _ := f.readAll(t, 10)
		if len(got) != 1 || got[0] != p {
			t.Fatalf("read %q, want [%q] (producer at %d)", got, p, f.prod)
		}
	}
	// The third record's header is at 40..48, its bytes at 48..68: past
	// the end. Now one whose header is at 56..64 and bytes at 0..20.
	f = newFakeRing(64)
	f.put([]byte("48 bytes of a record and its header, in all!!"), 0) // 8 + 45, padded to 56
	f.readAll(t, 10)
	f.put([]byte(long), 0)
	if got, _ := f.readAll(t, 10); len(got) != 1 || got[0] != long {
		t.Fatalf("header at the data's last bytes: read %q, want [%q]", got, long)
	}
}
