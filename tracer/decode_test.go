package tracer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/cilium/ebpf/btf"

	"github.com/memdiag/memdiag/event"
)

// C layout sizes of bpf/memdiag.h, computed by hand (x86-64/bpf alignment:
// u64 on 8, u32 on 4), for the structs Go decodes: ring buffer records and
// the map keys and values Snapshot reads. A change of these C structs
// regenerates the Go mirrors, which then disagree with these numbers: update
// them only after checking the new layout on purpose.
const (
	cHdrSize       = 4 + 4 + 8 + 4 + 4          // kind, size, ktime_ns, pid, tid = 24
	cForkSize      = cHdrSize + 4 + 4 + 16      // hdr, child_pid, _pad, comm = 48
	cExecSize      = cHdrSize + 128 + 8         // hdr, filename, cgroup_id = 160
	cExitSize      = cHdrSize + 4 + 1 + 3 + 16  // hdr, exit_code, group_dead, _pad, comm = 48
	cBucketKeySize = 4 + 4 + 8                  // tgid, kind, id = 16
	cCountersSize  = 4*8 + 13*8 + 16            // rss[4], 13 u64/s64, comm = 152
	cMmStateSize   = 4*8 + 8 + 8 + 4*4 + 64*4*4 // last[4], total, peak, tgid, seen, gen, _pad, parts[64][4] = 1088
	cGroupTotal    = 8 + 8                      // total, peak = 16
)

// hdrBytes lays out an event_hdr.
func hdrBytes(kind, size uint32, ktime uint64, pid, tid uint32) []byte {
	b := make([]byte, 0, cHdrSize)
	b = binary.LittleEndian.AppendUint32(b, kind)
	b = binary.LittleEndian.AppendUint32(b, size)
	b = binary.LittleEndian.AppendUint64(b, ktime)
	b = binary.LittleEndian.AppendUint32(b, pid)
	b = binary.LittleEndian.AppendUint32(b, tid)
	return b
}

// cChars returns s NUL-padded (or truncated) to n bytes, as a C char[n].
func cChars(s string, n int) []byte {
	b := make([]byte, n)
	copy(b, s)
	return b
}

// forkBytes lays out a fork_event.
func forkBytes(ktime uint64, pid, tid, child uint32, comm string) []byte {
	b := hdrBytes(kindFork, cForkSize, ktime, pid, tid)
	b = binary.LittleEndian.AppendUint32(b, child)
	b = binary.LittleEndian.AppendUint32(b, 0) // _pad
	return append(b, cChars(comm, 16)...)
}

// execBytes lays out an exec_event.
func execBytes(ktime uint64, pid, tid uint32, filename string) []byte {
	b := hdrBytes(kindExec, cExecSize, ktime, pid, tid)
	b = append(b, cChars(filename, 128)...)
	return binary.LittleEndian.AppendUint64(b, 4242) // cgroup_id

}

// exitBytes lays out an exit_event.
func exitBytes(ktime uint64, pid, tid uint32, code int32, groupDead uint8, comm string) []byte {
	b := hdrBytes(kindExit, cExitSize, ktime, pid, tid)
	b = binary.LittleEndian.AppendUint32(b, uint32(code))
	b = append(b, groupDead, 0, 0, 0)
	return append(b, cChars(comm, 16)...)
}

// testClock maps monotonic 0 to 2024-01-02T03:04:05Z.
var (
	testEpoch = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	testClock = NewClock(0, testEpoch)
)

