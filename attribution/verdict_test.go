package attribution_test

import (
	"math"
	"strings"
	"testing"

	"github.com/memdiag/memdiag/attribution"
	"github.com/memdiag/memdiag/event"
)

const interval = 64 << 10

// hdr is a header at second i of process 100.
func hdr(i int) event.Header { return event.Header{Time: at(i), PID: 100, TID: 100} }

func opKey(id uint64) event.BucketKey { return event.BucketKey{PID: 100, Kind: event.BucketOp, ID: id} }

// weight is what one live V8 sample of size bytes stands for, as V8's
// profile reports it (size × round(1/(1-exp(-size/interval)))).
func weight(size float64) int64 {
	return int64(size * math.Floor(1/(1-math.Exp(-size/interval))+0.5))
}

// category finds a category of a summary.
func categoryOf(t *testing.T, s *attribution.Summary, name string) attribution.CategorySummary {
	t.Helper()
	for _, c := range s.Categories {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no category %s", name)
	return attribution.CategorySummary{}
}

// TestV8Verdict joins V8 samples with ops by ordinal: the samples a route's
// ops took that the last profile still lists are what it retains; samples
// the profile does not list (collected) count for nobody; a sample that
// arrives after the profile that covers it counts only if that profile
// listed it. The culprit is the route that keeps memory, not the one that
// allocated most.
func TestV8Verdict(t *testing.T) {
	const big = 20 << 10 // a kept 20 KiB string per login
	evs := []event.Event{
		&event.Sampling{Header: hdr(0), Runtime: event.RuntimeV8, Active: true, Interval: interval},
		&event.HeapLive{Header: hdr(0), Runtime: event.RuntimeV8, HeapUsed: 100 << 20}, // the baseline
	}
	var live []event.LiveSample
	var lateListed event.Event
	ord := uint64(0)
	for i := uint64(1); i <= 200; i++ {
		login, feed := 2*i-1, 2*i
		evs = append(evs, served(1, login, "POST", "/login"), served(1, feed, "GET", "/feed"))
		// login: one sampled 20 KiB string, kept. The last one's record is
		// read only after the profile that lists it (as in the ring, before
		// its op's end).
		ord++
		sampleEv := &event.HeapSample{Header: hdr(1), Runtime: event.RuntimeV8, Ordinal: ord, Size: big, Owner: opKey(login)}
		if i < 200 {
			evs = append(evs, sampleEv)
		} else {
			lateListed = sampleEv
		}
		live = append(live, event.LiveSample{Ordinal: ord, Bytes: weight(big)})
		// feed: three sampled 40 KiB arrays, all collected.
		for j := 0; j < 3; j++ {
			ord++
			evs = append(evs, &event.HeapSample{Header: hdr(1), Runtime: event.RuntimeV8, Ordinal: ord, Size: 40 << 10, Owner: opKey(feed)})
		}
		if i < 200 {
			evs = append(evs, end(2, login, 0))
		}
		evs = append(evs, end(2, feed, 0))
	}
	kept := int64(len(live)) * weight(big)
	evs = append(evs,
		&event.HeapLive{Header: hdr(3), Runtime: event.RuntimeV8, Samples: live, UpTo: ord, HeapUsed: 100<<20 + kept},
		lateListed, end(3, 399, 0),
		// Taken before the profile (a feed's ordinal), read after it, not
		// listed: collected.
		&event.HeapSample{Header: hdr(3), Runtime: event.RuntimeV8, Ordinal: ord, Size: 40 << 10, Owner: opKey(400)},
		snap(4, nil))
	s := run(evs).Summary()
	login, feed := categoryOf(t, s, "POST /login"), categoryOf(t, s, "GET /feed")
	if login.Retention.RuntimeHeap != kept || !login.Retention.Significant || login.Retention.Samples != 200 {
		t.Errorf("login retention = %+v, want %d bytes from 200 samples, significant", login.Retention, kept)
	}
	if feed.Retention.Bytes != 0 || feed.Retention.Significant {
		t.Errorf("feed retention = %+v, want nothing", feed.Retention)
	}
	if s.Verdict.Culprit != "POST /login" || !strings.Contains(s.Verdict.Statement, "per op") {
		t.Errorf("verdict = %+v, want POST /login with a rate per op", s.Verdict)
	}
	if !strings.HasPrefix(login.Retention.Method, "sampled (v8") {
		t.Errorf("method = %q", login.Retention.Method)
	}
}

// TestV8ScaleToHeapGrowth: samples keep the size their object had when
// allocated; when they add up to more than V8's own heap growth, they are
// scaled down to it, never up.
func TestV8ScaleToHeapGrowth(t *testing.T) {
	for _, c := range []struct {
		growth int64
		want   float64 // fraction of the sampled bytes
	}{{1 << 30, 1}, {0, 0}} {
		evs := []event.Event{
			&event.Sampling{Header: hdr(0), Runtime: event.RuntimeV8, Active: true, Interval: interval},
			&event.HeapLive{Header: hdr(0), Runtime: event.RuntimeV8, HeapUsed: 10 << 20},
		}
		var live []event.LiveSample
		for i := uint64(1); i <= 100; i++ {
			evs = append(evs, served(1, i, "POST", "/login"),
				&event.HeapSample{Header: hdr(1), Runtime: event.RuntimeV8, Ordinal: i, Size: 64 << 10, Owner: opKey(i)},
				end(2, i, 0))
			live = append(live, event.LiveSample{Ordinal: i, Bytes: weight(64 << 10)})
		}
		sampled := 100 * weight(64<<10)
		evs = append(evs, &event.HeapLive{Header: hdr(3), Runtime: event.RuntimeV8, Samples: live, UpTo: 100, HeapUsed: 10<<20 + c.growth}, snap(4, nil))
		got := categoryOf(t, run(evs).Summary(), "POST /login").Retention.RuntimeHeap
		if want := int64(math.Round(c.want * float64(sampled))); got != want {
			t.Errorf("heap growth %d: retained %d, want %d", c.growth, got, want)
		}
	}
}

// TestGoVerdict: Go samples are followed by address; a sample counts once
// two GC cycles ended after it; frees of young samples teach their
// category's survival rate, which pending samples count at.
func TestGoVerdict(t *testing.T) {
	const size = 256 << 10
	sample := func(i int, op uint64, addr uint64) event.Event {
		return &event.HeapSample{Header: hdr(i), Runtime: event.RuntimeGo, Addr: addr, Size: size, Owner: opKey(op)}
	}
	gc := &event.GCCycle{Header: hdr(1), Runtime: event.RuntimeGo}
	evs := []event.Event{&event.Sampling{Header: hdr(0), Runtime: event.RuntimeGo, Active: true, Interval: 512 << 10}}
	// 100 leaking ops and 100 churning ones, then two GC cycles in which
	// every churn sample is freed: all matured.
	for i := uint64(0); i < 100; i++ {
		evs = append(evs, served(1, 2*i+1, "GET", "/leak"), sample(1, 2*i+1, 0x1000+i), end(1, 2*i+1, 0),
			served(1, 2*i+2, "GET", "/churn"), sample(1, 2*i+2, 0x9000+i), end(1, 2*i+2, 0))
	}
	evs = append(evs, gc)
	for i := uint64(0); i < 100; i++ {
		evs = append(evs, &event.HeapFree{Header: hdr(1), Runtime: event.RuntimeGo, Addr: 0x9000 + i})
	}
	evs = append(evs, gc)
	// 10 more of each, not matured: pending at their category's rate.
	for i := uint64(100); i < 110; i++ {
		evs = append(evs, served(2, 2*i+1, "GET", "/leak"), sample(2, 2*i+1, 0x1000+i), end(2, 2*i+1, 0),
			served(2, 2*i+2, "GET", "/churn"), sample(2, 2*i+2, 0x9000+i), end(2, 2*i+2, 0))
	}
	evs = append(evs, snap(3, nil))
	s := run(evs).Summary()
	w := size / -math.Expm1(-float64(size)/(512<<10))
	leak, churn := categoryOf(t, s, "GET /leak"), categoryOf(t, s, "GET /churn")
	if want := int64(math.Round(110 * w)); math.Abs(float64(leak.Retention.RuntimeHeap-want)) > 1 {
		t.Errorf("leak retains %d, want %d (100 matured + 10 pending at survival 1)", leak.Retention.RuntimeHeap, want)
	}
	if churn.Retention.RuntimeHeap != 0 {
		t.Errorf("churn retains %d, want 0 (survival 0: its 10 pending count for nothing)", churn.Retention.RuntimeHeap)
	}
	if s.Verdict.Culprit != "GET /leak" {
		t.Errorf("culprit %q, want GET /leak", s.Verdict.Culprit)
	}
}

// TestNothingRetains: a mapping estimate that stays flat while the work
// goes on (a heap's high-water mark reached once) is no evidence: it is
// reported apart, as committed, not as retained, and the verdict says
// nothing retains.
func TestNothingRetains(t *testing.T) {
	var evs []event.Event
	for i := uint64(1); i <= 40; i++ {
		e := end(int(i), i, 0)
		if i == 1 {
			e.Final.Retained, e.Final.RetainedNative = 8<<20, 8<<20 // the high-water mark, once
		}
		evs = append(evs, served(int(i), i, "GET", "/churn"), e, snap(int(i), nil))
	}
	s := run(evs).Summary()
	c := categoryOf(t, s, "GET /churn")
	if c.Retention.HighWater != 8<<20 || c.Retention.Bytes != 0 || c.Retention.Significant {
		t.Errorf("churn retention = %+v, want 8 MiB committed apart (high water), nothing retained, not significant", c.Retention)
	}
	if s.Verdict.Culprit != "" || !strings.HasPrefix(s.Verdict.Statement, "no operation retains memory") {
		t.Errorf("verdict = %+v, want nothing retains", s.Verdict)
	}
	// The same estimate growing with every op is evidence.
	evs = evs[:0]
	for i := uint64(1); i <= 40; i++ {
		e := end(int(i), i, 0)
		e.Final.Retained, e.Final.RetainedNative, e.Final.RetainedHeap = 1<<20, 1<<20, 1<<20 // brk growth
		evs = append(evs, served(int(i), i, "GET", "/leak"), e, snap(int(i), nil))
	}
	// A shared heap's growth is evidence of growth, not of who keeps: a
	// suspect, never the culprit.
	if s := run(evs).Summary(); s.Verdict.Culprit != "" || s.Verdict.Suspect != "GET /leak" || s.Verdict.SuspectKind != "native" ||
		!strings.HasPrefix(s.Verdict.Statement, "no operation is measured to retain memory; the native heap grew 40.0 MiB during GET /leak's ops (1.0 MiB per op over 40 ops)") {
		t.Errorf("verdict = %+v, want no culprit, GET /leak the native heap's suspect", s.Verdict)
	}
	// Mappings of their own (a large malloc chunk per op, still mapped)
	// are kept as long as what was allocated in them: measured.
	for i := range evs {
		if e, ok := evs[i].(*event.OpEnd); ok {
			e.Final.RetainedHeap = 0
		}
	}
	if s := run(evs).Summary(); s.Verdict.Culprit != "GET /leak" || s.Verdict.Suspect != "" {
		t.Errorf("verdict = %+v, want GET /leak, measured by its own mappings", s.Verdict)
	}
}

// TestNativeHeapVerdict: with --native-heap, the table of followed
// allocations gives each category's native heap — what its ops allocated
// and nobody freed, whoever frees it — in place of the mapping estimate,
// which in the same run charges the route that committed heap pages. A
// verdict resting on the estimate says so and names the opt-in that
// measures.
func TestNativeHeapVerdict(t *testing.T) {
	events := func() []event.Event {
		var evs []event.Event
		for i := uint64(1); i <= 40; i++ {
			// /churn commits 2 MiB of heap pages per op and frees all it
			// allocates; /keep reuses space churn freed and keeps 1 MiB.
			churn, keep := end(int(i), 2*i-1, 0), end(int(i), 2*i, 0)
			churn.Final.Retained, churn.Final.RetainedNative, churn.Final.RetainedHeap = 2<<20, 2<<20, 2<<20
			churn.Final.ABAlloc, churn.Final.ABFreed = 4<<20, 4<<20
			keep.Final.ABAlloc = 1 << 20
			evs = append(evs, served(int(i), 2*i-1, "GET", "/churn"), churn, served(int(i), 2*i, "GET", "/keep"), keep, snap(int(i), nil))
		}
		return evs
	}
	a := attribution.New(100, t0)
	a.SetOptions(attribution.Options{NativeHeap: true})
	for _, ev := range events() {
		a.Apply(ev)
	}
	s := a.Summary()
	keep, churn := categoryOf(t, s, "GET /keep"), categoryOf(t, s, "GET /churn")
	if keep.Retention.Native != 40<<20 || !keep.Retention.Significant || !strings.Contains(keep.Retention.Method, "native heap followed") {
		t.Errorf("keep retention = %+v, want 40 MiB native, followed, significant", keep.Retention)
	}
	if churn.Retention.Native != 0 || churn.Retention.Significant {
		t.Errorf("churn retention = %+v, want 0: it freed all it allocated", churn.Retention)
	}
	if s.Verdict.Culprit != "GET /keep" || strings.Contains(s.Verdict.Statement, "estimated") {
		t.Errorf("verdict = %+v, want GET /keep, measured", s.Verdict)
	}

	// Without the mode the estimate is all there is: it points at churn,
	// which refills what keep took. No culprit is named on it: churn is
	// the suspect, and the statement says what that rests on and which
	// mode measures.
	s = run(events()).Summary()
	if s.Verdict.Culprit != "" || s.Verdict.Suspect != "GET /churn" || !strings.Contains(s.Verdict.Statement, "--native-heap") {
		t.Errorf("verdict on the estimate = %+v, want no culprit, GET /churn the suspect, the --native-heap hint", s.Verdict)
	}
}

// TestInFlightSawtoothIsNotALeak: buffers in flight make the mapping
// estimate swing by their whole amount while its floor drifts up a little
// (GC timing, a heap that fragments). Between the second and the last
// quarter of the work the floor rose by more than half of minRetained and
// by a quarter of the last value, which alone read as growth; the rise is
// a fraction of the swing, so it is not evidence of retention. The leak-free
// service's /blob (256 KiB Buffers dropped) was named culprit this way in
// some runs.
func TestInFlightSawtoothIsNotALeak(t *testing.T) {
	const mib = 1 << 20
	level := func(i int) int64 { return int64(i)*mib/10 + int64(i%5)*3*mib } // floor 0.1 MiB per op, swing 12 MiB
	var evs []event.Event
	for i := 1; i <= 40; i++ {
		e := end(i, uint64(i), 0)
		d := level(i) - level(i-1)
		e.Final.Retained, e.Final.RetainedNative = d, d
		evs = append(evs, served(i, uint64(i), "GET", "/blob"), e, snap(i, nil))
	}
	s := run(evs).Summary()
	c := categoryOf(t, s, "GET /blob")
	if c.Retention.Significant || s.Verdict.Culprit != "" {
		t.Errorf("blob retention = %+v, verdict %+v: want not significant, no culprit", c.Retention, s.Verdict)
	}
}

// TestSilentGoProfiler: a Go sampler whose rate could not be read (a
// stripped binary) and that took no sample while the GC ran three cycles
// is off; nothing sampled is no evidence, and the runtime heap falls back
// to the mapping estimate, which here keeps growing with /leak's work: a
// suspect, not a culprit.
func TestSilentGoProfiler(t *testing.T) {
	evs := []event.Event{&event.Sampling{Header: hdr(0), Runtime: event.RuntimeGo, Active: true, Interval: 512 << 10}}
	for i := uint64(1); i <= 40; i++ {
		e := end(int(i), i, 0)
		e.Final.Retained = 1 << 20 // runtime heap mapped by the op
		evs = append(evs, served(int(i), i, "GET", "/leak"), e, snap(int(i), nil))
		if i%10 == 0 {
			evs = append(evs, &event.GCCycle{Header: hdr(int(i)), Runtime: event.RuntimeGo})
		}
	}
	s := run(evs).Summary()
	if s.Verdict.Suspect != "GET /leak" || s.Verdict.SuspectKind != "runtime" || s.Verdict.Culprit != "" || !strings.HasPrefix(s.Verdict.Method, "mapping estimate") {
		t.Errorf("verdict = %+v, want GET /leak the runtime heap's suspect on the mapping estimate", s.Verdict)
	}
	var reason string
	for _, st := range s.Sampling {
		reason = st.Reason
	}
	if !strings.Contains(reason, "took no sample over 4 GC cycles") {
		t.Errorf("sampling reason %q: want it to say the profiler is off", reason)
	}
}

// TestSuspectBesideCulprit: a route measured by the runtime sampler to
// keep memory is the culprit even when another route's native heap
// estimate is larger; the larger estimate is named as a suspect, in the
// same sentence, with the mode that would measure it.
func TestSuspectBesideCulprit(t *testing.T) {
	const size = 256 << 10
	evs := []event.Event{&event.Sampling{Header: hdr(0), Runtime: event.RuntimeGo, Active: true, Interval: 512 << 10}}
	for i := uint64(1); i <= 40; i++ {
		leak, cgo := 2*i-1, 2*i
		e := end(int(i), cgo, 0)
		e.Final.Retained, e.Final.RetainedNative, e.Final.RetainedHeap = 4<<20, 4<<20, 4<<20 // arena commits, growing with the work
		evs = append(evs, served(int(i), leak, "GET", "/leak"),
			&event.HeapSample{Header: hdr(int(i)), Runtime: event.RuntimeGo, Addr: 0x1000 + i, Size: size, Owner: opKey(leak)},
			end(int(i), leak, 0), served(int(i), cgo, "GET", "/cgo"), e, snap(int(i), nil))
		if i%10 == 0 {
			evs = append(evs, &event.GCCycle{Header: hdr(int(i)), Runtime: event.RuntimeGo})
		}
	}
	s := run(evs).Summary()
	if s.Verdict.Culprit != "GET /leak" || s.Verdict.Share != 1 {
		t.Errorf("verdict = %+v, want GET /leak, all of what is measured", s.Verdict)
	}
	if s.Verdict.Suspect != "GET /cgo" || s.Verdict.SuspectKind != "native" ||
		!strings.Contains(s.Verdict.Statement, "; the native heap also grew 160.0 MiB during GET /cgo's ops (4.0 MiB per op over 40 ops)") ||
		!strings.Contains(s.Verdict.Statement, "--native-heap") {
		t.Errorf("verdict = %+v, want GET /cgo the native heap's suspect, said after the culprit", s.Verdict)
	}
	if cgo := categoryOf(t, s, "GET /cgo"); !cgo.Retention.Significant || cgo.Retention.Estimated != 160<<20 {
		t.Errorf("cgo retention = %+v, want 160 MiB, significant, all estimated", cgo.Retention)
	}
}

// TestUnsampledGrowthIsNotNothing: without a runtime sampler, a runtime
// heap that grows from helper threads (V8's GC) marks no op. The verdict
// then does not say that nothing retains: it says the growth it cannot
// place, and which sampler would — while it keeps growing; a heap that
// reached its working size early is not that. With a sampler, samples
// speak.
func TestUnsampledGrowthIsNotNothing(t *testing.T) {
	events := func() []event.Event {
		var evs []event.Event
		for i := uint64(1); i <= 40; i++ {
			evs = append(evs, served(int(i), i, "POST", "/login"), end(int(i), i, 0),
				snap(int(i), nil, thread(100, 101, int64(i)<<19, "node"))) // the GC thread: 20 MiB by the end
		}
		return evs
	}
	s := run(events()).Summary()
	if s.Verdict.Culprit != "" || s.Verdict.Unsampled != 20<<20 ||
		!strings.HasPrefix(s.Verdict.Statement, "no operation is measured to retain memory, but the runtime heap is not sampled and anonymous memory outside the native heap grew 20.0 MiB") ||
		!strings.Contains(s.Verdict.Statement, "--heap-sampling v8") {
		t.Errorf("verdict = %+v, want the unsampled growth said", s.Verdict)
	}
	// A heap that grew to its working size in the first quarter and
	// stayed: not growth to place.
	var flat []event.Event
	for i := uint64(1); i <= 40; i++ {
		flat = append(flat, served(int(i), i, "POST", "/login"), end(int(i), i, 0),
			snap(int(i), nil, thread(100, 101, int64(min(i, 10))<<21, "node")))
	}
	if s := run(flat).Summary(); s.Verdict.Unsampled != 0 || !strings.HasPrefix(s.Verdict.Statement, "no operation retains memory") {
		t.Errorf("flat verdict = %+v, want nothing retains", s.Verdict)
	}
	sampled := append([]event.Event{&event.Sampling{Header: hdr(0), Runtime: event.RuntimeV8, Active: true, Interval: interval}}, events()...)
	if s := run(sampled).Summary(); s.Verdict.Unsampled != 0 || !strings.HasPrefix(s.Verdict.Statement, "no operation retains memory") {
		t.Errorf("sampled verdict = %+v, want nothing retains", s.Verdict)
	}
}
