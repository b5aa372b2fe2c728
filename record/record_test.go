package record

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"maps"
	"math"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/memdiag/memdiag/event"
)

var t0 = time.Date(2026, 11, 27, 23, 43, 27, 273_000_000, time.UTC)

func testHeader() Header {
	return Header{
		Format:    Version,
		Memdiag:   "memdiag test",
		CreatedAt: t0,
		Target:    Target{PID: 4242, Comm: "node", Exe: "/usr/bin/node", Mode: "attach"},
		Baseline:  Baseline{RSS: 90 << 20, Anon: 60 << 20, File: 29 << 20, Shmem: 1 << 20, HWM: 120 << 20},
		Options:   json.RawMessage(`{"config":"categories: []\n","growth_rss":52428800,"keep_ops":100}`),
	}
}

func sampleCounters(seed int64, comm string) event.Counters {
	return event.Counters{
		RSS:            [event.RSSMembers]int64{seed << 12, -seed << 13, seed, 3 * seed << 12},
		Faults:         uint64(seed) * 7,
		Mapped:         uint64(seed) << 20,
		Unmapped:       uint64(seed) << 19,
		MadeWritable:   uint64(seed) << 16,
		AdvisedFree:    uint64(seed) << 15,
		External:       -seed << 14,
		Retained:       seed << 17,
		RetainedNative: seed << 11,
		RetainedHeap:   seed << 9,
		ABAlloc:        uint64(seed) << 21,
		ABFreed:        uint64(seed) << 10,
		Created:        uint64(seed)<<20 + 5,
		Comm:           comm,
	}
}

// everyEvent returns one event of each type with every field set, plus
// variants for the encodings' corners.
func everyEvent() []event.Event {
	h := func(ms int, tid uint32) event.Header {
		return event.Header{Time: t0.Add(time.Duration(ms) * time.Millisecond), PID: 4242, TID: tid}
	}
	snap := &event.Snapshot{
		Time: t0.Add(time.Second),
		Buckets: []event.Bucket{
			{Key: event.BucketKey{PID: 4242, Kind: event.BucketThread, ID: 4242}, Counters: sampleCounters(11, "node")},
			{Key: event.BucketKey{PID: 4242, Kind: event.BucketOp, ID: 77}, Counters: sampleCounters(12, "op")},
		},
		Freed:     []event.Bucket{{Key: event.BucketKey{PID: 4242, Kind: event.BucketFreed, ID: 76}, Counters: sampleCounters(-5, "freed")}},
		Processes: []event.ProcessMemory{{PID: 4242, Current: 90 << 20, Peak: 100 << 20, ArrayBuffers: 5 << 20}, {PID: 4300, Current: 1 << 20, Peak: 2 << 20, ArrayBuffers: 1}},
		Total:     91 << 20,
		Peak:      102 << 20,
		Stats: event.Stats{LostEvents: 1, DecodeErrors: 2, BucketOverflow: 3, MMOverflow: 4, TargetOverflow: 5,
			PendingOverflow: 6, SocketOverflow: 7, ThreadOverflow: 8, RegionOverflow: 9, OutstandingOverflow: 10, UnmapSplit: 11, FramesLost: 12, Records: 13},
	}
	// The same buckets a second later, one of them changed: both bucket
	// modes.
	snap2 := *snap
	snap2.Time = snap.Time.Add(time.Second)
	snap2.Buckets = []event.Bucket{snap.Buckets[0], snap.Buckets[1]}
	snap2.Buckets[1].Counters.Faults++
	snap2.Buckets = append(snap2.Buckets, event.Bucket{Key: event.BucketKey{PID: 4300, Kind: event.BucketKernel}, Counters: sampleCounters(1, "")})
	return []event.Event{
		&event.Fork{Header: h(1, 4242), Child: 4243, Comm: "worker"},
		&event.Exec{Header: h(2, 4300), Filename: "/bin/sh"},
		&event.Exit{Header: h(3, 4300), ExitCode: -9, GroupDead: true, Comm: "sh"},
		&event.OpBegin{
			Header: h(4, 4243), OpID: 1 << 40, Kind: event.OpOutbound, FD: 17,
			Dest: netip.MustParseAddrPort("10.1.2.3:5432"),
			HTTP: true, Request: event.Request{Method: "POST", Path: "/api/v1/orders", Query: "id=*&token=*", Truncated: true,
				Proto: "h2", GRPC: true},
		},
		&event.OpEnd{Header: h(5, 4243), OpID: 1 << 40, FD: 17, Reason: event.EndClose, HasFinal: true, Final: sampleCounters(3, "worker")},
		&event.TLSSeen{Header: h(6, 4242)},
		&event.OOM{Header: h(7, 4242), AnonRSS: 3 << 30, FileRSS: 12 << 20, ShmemRSS: 4 << 10},
		&event.Marker{Header: h(8, 4242), Kind: "threshold", Label: "RSS crossed 2GB"},
		&event.HeapSample{Header: h(9, 4243), Runtime: event.RuntimeGo, Ordinal: 17, Addr: 0xc000123400, Size: 4096,
			Owner: event.BucketKey{PID: 4242, Kind: event.BucketOp, ID: 1 << 40}},
		&event.HeapFree{Header: h(10, 4243), Runtime: event.RuntimeGo, Addr: 0xc000123400},
		&event.GCCycle{Header: h(11, 4242), Runtime: event.RuntimeGo},
		&event.HeapLive{Header: h(12, 4242), Runtime: event.RuntimeV8, Samples: []event.LiveSample{{Ordinal: 3, Bytes: 65536}, {Ordinal: 9, Bytes: 131072}},
			UpTo: 12, HeapUsed: 48 << 20},
		&event.Sampling{Header: h(13, 4242), Runtime: event.RuntimeV8, Active: true, Interval: 65536, Reason: "V8's sampling heap profiler"},
		snap,
		// Corners.
		&snap2,
		&event.OpBegin{Header: h(7, 4243), OpID: 2, Kind: event.OpOutbound, FD: -1, Dest: netip.MustParseAddrPort("[fe80::1%eth0]:443")},
		&event.OpBegin{Header: h(8, 4243), OpID: 3, Kind: event.OpOutbound, Dest: netip.MustParseAddrPort("[::ffff:10.0.0.1]:80")},
		&event.OpBegin{Header: h(9, 4243), OpID: 4, Kind: event.OpOutbound, Dest: netip.MustParseAddrPort("[2001:db8::1]:8080")},
		&event.OpBegin{Header: h(10, 4242), OpID: 5, Kind: event.OpHTTPServer, HTTP: true, Request: event.Request{Method: "GET", Path: "/"}},
		&event.OpEnd{Header: h(11, 4242), OpID: 5, Reason: event.EndNext},
		&event.OpEnd{Header: event.Header{PID: 1}, OpID: math.MaxUint64, FD: math.MinInt32, Reason: math.MaxUint32},                  // no time
		&event.Fork{Header: event.Header{Time: t0.Add(-time.Hour), PID: math.MaxUint32, TID: math.MaxUint32}, Child: math.MaxUint32}, // back in time
		&event.Exit{Header: h(12, 4242), ExitCode: math.MaxInt32},
		&event.Snapshot{Time: t0.Add(3 * time.Second)}, // empty: the next refers to nothing
		&event.Snapshot{Time: t0.Add(4 * time.Second), Buckets: snap.Buckets[:1], Stats: event.Stats{LostEvents: math.MaxUint64}},
	}
}