func TestDecode(t *testing.T) {
	const kt = 1_500_000_000 // 1.5s after the clock's anchor
	at := testEpoch.Add(1500 * time.Millisecond)
	hdr := event.Header{Time: at, PID: 100, TID: 101}

	// A record the kernel sized larger than its layout (say, a future
	// field appended) still decodes: only the known prefix is read.
	longFork := append(forkBytes(kt, 100, 101, 102, "worker"), 0xAA, 0xBB, 0xCC, 0xDD)
	binary.LittleEndian.PutUint32(longFork[4:], uint32(len(longFork)))

	// Trailing bytes after the record's size are not part of it.
	trailingExec := append(execBytes(kt, 100, 101, "/bin/true"), 0xFF, 0xFF)

	tests := []struct {
		name string
		raw  []byte
		want event.Event
	}{
		{
			name: "fork",
			raw:  forkBytes(kt, 100, 101, 102, "worker"),
			want: &event.Fork{Header: hdr, Child: 102, Comm: "worker"},
		},
		{
			name: "fork with full 16-byte comm and no NUL",
			raw:  forkBytes(kt, 100, 101, 102, "0123456789abcdef"),
			want: &event.Fork{Header: hdr, Child: 102, Comm: "0123456789abcdef"},
		},
		{
			name: "fork with empty comm",
			raw:  forkBytes(kt, 100, 101, 102, ""),
			want: &event.Fork{Header: hdr, Child: 102, Comm: ""},
		},
		{
			name: "fork sized larger than its layout",
			raw:  longFork,
			want: &event.Fork{Header: hdr, Child: 102, Comm: "worker"},
		},
		{
			name: "exec",
			raw:  execBytes(kt, 100, 101, "/usr/bin/memwork"),
			want: &event.Exec{Header: hdr, Filename: "/usr/bin/memwork"},
		},
		{
			name: "exec with trailing bytes",
			raw:  trailingExec,
			want: &event.Exec{Header: hdr, Filename: "/bin/true"},
		},
		{
			name: "exit of a thread",
			raw:  exitBytes(kt, 100, 101, 0, 0, "worker"),
			want: &event.Exit{Header: hdr, ExitCode: 0, GroupDead: false, Comm: "worker"},
		},
		{
			name: "exit of the group with a status",
			raw:  exitBytes(kt, 100, 101, 3<<8, 1, "main"),
			want: &event.Exit{Header: hdr, ExitCode: 3 << 8, GroupDead: true, Comm: "main"},
		},
		{
			name: "exit killed by a signal, group_dead any nonzero",
			raw:  exitBytes(kt, 100, 101, 9, 0xFF, "main"),
			want: &event.Exit{Header: hdr, ExitCode: 9, GroupDead: true, Comm: "main"},
		},
		{
			name: "exit code is signed",
			raw:  exitBytes(kt, 100, 101, -1, 1, "main"),
			want: &event.Exit{Header: hdr, ExitCode: -1, GroupDead: true, Comm: "main"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode(tt.raw, testClock)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !got.When().Equal(at) {
				t.Errorf("When() = %v, want %v", got.When(), at)
			}
			// Times are compared above: Wall returns local time.
			setTime(got, at)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Decode =\n%#v\nwant\n%#v", got, tt.want)
			}
		})
	}
}

// setTime overwrites a decoded event's time.
func setTime(ev event.Event, t time.Time) {
	switch e := ev.(type) {
	case *event.Fork:
		e.Time = t
	case *event.Exec:
		e.Time = t
	case *event.Exit:
		e.Time = t
	}
}

func TestDecodeErrors(t *testing.T) {
	fork := forkBytes(1, 1, 1, 2, "x")
	withSize := func(b []byte, size uint32) []byte {
		b = append([]byte(nil), b...)
		binary.LittleEndian.PutUint32(b[4:], size)
		return b
	}
	tests := []struct {
		name string
		raw  []byte
		want error
	}{
		{"nil", nil, ErrShort},
		{"empty", []byte{}, ErrShort},
		{"one byte short of a header", fork[:cHdrSize-1], ErrShort},
		{"size field larger than the buffer", withSize(fork, cForkSize+1), ErrBadSize},
		{"size field huge", withSize(fork, 0xFFFFFFFF), ErrBadSize},
		{"size field larger than a truncated buffer", fork[:cForkSize-1], ErrBadSize},
		{"size field smaller than a header", withSize(fork, cHdrSize-1), ErrBadSize},
		{"size field zero", withSize(fork, 0), ErrBadSize},
		{"header only, fork kind", hdrBytes(kindFork, cHdrSize, 1, 1, 1), ErrShort},
		{"header only, exec kind", hdrBytes(kindExec, cHdrSize, 1, 1, 1), ErrShort},
		{"header only, exit kind", hdrBytes(kindExit, cHdrSize, 1, 1, 1), ErrShort},
		{"size field one short of the fork layout", withSize(fork, cForkSize-1), ErrShort},
		{"exec size says fork size", withSize(execBytes(1, 1, 1, "/x"), cForkSize), ErrShort},
		{"kind zero", hdrBytes(0, cHdrSize, 1, 1, 1), ErrUnknownKind},
		{"kind 0xffff", append(hdrBytes(0xFFFF, cForkSize, 1, 1, 1), make([]byte, cForkSize-cHdrSize)...), ErrUnknownKind},
		{"kind max", hdrBytes(0xFFFFFFFF, cHdrSize, 1, 1, 1), ErrUnknownKind},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := Decode(tt.raw, testClock)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Decode error = %v, want %v", err, tt.want)
			}
			if ev != nil {
				t.Errorf("Decode returned %#v with an error", ev)
			}
			for _, other := range []error{ErrShort, ErrBadSize, ErrUnknownKind} {
				if other != tt.want && errors.Is(err, other) {
					t.Errorf("error %v also matches %v", err, other)
				}
			}
		})
	}
}