// normalized returns a deep copy of ev with times as the reader returns
// them (UTC, no monotonic reading) and empty slices nil.
func normalized(ev event.Event) event.Event {
	v := reflect.ValueOf(ev)
	cp := reflect.New(v.Type().Elem())
	cp.Elem().Set(v.Elem())
	normalize(cp.Elem())
	return cp.Interface().(event.Event)
}

var (
	timeType     = reflect.TypeFor[time.Time]()
	addrPortType = reflect.TypeFor[netip.AddrPort]()
)

func normalize(v reflect.Value) {
	switch v.Kind() {
	case reflect.Struct:
		switch v.Type() {
		case timeType:
			if t := v.Interface().(time.Time); !t.IsZero() {
				v.Set(reflect.ValueOf(time.Unix(0, t.UnixNano()).UTC()))
			}
			return
		case addrPortType:
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				normalize(v.Field(i))
			}
		}
	case reflect.Slice:
		if v.Len() == 0 {
			v.Set(reflect.Zero(v.Type()))
			return
		}
		cp := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		reflect.Copy(cp, v)
		v.Set(cp)
		for i := range v.Len() {
			normalize(v.Index(i))
		}
	case reflect.Array:
		for i := range v.Len() {
			normalize(v.Index(i))
		}
	}
}

// unset lists the fields of v left at their zero value.
func unset(v reflect.Value, path string) []string {
	switch v.Kind() {
	case reflect.Pointer:
		return unset(v.Elem(), path)
	case reflect.Struct:
		switch v.Type() {
		case timeType:
			if v.Interface().(time.Time).IsZero() {
				return []string{path}
			}
			return nil
		case addrPortType:
			if !v.Interface().(netip.AddrPort).IsValid() {
				return []string{path}
			}
			return nil
		}
		var out []string
		for i := range v.NumField() {
			out = append(out, unset(v.Field(i), path+"."+v.Type().Field(i).Name)...)
		}
		return out
	case reflect.Slice, reflect.Array:
		if v.Len() == 0 {
			return []string{path}
		}
		var out []string
		for i := range v.Len() {
			out = append(out, unset(v.Index(i), fmt.Sprintf("%s[%d]", path, i))...)
		}
		return out
	}
	if v.IsZero() {
		return []string{path}
	}
	return nil
}

// TestEveryFieldSet guards the round trip: when a field is added to an
// event type, this fails until everyEvent sets it — and the round trip
// then fails until the codec carries it.
func TestEveryFieldSet(t *testing.T) {
	types := eventTypes(t)
	seen := map[string]bool{}
	for _, ev := range everyEvent()[:len(types)] {
		name := reflect.TypeOf(ev).Elem().Name()
		seen[name] = true
		for _, f := range unset(reflect.ValueOf(ev), name) {
			t.Errorf("%s is not set: set it in everyEvent and make the codec carry it", f)
		}
	}
	for _, name := range types {
		if !seen[name] {
			t.Errorf("everyEvent's first %d events lack an event.%s with every field set", len(types), name)
		}
	}
}

// eventTypes lists the event types package event declares: the structs
// with a When method or an embedded Header, read from its source so that a
// new type fails TestEveryFieldSet until everyEvent has it.
func eventTypes(t *testing.T) []string {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob("../event/*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("finding package event's source: %v", err)
	}
	found := map[string]bool{}
	for _, path := range files {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if d.Name.Name == "When" && d.Recv != nil {
					if star, ok := d.Recv.List[0].Type.(*ast.StarExpr); ok {
						found[star.X.(*ast.Ident).Name] = true
					}
				}
			case *ast.GenDecl:
				for _, spec := range d.Specs {
					ts, ok := spec.(*ast.TypeSpec)
					if !ok {
						continue
					}
					st, ok := ts.Type.(*ast.StructType)
					if !ok {
						continue
					}
					for _, field := range st.Fields.List {
						if id, ok := field.Type.(*ast.Ident); ok && len(field.Names) == 0 && id.Name == "Header" {
							found[ts.Name.Name] = true
						}
					}
				}
			}
		}
	}
	var out []string
	for name := range found {
		out = append(out, name)
	}
	slices.Sort(out)
	if len(out) < 9 {
		t.Fatalf("found only event types %v in package event's source", out)
	}
	return out
}

// writeAll records evs at a new path and returns it.
func writeAll(t testing.TB, h Header, evs []event.Event, tr Trailer) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "rec", "trace.mrec")
	w, err := Create(path, h)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	for i, ev := range evs {
		if err := w.Write(ev); err != nil {
			t.Fatalf("Write(event %d, %T): %v", i, ev, err)
		}
		if _, ok := ev.(*event.Snapshot); ok {
			if err := w.Flush(); err != nil {
				t.Fatalf("Flush: %v", err)
			}
		}
	}
	if err := w.Close(tr); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return path
}

// readAll reads a recording to its end: the events and the final error
// (io.EOF when clean).
func readAll(t testing.TB, r *Reader) ([]event.Event, error) {
	t.Helper()
	var out []event.Event
	for {
		ev, err := r.Next()
		if err != nil {
			if again, err2 := r.Next(); again != nil || err2 != err {
				t.Errorf("Next after %v returned (%v, %v), want the same error", err, again, err2)
			}
			return out, err
		}
		out = append(out, ev)
	}
}

// normalizedAll is normalized of each event: what a reader returns.
func normalizedAll(evs []event.Event) []event.Event {
	out := make([]event.Event, len(evs))
	for i, ev := range evs {
		out[i] = normalized(ev)
	}
	return out
}

// checkPrefix fails unless got are the first len(got) of want, which is
// normalized.
func checkPrefix(t *testing.T, what string, got, want []event.Event) {
	t.Helper()
	if len(got) > len(want) {
		t.Fatalf("%s: read %d events, only %d were written", what, len(got), len(want))
	}
	for i := range got {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Fatalf("%s: event %d differs:\n got  %#v\n want %#v", what, i, got[i], want[i])
		}
	}
}

func TestRoundTripEveryEvent(t *testing.T) {
	evs := everyEvent()
	h := testHeader()
	tr := Trailer{EndedAt: t0.Add(time.Minute), Reason: "the target exited"}
	path := writeAll(t, h, evs, tr)
	r, err := Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer r.Close()
	if got := r.Header(); !reflect.DeepEqual(got, h) {
		t.Errorf("Header() = %+v, want %+v", got, h)
	}
	if _, ok := r.Trailer(); ok {
		t.Error("Trailer() is there before the end was read")
	}
	got, err := readAll(t, r)
	if err != io.EOF {
		t.Fatalf("reading: %v, want io.EOF", err)
	}
	if len(got) != len(evs) {
		t.Fatalf("read %d events, want %d", len(got), len(evs))
	}
	checkPrefix(t, "round trip", got, normalizedAll(evs))
	if gt, ok := r.Trailer(); !ok || !reflect.DeepEqual(gt, tr) {
		t.Errorf("Trailer() = %+v, %v; want %+v, true", gt, ok, tr)
	}
}

// load shapes a simulated service.
type load struct {
	threads int           // threads of the process, each a bucket
	gap     time.Duration // mean time between events
}

// busy is a Node.js-like service at about 500 requests/s; idle a
// JVM-like one with many threads, little traffic.
var (
	busy = load{threads: 16, gap: time.Millisecond}
	idle = load{threads: 300, gap: 50 * time.Millisecond}
)

// service simulates a traced HTTP service for n events: threads and a
// child process come and go, requests and outbound calls begin and end,
// and a snapshot is taken every second.
func service(n int) []event.Event { return simulate(n, busy) }