func TestClock(t *testing.T) {
	wall := time.Date(2024, 6, 1, 12, 0, 0, 0, time.UTC)
	mono := 90 * time.Second
	c := NewClock(mono, wall)
	tests := []struct {
		ktime uint64
		want  time.Time
	}{
		{uint64(mono), wall},
		{uint64(mono) + 1, wall.Add(time.Nanosecond)},
		{uint64(mono + 1500*time.Millisecond), wall.Add(1500 * time.Millisecond)},
		{uint64(mono - time.Minute), wall.Add(-time.Minute)},
		{0, wall.Add(-mono)},
	}
	for _, tt := range tests {
		if got := c.Wall(tt.ktime); !got.Equal(tt.want) {
			t.Errorf("Wall(%d) = %v, want %v", tt.ktime, got, tt.want)
		}
	}
	// Decode stamps records with the clock's wall time.
	ev, err := Decode(forkBytes(uint64(mono+time.Second), 1, 1, 2, "x"), c)
	if err != nil {
		t.Fatal(err)
	}
	if want := wall.Add(time.Second); !ev.When().Equal(want) {
		t.Errorf("decoded When() = %v, want %v", ev.When(), want)
	}
}

func TestCString(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty array", nil, ""},
		{"all NUL", make([]byte, 16), ""},
		{"NUL terminated", []byte("bash\x00\x00\x00"), "bash"},
		{"stops at the first NUL", []byte("ab\x00cd\x00"), "ab"},
		{"leading NUL", []byte("\x00abc"), ""},
		{"no NUL uses the whole array", []byte("0123456789abcdef"), "0123456789abcdef"},
		{"valid UTF-8 kept", []byte("caf\xc3\xa9\x00"), "café"},
		{"invalid byte replaced", []byte("a\xffb\x00"), "a?b"},
		{"run of invalid bytes replaced once", []byte("a\xff\xfe\xfdb"), "a?b"},
		{"truncated multibyte sequence replaced", []byte("ab\xc3\x00"), "ab?"},
		{"high bytes after NUL ignored", []byte("ok\x00\xff\xff"), "ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := cString(tt.in); got != tt.want {
				t.Errorf("cString(%q) = %q, want %q", tt.in, got, tt.want)
			}
			// The generated mirrors hold C chars as int8: same result.
			signed := make([]int8, len(tt.in))
			for i, c := range tt.in {
				signed[i] = int8(c)
			}
			if got := cString(signed); got != tt.want {
				t.Errorf("cString(int8 %q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestCounters(t *testing.T) {
	in := memdiagCounters{
		Rss:          [4]int64{1 << 20, -4096, 8192, 12288},
		Faults:       7,
		Mapped:       1 << 30,
		Unmapped:     4096,
		MadeWritable: 65536,
		AdvisedFree:  8192,
		FirstNs:      1,
		LastNs:       2,
	}
	for i, c := range []byte("worker-1") {
		in.Comm[i] = int8(c)
	}
	want := event.Counters{
		RSS:          [event.RSSMembers]int64{1 << 20, -4096, 8192, 12288},
		Faults:       7,
		Mapped:       1 << 30,
		Unmapped:     4096,
		MadeWritable: 65536,
		AdvisedFree:  8192,
		Created:      1,
		Comm:         "worker-1",
	}
	if got := counters(&in); got != want {
		t.Errorf("counters = %+v, want %+v", got, want)
	}
}

// TestLayoutSizes fails when the Go mirrors drift from the C layouts: their
// encoded size (what Decode reads) and their memory size (what map lookups
// copy) must both equal the size computed by hand from bpf/memdiag.h and the
// size in the BTF of the committed object file.
func TestLayoutSizes(t *testing.T) {
	spec, err := loadMemdiag() // parses the embedded ELF; needs no privileges
	if err != nil {
		t.Fatalf("loading the embedded object: %v", err)
	}
	tests := []struct {
		cName  string
		mirror any
		want   int
	}{
		{"event_hdr", memdiagEventHdr{}, cHdrSize},
		{"fork_event", memdiagForkEvent{}, cForkSize},
		{"exec_event", memdiagExecEvent{}, cExecSize},
		{"exit_event", memdiagExitEvent{}, cExitSize},
		{"bucket_key", memdiagBucketKey{}, cBucketKeySize},
		{"counters", memdiagCounters{}, cCountersSize},
		{"mm_state", memdiagMmState{}, cMmStateSize},
		{"group_total", memdiagGroupTotal{}, cGroupTotal},
		// Written, not decoded, by Go: checked against the BTF only.
		{"target", memdiagTarget{}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.cName, func(t *testing.T) {
			var st *btf.Struct
			if err := spec.Types.TypeByName(tt.cName, &st); err != nil {
				t.Fatalf("BTF of struct %s: %v", tt.cName, err)
			}
			want := int(st.Size)
			if tt.want != 0 && want != tt.want {
				t.Errorf("BTF size of struct %s = %d, want %d", tt.cName, want, tt.want)
			}
			if got := binary.Size(tt.mirror); got != want {
				t.Errorf("binary.Size(%T) = %d, want %d", tt.mirror, got, want)
			}
			if got := int(reflect.TypeOf(tt.mirror).Size()); got != want {
				t.Errorf("unsafe size of %T = %d, want %d", tt.mirror, got, want)
			}
		})
	}
	// Decode's own idea of the sizes.
	for name, got := range map[string]int{"hdr": hdrSize, "fork": forkSize, "exec": execSize, "exit": exitSize} {
		want := map[string]int{"hdr": cHdrSize, "fork": cForkSize, "exec": cExecSize, "exit": cExitSize}[name]
		if got != want {
			t.Errorf("%sSize = %d, want %d", name, got, want)
		}
	}
}

// TestRecordLayoutsCopyable: Decode copies a record's bytes into its Go
// mirror (decodeFixed), so every record mirror must have exactly the size
// of the C struct in the committed object's BTF, with no padding Go adds on
// its own (binary.Size counts fields only) and no pointers.
func TestRecordLayoutsCopyable(t *testing.T) {
	spec, err := loadMemdiag()
	if err != nil {
		t.Fatalf("loading the embedded object: %v", err)
	}
	for cName, mirror := range map[string]any{
		"event_hdr":         memdiagEventHdr{},
		"fork_event":        memdiagForkEvent{},
		"exec_event":        memdiagExecEvent{},
		"exit_event":        memdiagExitEvent{},
		"op_begin_event":    memdiagOpBeginEvent{},
		"op_end_event":      memdiagOpEndEvent{},
		"op_data_event":     memdiagOpDataEvent{},
		"oom_event":         memdiagOomEvent{},
		"heap_sample_event": memdiagHeapSampleEvent{},
		"heap_note_event":   memdiagHeapNoteEvent{},
	} {
		var st *btf.Struct
		if err := spec.Types.TypeByName(cName, &st); err != nil {
			t.Errorf("BTF of struct %s: %v", cName, err)
			continue
		}
		typ := reflect.TypeOf(mirror)
		if got := int(typ.Size()); got != int(st.Size) || got != binary.Size(mirror) {
			t.Errorf("%T: %d bytes in memory, %d encoded, struct %s %d bytes", mirror, got, binary.Size(mirror), cName, st.Size)
		}
		if hasPointers(typ) {
			t.Errorf("%T holds pointers: its bytes cannot come from the ring", mirror)
		}
	}
}

// hasPointers reports whether values of typ hold any pointer.
func hasPointers(typ reflect.Type) bool {
	switch typ.Kind() {
	case reflect.Struct:
		for i := range typ.NumField() {
			if hasPointers(typ.Field(i).Type) {
				return true
			}
		}
		return false
	case reflect.Array:
		return hasPointers(typ.Elem())
	case reflect.Bool, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return false
	}
	return true
}

// TestLayoutOffsets checks the offsets Decode relies on: it copies a
// record's bytes into its mirror, so every field of a mirror must sit where
// the C compiler put it (explicit padding included).
func TestLayoutOffsets(t *testing.T) {
	tests := []struct {
		name      string
		got, want uintptr
	}{
		{"fork_event.child_pid", unsafe.Offsetof(memdiagForkEvent{}.ChildPid), cHdrSize},
		{"fork_event.comm", unsafe.Offsetof(memdiagForkEvent{}.Comm), cHdrSize + 8},
		{"exec_event.filename", unsafe.Offsetof(memdiagExecEvent{}.Filename), cHdrSize},
		{"exec_event.cgroup_id", unsafe.Offsetof(memdiagExecEvent{}.CgroupId), cHdrSize + 128},
		{"exit_event.exit_code", unsafe.Offsetof(memdiagExitEvent{}.ExitCode), cHdrSize},
		{"exit_event.group_dead", unsafe.Offsetof(memdiagExitEvent{}.GroupDead), cHdrSize + 4},
		{"exit_event.comm", unsafe.Offsetof(memdiagExitEvent{}.Comm), cHdrSize + 8},
		{"counters.faults", unsafe.Offsetof(memdiagCounters{}.Faults), 32},
		{"counters.comm", unsafe.Offsetof(memdiagCounters{}.Comm), 136},
		{"event_hdr.ktime_ns", unsafe.Offsetof(memdiagEventHdr{}.KtimeNs), 8},
		{"event_hdr.tid", unsafe.Offsetof(memdiagEventHdr{}.Tid), 20},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("offset of %s = %d, want %d", tt.name, tt.got, tt.want)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(forkBytes(1, 100, 101, 102, "worker"))
	f.Add(execBytes(2, 100, 100, "/usr/bin/memwork"))
	f.Add(exitBytes(3, 100, 101, 0, 0, "worker"))
	f.Add(exitBytes(4, 100, 100, 256, 1, "main"))
	f.Add(hdrBytes(kindFork, cHdrSize, 0, 0, 0))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, raw []byte) {
		in := append([]byte(nil), raw...)
		ev, err := Decode(raw, testClock)
		if !bytes.Equal(in, raw) {
			t.Fatalf("Decode modified its input")
		}
		if err != nil {
			if ev != nil {
				t.Fatalf("Decode returned %#v with error %v", ev, err)
			}
			if !errors.Is(err, ErrShort) && !errors.Is(err, ErrBadSize) && !errors.Is(err, ErrUnknownKind) {
				t.Fatalf("Decode error %v is none of the sentinels", err)
			}
			return
		}
		if ev == nil {
			t.Fatal("Decode returned neither an event nor an error")
		}
		// A successful decode read a whole record that fits the input
		// and holds its kind's layout.
		kind := binary.LittleEndian.Uint32(raw[0:])
		size := int(binary.LittleEndian.Uint32(raw[4:]))
		if size > len(raw) || size < cHdrSize {
			t.Fatalf("decoded a record of %d bytes from %d", size, len(raw))
		}
		if layout, ok := map[uint32]int{kindFork: cForkSize, kindExec: cExecSize, kindExit: cExitSize}[kind]; ok && size < layout {
			t.Fatalf("decoded a %d-byte record of kind %d, layout is %d", size, kind, layout)
		}
		var s string
		switch e := ev.(type) {
		case *event.Fork:
			s = e.Comm
		case *event.Exec:
			s = e.Filename
		case *event.Exit:
			s = e.Comm
		}
		if strings.IndexByte(s, 0) >= 0 || !utf8.ValidString(s) {
			t.Fatalf("decoded string %q holds a NUL or invalid UTF-8", s)
		}
	})
}