func simulate(n int, l load) []event.Event {
	rng := rand.New(rand.NewPCG(1, 2))
	const pid = 4242
	paths := []string{"/api/v1/orders", "/api/v1/users/:id", "/healthz", "/metrics", "/api/v1/search", "/static/app.js"}
	methods := []string{"GET", "GET", "GET", "POST", "PUT", "DELETE"}
	threads := map[uint32]string{pid: "node"}
	for i := range uint32(l.threads - 1) {
		threads[pid+1+i] = []string{"libuv-worker", "V8 DefaultWorke", "node"}[i%3]
	}
	live := map[event.BucketKey]event.Counters{}
	for tid, comm := range threads {
		live[event.BucketKey{PID: pid, Kind: event.BucketThread, ID: uint64(tid)}] = event.Counters{Comm: comm}
	}
	live[event.BucketKey{PID: pid, Kind: event.BucketBaseline}] = event.Counters{RSS: [4]int64{30 << 20, 60 << 20, 0, 1 << 20}}
	live[event.BucketKey{PID: pid, Kind: event.BucketKernel}] = event.Counters{}
	live[event.BucketKey{PID: pid, Kind: event.BucketIdle}] = event.Counters{}

	now := t0
	next := now.Add(time.Second)
	var evs []event.Event
	var opID uint64 = 1 << 32
	var open []uint64
	var freed []event.Bucket
	var stats event.Stats
	var total, peak int64 = 92 << 20, 92 << 20
	hdr := func(tid uint32) event.Header { return event.Header{Time: now, PID: pid, TID: tid} }
	grow := func(c *event.Counters) {
		d := rng.Int64N(64<<10) - 16<<10
		c.RSS[event.RSSAnon] += d &^ 4095
		c.Faults += uint64(rng.IntN(40))
		c.Mapped += uint64(rng.IntN(4)) << 16
	}
	for len(evs) < n {
		now = now.Add(time.Duration(rng.Int64N(int64(2 * l.gap))))
		if now.After(next) {
			s := &event.Snapshot{Time: next, Total: total, Peak: peak, Stats: stats}
			for _, k := range sortedKeys(live) {
				c := live[k]
				if k.Kind == event.BucketOp || rng.IntN(3) == 0 {
					grow(&c)
					live[k] = c
				}
				s.Buckets = append(s.Buckets, event.Bucket{Key: k, Counters: c})
			}
			s.Freed, freed = freed, nil
			s.Processes = []event.ProcessMemory{{PID: pid, Current: total, Peak: peak}}
			evs = append(evs, s)
			next = next.Add(time.Second)
			total += rng.Int64N(1 << 20)
			peak = max(peak, total)
			stats.LostEvents += uint64(rng.IntN(2))
			continue
		}
		tid := uint32(pid + rng.IntN(4))
		switch r := rng.IntN(1000); {
		case r < 2:
			evs = append(evs, &event.Fork{Header: hdr(pid), Child: 5000 + uint32(len(evs)), Comm: "node"})
		case r < 3:
			evs = append(evs, &event.Exec{Header: event.Header{Time: now, PID: 5000, TID: 5000}, Filename: "/usr/bin/convert"})
		case r < 4:
			evs = append(evs, &event.Exit{Header: event.Header{Time: now, PID: 5000, TID: 5000}, GroupDead: true, Comm: "convert"})
		case r < 5:
			evs = append(evs, &event.TLSSeen{Header: hdr(pid)})
		case r < 500 || len(open) == 0:
			opID++
			fd := int32(20 + opID%100)
			b := &event.OpBegin{Header: hdr(tid), OpID: opID, Kind: event.OpHTTPServer, FD: fd, HTTP: true,
				Request: event.Request{Method: methods[rng.IntN(len(methods))], Path: paths[rng.IntN(len(paths))]}}
			if rng.IntN(4) == 0 {
				b.Kind, b.HTTP, b.Method, b.Path = event.OpOutbound, false, "", ""
				b.Dest = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(1 + rng.IntN(4))}), 5432)
			} else if rng.IntN(3) == 0 {
				b.Query = "q=*&page=*"
			}
			open = append(open, opID)
			live[event.BucketKey{PID: pid, Kind: event.BucketOp, ID: opID}] = event.Counters{}
			evs = append(evs, b)
		default:
			i := rng.IntN(len(open))
			id := open[i]
			open = append(open[:i], open[i+1:]...)
			k := event.BucketKey{PID: pid, Kind: event.BucketOp, ID: id}
			c := live[k]
			grow(&c)
			delete(live, k)
			evs = append(evs, &event.OpEnd{Header: hdr(tid), OpID: id, FD: int32(20 + id%100), Reason: event.EndNext, HasFinal: true, Final: c})
			if rng.IntN(5) == 0 {
				freed = append(freed, event.Bucket{Key: event.BucketKey{PID: pid, Kind: event.BucketFreed, ID: id},
					Counters: event.Counters{RSS: [4]int64{0, -c.RSS[event.RSSAnon] / 2, 0, 0}, Unmapped: c.Mapped}})
			}
		}
	}
	return evs
}

func sortedKeys(m map[event.BucketKey]event.Counters) []event.BucketKey {
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(x, y event.BucketKey) int {
		return cmp.Or(cmp.Compare(x.PID, y.PID), cmp.Compare(x.Kind, y.Kind), cmp.Compare(x.ID, y.ID))
	})
	return keys
}

func TestRoundTripStream(t *testing.T) {
	evs := service(20000)
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
	checkPrefix(t, "stream", got, normalizedAll(evs))
	fi, _ := os.Stat(path)
	t.Logf("%d events in %d bytes: %.1f bytes/event", len(evs), fi.Size(), float64(fi.Size())/float64(len(evs)))
}

// checkDamaged reads data, which may be damaged, and checks that the
// reader returns only events of want (normalized), in order, then io.EOF (only when
// cleanOK) or a *CorruptError counting them.
func checkDamaged(t *testing.T, what string, data []byte, want []event.Event, cleanOK bool) int {
	t.Helper()
	r, err := NewReader(bytes.NewReader(data))
	if err != nil {
		var ce *CorruptError
		if !errors.As(err, &ce) && !errors.Is(err, ErrNotRecording) && !errors.Is(err, ErrVersion) {
			t.Fatalf("%s: Open: %v, want a *CorruptError, ErrNotRecording or ErrVersion", what, err)
		}
		if ce != nil && (ce.Events != 0 || ce.Offset > int64(len(data))) {
			t.Fatalf("%s: Open: %+v", what, ce)
		}
		return 0
	}
	got, err := readAll(t, r)
	checkPrefix(t, what, got, want)
	var ce *CorruptError
	switch {
	case err == io.EOF && cleanOK:
		if len(got) != len(want) {
			t.Fatalf("%s: clean end after %d events, want %d", what, len(got), len(want))
		}
	case !errors.As(err, &ce):
		t.Fatalf("%s: reading ended with %v, want a *CorruptError", what, err)
	case !errors.Is(err, ErrCorrupt):
		t.Fatalf("%s: %v is not ErrCorrupt", what, err)
	case ce.Events != len(got) || ce.Offset > int64(len(data)) || ce.Offset < int64(len(Magic)+1):
		t.Fatalf("%s: %+v after %d events of %d bytes", what, ce, len(got), len(data))
	case strings.Contains(err.Error(), "\n"):
		t.Fatalf("%s: error has several lines: %q", what, err)
	}
	return len(got)
}

func TestTruncated(t *testing.T) {
	evs := service(2000)
	data, err := os.ReadFile(writeAll(t, testHeader(), evs, Trailer{EndedAt: t0, Reason: "signal"}))
	if err != nil {
		t.Fatal(err)
	}
	evs = normalizedAll(evs)
	last, some := 0, 0
	for off := 0; off < len(data); off += 97 {
		n := checkDamaged(t, fmt.Sprintf("cut at %d of %d", off, len(data)), data[:off], evs, false)
		if n < last {
			t.Fatalf("cut at %d: %d events, fewer than the %d of a shorter cut", off, n, last)
		}
		last = n
		if n > 0 {
			some++
		}
	}
	if some == 0 {
		t.Error("no truncated recording gave any event")
	}
	// Cut just before the end of the gzip stream: every event is there,
	// but the end is not clean.
	if n := checkDamaged(t, "gzip trailer cut", data[:len(data)-1], evs, false); n != len(evs) {
		t.Errorf("gzip trailer cut: %d events, want all %d", n, len(evs))
	}
}

// TestCrashKeepsFlushed reads a recording still being written, as after a
// crash: everything before the last Flush is there.
func TestCrashKeepsFlushed(t *testing.T) {
	evs := service(3000)
	path := filepath.Join(t.TempDir(), "trace.mrec")
	w, err := Create(path, testHeader())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(Trailer{})
	flushed := 0
	for i, ev := range evs {
		if err := w.Write(ev); err != nil {
			t.Fatal(err)
		}
		if i == 2000 {
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			flushed = i + 1
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := checkDamaged(t, "unclosed", data, normalizedAll(evs), false); n < flushed {
		t.Errorf("read %d events of an unclosed recording, want at least the %d flushed", n, flushed)
	}
}

// uncompressed records evs with gzip level 0, so that the frames sit in
// the file as they are, and returns the file and where each frame ends
// (the header's first).
func uncompressed(t *testing.T, evs []event.Event) ([]byte, []int) {
	t.Helper()
	var buf bytes.Buffer
	w, err := newWriter(&buf, testHeader(), gzip.NoCompression)
	if err != nil {
		t.Fatal(err)
	}
	w.Flush()
	offsets := []int{buf.Len()} // the end of the header frame
	for _, ev := range evs {
		if err := w.Write(ev); err != nil {
			t.Fatal(err)
		}
		w.Flush() // stored blocks break only here, between frames
		offsets = append(offsets, buf.Len())
	}
	if err := w.Close(Trailer{}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), offsets
}

func TestFlippedByte(t *testing.T) {
	evs := everyEvent()
	data, ends := uncompressed(t, evs)
	want := normalizedAll(evs)
	// Flip a byte in the middle of each event frame: the CRC catches it,
	// and the reader stops with the events before it.
	for i := range evs {
		// Each frame sits between a stored block header and a sync
		// flush; its middle is in its payload.
		mid := (ends[i] + ends[i+1]) / 2
		bad := bytes.Clone(data)
		bad[mid] ^= 0x10
		r, err := NewReader(bytes.NewReader(bad))
		if err != nil {
			t.Fatal(err)
		}
		got, err := readAll(t, r)
		checkPrefix(t, "flipped", got, want)
		var ce *CorruptError
		if !errors.As(err, &ce) || !errors.Is(err, ErrChecksum) || ce.Events != i {
			t.Errorf("flipped byte %d in event frame %d: %v after %d events, want a checksum *CorruptError after %d", mid, i, err, len(got), i)
		}
	}

	// In a compressed recording, every flipped byte is caught or changes
	// nothing a reader returns (gzip's header time, say): never garbage.
	stream := service(2000)
	comp, err := os.ReadFile(writeAll(t, testHeader(), stream, Trailer{}))
	if err != nil {
		t.Fatal(err)
	}
	stream = normalizedAll(stream)
	// Every byte of the start (magic, version, gzip header, the header
	// frame), then every 53rd.
	next := func(off int) int {
		if off < 64 {
			return off + 1
		}
		return off + 53
	}
	caught, tried := 0, 0
	for off := 0; off < len(comp); off = next(off) {
		bad := bytes.Clone(comp)
		bad[off] ^= 1 << (off % 8)
		if checkDamaged(t, fmt.Sprintf("bit flipped at %d", off), bad, stream, true) < len(stream) {
			caught++
		}
		tried++
	}
	t.Logf("%d of %d flipped bits stopped the reader; the others changed nothing it returns", caught, tried)
}

func TestUnknownFrameSkipped(t *testing.T) {
	evs := everyEvent()
	var buf bytes.Buffer
	w, err := newWriter(&buf, testHeader(), gzip.DefaultCompression)
	if err != nil {
		t.Fatal(err)
	}
	for i, ev := range evs {
		if err := w.frame(0x20+byte(i), []byte(strings.Repeat("future", i))); err != nil {
			t.Fatal(err)
		}
		if err := w.Write(ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(Trailer{Reason: "done"}); err != nil {
		t.Fatal(err)
	}
	r, err := NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readAll(t, r)
	if err != io.EOF || len(got) != len(evs) {
		t.Fatalf("read %d events and %v, want %d and io.EOF", len(got), err, len(evs))
	}
	checkPrefix(t, "with unknown frames", got, normalizedAll(evs))
	if tr, ok := r.Trailer(); !ok || tr.Reason != "done" {
		t.Errorf("Trailer() = %+v, %v", tr, ok)
	}
}

// TestAppendedFields reads payloads written by a newer writer: more
// counter and stats values, bytes after the known fields.
func TestAppendedFields(t *testing.T) {
	var buf bytes.Buffer
	w, err := newWriter(&buf, testHeader(), gzip.DefaultCompression)
	if err != nil {
		t.Fatal(err)
	}
	fork := &event.Fork{Header: event.Header{Time: t0, PID: 1, TID: 2}, Child: 3, Comm: "c"}
	var enc encoder
	enc.codecState = newCodecState()
	_, p, _ := enc.appendEvent(nil, fork)
	w.frame(kindFork, append(p, 0xde, 0xad)) // a field from the future
	end := &event.OpEnd{Header: event.Header{Time: t0.Add(time.Second), PID: 1, TID: 2}, OpID: 9, Final: sampleCounters(2, "x")}
	// op-end with two counter values unknown to this reader.
	p, _ = enc.appendHeader(nil, end.Header)
	p = append(p, 9, 0, 0, endFinal, countersFields+2)
	for _, v := range end.Final.RSS {
		p = binary.AppendVarint(p, v)
	}
	for _, v := range []uint64{end.Final.Faults, end.Final.Mapped, end.Final.Unmapped, end.Final.MadeWritable, end.Final.AdvisedFree} {
		p = binary.AppendUvarint(p, v)
	}
	for _, v := range []int64{end.Final.External, end.Final.Retained, end.Final.RetainedNative} {
		p = binary.AppendVarint(p, v)
	}
	for _, v := range []uint64{end.Final.ABAlloc, end.Final.ABFreed, end.Final.Created} {
		p = binary.AppendUvarint(p, v)
	}
	p = binary.AppendVarint(p, end.Final.RetainedHeap)
	for _, v := range []uint64{1 << 50, 7} {
		p = binary.AppendUvarint(p, v)
	}
	p = appendString(p, "x")
	w.frame(kindOpEnd, p)
	if err := w.Close(Trailer{}); err != nil {
		t.Fatal(err)
	}
	r, err := NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readAll(t, r)
	if err != io.EOF {
		t.Fatal(err)
	}
	want := []event.Event{fork, end}
	if len(got) != len(want) {
		t.Fatalf("read %d events, want %d", len(got), len(want))
	}
	checkPrefix(t, "appended fields", got, normalizedAll(want))
}

func TestVersions(t *testing.T) {
	var buf bytes.Buffer
	w, err := newWriter(&buf, testHeader(), gzip.DefaultCompression)
	if err != nil {
		t.Fatal(err)
	}
	w.Close(Trailer{})
	data := buf.Bytes()

	future := bytes.Clone(data)
	future[len(Magic)] = Version + 1
	path := filepath.Join(t.TempDir(), "future.mrec")
	os.WriteFile(path, future, 0o600)
	_, err = Open(path)
	if !errors.Is(err, ErrVersion) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open(format %d) = %v, want ErrVersion", Version+1, err)
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") || !strings.Contains(msg, path) || !strings.Contains(msg, "newer") {
		t.Errorf("version error %q: want one line naming the file and saying it is newer", msg)
	}
	t.Log(msg)

	for name, bad := range map[string][]byte{
		"other file": []byte("{\"version\":1}\n"),
		"gzip":       data[len(Magic)+1:],
	} {
		if _, err := NewReader(bytes.NewReader(bad)); !errors.Is(err, ErrNotRecording) {
			t.Errorf("%s: %v, want ErrNotRecording", name, err)
		}
	}
	zero := bytes.Clone(data)
	zero[len(Magic)] = 0
	if _, err := NewReader(bytes.NewReader(zero)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("version 0: %v, want ErrCorrupt", err)
	}
}

func TestCreateSafely(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, "trace.mrec")
	w, err := Create(path, testHeader())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(Trailer{}); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]fs.FileMode{path: 0o600, dir: 0o700, filepath.Dir(dir): 0o700} {
		if fi, err := os.Lstat(p); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v (%v), want %v", p, fi.Mode().Perm(), err, want)
		}
	}
	before, _ := os.ReadFile(path)

	// An existing file is never overwritten.
	if _, err := Create(path, testHeader()); !errors.Is(err, ErrExists) {
		t.Errorf("Create over an existing file: %v, want ErrExists", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("Create changed an existing file")
	}

	// Nor written through a symlink, dangling or not.
	victim := filepath.Join(t.TempDir(), "victim")
	for name, target := range map[string]string{"link": path, "dangling": victim} {
		link := filepath.Join(dir, name)
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		_, err := Create(link, testHeader())
		if err == nil || !strings.Contains(err.Error(), "symlink") {
			t.Errorf("Create through a %s symlink: %v, want a symlink refusal", name, err)
		}
	}
	if _, err := os.Lstat(victim); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a dangling symlink's target was created: %v", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("Create wrote through a symlink")
	}

	// Nor into a symlinked directory.
	linkDir := filepath.Join(t.TempDir(), "linkdir")
	os.Symlink(dir, linkDir)
	if _, err := Create(filepath.Join(linkDir, "x.mrec"), testHeader()); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Errorf("Create in a symlinked directory: %v, want a symlink refusal", err)
	}

	// A header that cannot be encoded leaves no file behind.
	h := testHeader()
	h.Options = json.RawMessage("{not json")
	bad := filepath.Join(dir, "bad.mrec")
	if _, err := Create(bad, h); err == nil {
		t.Error("Create with invalid Options JSON succeeded")
	}
	if _, err := os.Lstat(bad); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a failed Create left %s: %v", bad, err)
	}
}

// TestRefusedEvents: an event the writer cannot encode is refused and
// leaves the recording intact.
func TestRefusedEvents(t *testing.T) {
	var buf bytes.Buffer
	w, err := newWriter(&buf, testHeader(), gzip.DefaultCompression)
	if err != nil {
		t.Fatal(err)
	}
	good := []event.Event{
		&event.Fork{Header: event.Header{Time: t0, PID: 1}, Comm: "a"},
		&event.Snapshot{Time: t0.Add(time.Second), Buckets: []event.Bucket{{Key: event.BucketKey{PID: 1, Kind: event.BucketKernel}, Counters: sampleCounters(1, "")}}},
		&event.Fork{Header: event.Header{Time: t0.Add(2 * time.Second), PID: 1}, Comm: "b"},
		&event.Snapshot{Time: t0.Add(3 * time.Second), Buckets: []event.Bucket{{Key: event.BucketKey{PID: 1, Kind: event.BucketKernel}, Counters: sampleCounters(1, "")}}},
	}
	huge := &event.Snapshot{Time: t0.Add(4 * time.Second), Buckets: []event.Bucket{{Key: event.BucketKey{PID: 1, Kind: event.BucketKernel}, Counters: event.Counters{Comm: strings.Repeat("x", MaxFrame)}}}}
	many := &event.Snapshot{Time: t0.Add(4 * time.Second), Processes: make([]event.ProcessMemory, MaxEntries+1)}
	bad := []event.Event{
		nil,
		many,
		event.Fork{}, // a value, not a pointer
		&event.Exec{Header: event.Header{Time: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)}},
		huge,
	}
	for i, ev := range good {
		for _, b := range bad {
			if err := w.Write(b); err == nil {
				t.Errorf("Write(%T) succeeded", b)
			} else if i == 0 {
				t.Logf("Write(%T): %v", b, err)
			}
		}
		if err := w.Write(ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(Trailer{}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(Trailer{}); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close: %v, want ErrClosed", err)
	}
	if err := w.Write(good[0]); !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Close: %v, want ErrClosed", err)
	}
	r, err := NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readAll(t, r)
	if err != io.EOF || len(got) != len(good) {
		t.Fatalf("read %d events and %v, want %d and io.EOF", len(got), err, len(good))
	}
	checkPrefix(t, "after refusals", got, normalizedAll(good))
}

// fuzzSeeds are recordings for the fuzzers to start from.
func fuzzSeeds(f *testing.F) [][]byte {
	var seeds [][]byte
	for _, lvl := range []int{gzip.NoCompression, gzip.BestSpeed} {
		var buf bytes.Buffer
		w, err := newWriter(&buf, testHeader(), lvl)
		if err != nil {
			f.Fatal(err)
		}
		for _, ev := range everyEvent() {
			w.Write(ev)
		}
		w.Close(Trailer{Reason: "seed"})
		seeds = append(seeds, buf.Bytes())
	}
	return seeds
}

func FuzzReader(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
		f.Add(s[:len(s)/2])
	}
	f.Add([]byte(Magic + "\x01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := NewReader(bytes.NewReader(data))
		if err != nil {
			var ce *CorruptError
			if !errors.As(err, &ce) && !errors.Is(err, ErrNotRecording) && !errors.Is(err, ErrVersion) {
				t.Fatalf("NewReader: unexpected error %v", err)
			}
			return
		}
		for n := 0; ; n++ {
			ev, err := r.Next()
			if err == io.EOF {
				return
			}
			var ce *CorruptError
			if errors.As(err, &ce) {
				if ce.Events != n || ce.Offset > int64(len(data)) {
					t.Fatalf("%+v after %d events of %d bytes", ce, n, len(data))
				}
				return
			}
			if err != nil {
				t.Fatalf("Next: unexpected error %v", err)
			}
			if ev == nil {
				t.Fatal("Next returned a nil event without an error")
			}
		}
	})
}

// FuzzDecode feeds payloads straight to the event decoder, which the CRC
// keeps FuzzReader from reaching with random bytes. The input is a
// sequence of (kind byte, uvarint length, payload), decoded in order with
// one state, as a reader does. What decodes must encode back to itself.
func FuzzDecode(f *testing.F) {
	enc := encoder{newCodecState()}
	var seq []byte
	for _, ev := range everyEvent() {
		kind, p, err := enc.appendEvent(nil, ev)
		if err != nil {
			f.Fatal(err)
		}
		if kind == kindSnapshot {
			enc.commitSnapshot()
		}
		one := binary.AppendUvarint([]byte{kind}, uint64(len(p)))
		f.Add(append(one, p...))
		seq = append(append(seq, one...), p...)
	}
	f.Add(seq)
	f.Fuzz(func(t *testing.T, data []byte) {
		dec := eventDecoder{newCodecState()}
		enc := encoder{newCodecState()}
		dec2 := eventDecoder{newCodecState()}
		for len(data) > 1 {
			kind := data[0]
			n, k := binary.Uvarint(data[1:])
			if k <= 0 || n > uint64(len(data)-1-k) {
				return
			}
			payload := data[1+k : 1+k+int(n)]
			data = data[1+k+int(n):]
			ev, err := dec.decode(kind, payload)
			if err != nil {
				return
			}
			k2, p2, err := enc.appendEvent(nil, ev)
			if err != nil {
				t.Fatalf("decoded %#v does not encode: %v", ev, err)
			}
			if k2 == kindSnapshot {
				enc.commitSnapshot()
			}
			again, err := dec2.decode(k2, p2)
			if err != nil || k2 != kind || !reflect.DeepEqual(again, ev) {
				t.Fatalf("re-encoded event differs: %v\n%#v\n%#v", err, ev, again)
			}
		}
	})
}

// countingWriter counts what is written to it.
type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

// BenchmarkWrite records simulated services (busy: ~500 requests/s and 16
// threads; idle: ~10 requests/s and 300 threads), flushing after each
// snapshot as memdiag does, and reports events/s, compressed bytes/event
// and MB per hour of tracing, for each gzip level.
func BenchmarkWrite(b *testing.B) {
	for _, sc := range []struct {
		name string
		load load
	}{{"busy", busy}, {"idle", idle}} {
		evs := simulate(100000, sc.load)
		seconds := evs[len(evs)-1].When().Sub(evs[0].When()).Seconds()
		for _, lvl := range []struct {
			name  string
			level int
		}{{"BestSpeed", gzip.BestSpeed}, {"Default", gzip.DefaultCompression}, {"None", gzip.NoCompression}} {
			b.Run(sc.name+"/"+lvl.name, func(b *testing.B) {
				var out countingWriter
				w, err := newWriter(&out, testHeader(), lvl.level)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := range b.N {
					ev := evs[i%len(evs)]
					if err := w.Write(ev); err != nil {
						b.Fatal(err)
					}
					if _, ok := ev.(*event.Snapshot); ok {
						w.Flush()
					}
				}
				w.Close(Trailer{})
				b.StopTimer()
				perEvent := float64(out.n) / float64(b.N)
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
				b.ReportMetric(perEvent, "bytes/event")
				b.ReportMetric(perEvent*float64(len(evs))/seconds*3600/1e6, "MB/hour")
			})
		}
	}
}

// BenchmarkRead reads back a recording of the simulated service.
func BenchmarkRead(b *testing.B) {
	evs := service(200000)
	var buf bytes.Buffer
	w, _ := newWriter(&buf, testHeader(), level)
	for _, ev := range evs {
		w.Write(ev)
	}
	w.Close(Trailer{})
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		r, err := NewReader(bytes.NewReader(buf.Bytes()))
		if err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := r.Next(); err != nil {
				break
			}
			n++
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
}
