package attribution_test

import (
	"cmp"
	"reflect"
	"slices"
	"testing"

	"github.com/memdiag/memdiag/attribution"
	"github.com/memdiag/memdiag/event"
	"github.com/memdiag/memdiag/internal/eventtest"
)

const mib = 1 << 20

var (
	t0   = eventtest.T0
	at   = eventtest.At
	anon = eventtest.Anon // a bucket whose resident change is all anonymous memory
)

// thread is the bucket of thread tid of process pid.
func thread(pid, tid uint32, bytes int64, comm string) event.Bucket {
	return anon(pid, event.BucketThread, uint64(tid), bytes, comm)
}

// other is a bucket of a kind without an id (baseline, inherited, ...).
func other(pid uint32, kind event.BucketKind, bytes int64) event.Bucket {
	return anon(pid, kind, 0, bytes, "")
}

// snap is a snapshot at second i whose Total is the sum of the buckets'
// resident charges, so conservation holds by construction.
func snap(i int, procs []event.ProcessMemory, buckets ...event.Bucket) *event.Snapshot {
	s := &event.Snapshot{Time: at(i), Buckets: buckets, Processes: procs}
	for _, b := range buckets {
		s.Total += b.Resident()
	}
	s.Peak = s.Total
	return s
}

func fork(i int, pid, tid, child uint32, comm string) *event.Fork {
	return &event.Fork{Header: event.Header{Time: at(i), PID: pid, TID: tid}, Child: child, Comm: comm}
}

func threadExit(i int, pid, tid uint32, comm string) *event.Exit {
	return &event.Exit{Header: event.Header{Time: at(i), PID: pid, TID: tid}, Comm: comm}
}

func groupExit(i int, pid, tid uint32, code int32, comm string) *event.Exit {
	return &event.Exit{Header: event.Header{Time: at(i), PID: pid, TID: tid}, ExitCode: code, GroupDead: true, Comm: comm}
}

func exec(i int, pid uint32, file string) *event.Exec {
	return &event.Exec{Header: event.Header{Time: at(i), PID: pid, TID: pid}, Filename: file}
}

// run feeds events to a new account for main 100.
func run(events []event.Event) *attribution.Account {
	a := attribution.New(100, t0)
	for _, ev := range events {
		a.Apply(ev)
	}
	return a
}

// bucketRes is a Summary bucket reduced to what these tests check.
type bucketRes struct {
	Name     string
	PID      uint32
	Resident int64
}

func bucketsOf(s *attribution.Summary) []bucketRes {
	var out []bucketRes
	for _, b := range s.Buckets {
		out = append(out, bucketRes{b.Name, b.PID, b.Resident()})
	}
	return out
}

// scenario is a small traced group: main 100 with threads 100 ("main") and
// 101 ("worker") found at attach, forking child 200 ("child") which exits.
func scenario() []event.Event {
	return []event.Event{
		snap(1, nil,
			other(100, event.BucketBaseline, 50*mib),
			thread(100, 100, 1*mib, "main"),
		),
		fork(2, 100, 101, 200, "child"),
		snap(2, nil,
			other(100, event.BucketBaseline, 50*mib),
			thread(100, 100, 2*mib, "main"),
			thread(100, 101, 4*mib, "worker"),
			other(100, event.BucketKernel, -1*mib),
			other(200, event.BucketStart, 3*mib),
			thread(200, 200, 5*mib, "child"),
		),
		groupExit(3, 200, 200, 0, "child"),
		snap(3, nil,
			other(100, event.BucketBaseline, 50*mib),
			thread(100, 100, 2*mib, "main"),
			thread(100, 101, 6*mib, "worker"),
			other(100, event.BucketKernel, -1*mib),
			other(200, event.BucketStart, 3*mib),
			thread(200, 200, 5*mib, "child"),
			other(200, event.BucketRelease, -8*mib),
		),
	}
}

func TestSummary(t *testing.T) {
	// mainExit adds the main target's exit to scenario: its release after
	// the group exit is reported apart, not as growth.
	mainExit := append(scenario(),
		groupExit(4, 100, 100, 256, "main"),
		snap(4, nil,
			other(100, event.BucketBaseline, 50*mib),
			thread(100, 100, 2*mib, "main"),
			thread(100, 101, 6*mib, "worker"),
			other(100, event.BucketKernel, -1*mib),
			other(100, event.BucketRelease, -57*mib),
			other(200, event.BucketStart, 3*mib),
			thread(200, 200, 5*mib, "child"),
			other(200, event.BucketRelease, -8*mib),
		),
	)
	// execRelease: the main target's release of its old image at exec,
	// while it lives on, is growth.
	execRelease := []event.Event{
		snap(1, nil, other(100, event.BucketBaseline, 10*mib)),
		exec(2, 100, "/usr/bin/new"),
		snap(2, nil,
			other(100, event.BucketBaseline, 10*mib),
			other(100, event.BucketRelease, -10*mib),
			thread(100, 100, 3*mib, "new"),
		),
	}
	// overflow: the kernel's total holds charges no bucket kept.
	overflowSnap := snap(1, nil, other(100, event.BucketBaseline, 10*mib), thread(100, 100, 1*mib, "main"))
	overflowSnap.Total += 2 * mib

	tests := []struct {
		name         string
		events       []event.Event
		baseline     int64
		growth       int64
		exitRelease  int64
		unattributed int64
		buckets      []bucketRes
	}{
		{
			name:    "no snapshot",
			events:  nil,
			buckets: nil,
		},
		{
			name:     "baseline only",
			events:   []event.Event{snap(1, nil, other(100, event.BucketBaseline, 10*mib))},
			baseline: 10 * mib,
			buckets:  nil,
		},
		{
			name:     "baseline, threads, kernel, a child that exited",
			events:   scenario(),
			baseline: 50 * mib,
			growth:   (2 + 6 - 1 + 3 + 5 - 8) * mib,
			buckets: []bucketRes{
				{"thread:worker", 100, 6 * mib},
				{"thread:child", 200, 5 * mib},
				{"inherited", 200, 3 * mib},
				{"thread:main", 100, 2 * mib},
				{"kernel", 100, -1 * mib},
				{"released", 200, -8 * mib},
			},
		},
		{
			name:        "main target exited: its release apart",
			events:      mainExit,
			baseline:    50 * mib,
			growth:      (2 + 6 - 1 + 3 + 5 - 8) * mib,
			exitRelease: -57 * mib,
			buckets: []bucketRes{
				{"thread:worker", 100, 6 * mib},
				{"thread:child", 200, 5 * mib},
				{"inherited", 200, 3 * mib},
				{"thread:main", 100, 2 * mib},
				{"kernel", 100, -1 * mib},
				{"released", 200, -8 * mib},
			},
		},
		{
			name:     "main target's release at exec is growth",
			events:   execRelease,
			baseline: 10 * mib,
			growth:   -7 * mib,
			buckets: []bucketRes{
				{"thread:new", 100, 3 * mib},
				{"released", 100, -10 * mib},
			},
		},
		{
			name: "thread without a name",
			events: []event.Event{
				snap(1, nil, thread(100, 100, 1*mib, "main"), thread(100, 102, 2*mib, "")),
			},
			growth: 3 * mib,
			buckets: []bucketRes{
				{"thread:?", 100, 2 * mib},
				{"thread:main", 100, 1 * mib},
			},
		},
		{
			name: "threads of one name in one process share a bucket",
			events: []event.Event{
				snap(1, nil,
					thread(100, 101, 1*mib, "pool"),
					thread(100, 102, 2*mib, "pool"),
					thread(200, 201, 4*mib, "pool"),
				),
			},
			growth: 7 * mib,
			buckets: []bucketRes{
				{"thread:pool", 200, 4 * mib},
				{"thread:pool", 100, 3 * mib},
			},
		},
		{
			name: "ties sorted by name then pid, empty buckets left out",
			events: []event.Event{
				snap(1, nil,
					thread(100, 100, 1*mib, "b"),
					thread(200, 200, 1*mib, "b"),
					thread(300, 300, 1*mib, "a"),
					thread(400, 400, 1*mib, "b"),
					thread(500, 500, 1*mib, "b"),
					other(100, event.BucketOverflow, 0),
				),
			},
			growth: 5 * mib,
			buckets: []bucketRes{
				{"thread:a", 300, 1 * mib},
				{"thread:b", 100, 1 * mib},
				{"thread:b", 200, 1 * mib},
				{"thread:b", 400, 1 * mib},
				{"thread:b", 500, 1 * mib},
			},
		},
		{
			name:         "kernel total above the buckets is unattributed",
			events:       []event.Event{overflowSnap},
			baseline:     10 * mib,
			growth:       1 * mib,
			unattributed: 2 * mib,
			buckets:      []bucketRes{{"thread:main", 100, 1 * mib}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := run(tt.events).Summary()
			if got := s.Baseline.Resident(); got != tt.baseline {
				t.Errorf("Baseline = %d, want %d", got, tt.baseline)
			}
			if got := s.Growth.Resident(); got != tt.growth {
				t.Errorf("Growth = %d, want %d", got, tt.growth)
			}
			if got := s.ExitRelease.Resident(); got != tt.exitRelease {
				t.Errorf("ExitRelease = %d, want %d", got, tt.exitRelease)
			}
			if got := s.Unattributed(); got != tt.unattributed {
				t.Errorf("Unattributed = %d, want %d", got, tt.unattributed)
			}
			if got := bucketsOf(s); !reflect.DeepEqual(got, tt.buckets) {
				t.Errorf("Buckets =\n%v\nwant\n%v", got, tt.buckets)
			}
			// Growth is exactly the sum of the listed buckets.
			var sum int64
			for _, b := range s.Buckets {
				sum += b.Resident()
			}
			if sum != s.Growth.Resident() {
				t.Errorf("buckets sum to %d, Growth is %d", sum, s.Growth.Resident())
			}
			if s.Snapshots != countSnapshots(tt.events) {
				t.Errorf("Snapshots = %d, want %d", s.Snapshots, countSnapshots(tt.events))
			}
		})
	}
}

func countSnapshots(events []event.Event) int {
	n := 0
	for _, ev := range events {
		if _, ok := ev.(*event.Snapshot); ok {
			n++
		}
	}
	return n
}

// TestConservation checks, after every event of a longer stream, that the
// buckets explain the kernel's total to the byte, whatever is folded away.
func TestConservation(t *testing.T) {
	events := append(scenario(),
		threadExit(4, 100, 101, "worker"),
		snap(4, nil,
			other(100, event.BucketBaseline, 50*mib),
			thread(100, 100, 2*mib, "main"),
			thread(100, 101, 7*mib, "worker"),
			other(100, event.BucketKernel, -1*mib),
			other(200, event.BucketStart, 3*mib),
			thread(200, 200, 5*mib, "child"),
			other(200, event.BucketRelease, -8*mib),
		),
		// The kernel forgot the folded buckets: they live on in the account.
		snap(5, nil,
			other(100, event.BucketBaseline, 50*mib),
			thread(100, 100, 3*mib, "main"),
			thread(100, 101, 7*mib, "worker"),
			other(100, event.BucketKernel, -1*mib),
		),
		snap(6, nil,
			other(100, event.BucketBaseline, 50*mib),
			thread(100, 100, 3*mib, "main"),
			other(100, event.BucketKernel, -1*mib),
		),
	)
	a := attribution.New(100, t0)
	// What the kernel would hold had it never forgotten a bucket.
	all := map[event.BucketKey]int64{}
	for i, ev := range events {
		a.Apply(ev)
		s, ok := ev.(*event.Snapshot)
		if !ok {
			continue
		}
		for _, b := range s.Buckets {
			all[b.Key] = b.Resident()
		}
		var total int64
		for _, v := range all {
			total += v
		}
		sum := a.Summary()
		explained := sum.Baseline.Resident() + sum.Growth.Resident() + sum.ExitRelease.Resident()
		if explained != total {
			t.Errorf("after event %d: buckets explain %d, kernel charged %d", i, explained, total)
		}
		a.Retired() // as the session does after every snapshot
	}
}

func TestRetire(t *testing.T) {
	worker := event.BucketKey{PID: 100, Kind: event.BucketThread, ID: 101}
	buckets := func(workerBytes int64) []event.Bucket {
		return []event.Bucket{
			thread(100, 100, 1*mib, "main"),
			thread(100, 101, workerBytes, "worker"),
		}
	}
	a := attribution.New(100, t0)
	a.Apply(snap(1, nil, buckets(2*mib)...))
	a.Apply(threadExit(2, 100, 101, "worker"))

	// Kept for retireAfter (2) snapshots after the exit, so charges in
	// flight are still read.
	a.Apply(snap(2, nil, buckets(3*mib)...))
	if keys, pids := a.Retired(); len(keys)+len(pids) != 0 {
		t.Fatalf("one snapshot after the exit: Retired() = %v, %v; want nothing", keys, pids)
	}
	a.Apply(snap(3, nil, buckets(4*mib)...))
	keys, pids := a.Retired()
	if want := []event.BucketKey{worker}; !reflect.DeepEqual(keys, want) || len(pids) != 0 {
		t.Fatalf("two snapshots after the exit: Retired() = %v, %v; want %v, none", keys, pids, want)
	}
	if keys, pids := a.Retired(); len(keys)+len(pids) != 0 {
		t.Fatalf("second Retired() = %v, %v; want nothing", keys, pids)
	}

	// The folded thread keeps its last counters under its name, once,
	// whether or not the kernel still lists it.
	want := []bucketRes{{"thread:worker", 100, 4 * mib}, {"thread:main", 100, 1 * mib}}
	if got := bucketsOf(a.Summary()); !reflect.DeepEqual(got, want) {
		t.Errorf("after folding: Buckets = %v, want %v", got, want)
	}
	a.Apply(snap(4, nil, thread(100, 100, 1*mib, "main")))
	if got := bucketsOf(a.Summary()); !reflect.DeepEqual(got, want) {
		t.Errorf("after the kernel forgot it: Buckets = %v, want %v", got, want)
	}
	if keys, pids := a.Retired(); len(keys)+len(pids) != 0 {
		t.Errorf("Retired() after nothing new = %v, %v; want nothing", keys, pids)
	}
}

func TestRetireBeforeFirstSnapshot(t *testing.T) {
	a := attribution.New(100, t0)
	a.Apply(threadExit(1, 100, 101, "short"))
	a.Apply(snap(1, nil, thread(100, 101, 1*mib, "short")))
	if keys, _ := a.Retired(); len(keys) != 0 {
		t.Fatalf("after one snapshot: Retired() = %v, want nothing", keys)
	}
	a.Apply(snap(2, nil, thread(100, 101, 1*mib, "short")))
	keys, _ := a.Retired()
	if want := []event.BucketKey{{PID: 100, Kind: event.BucketThread, ID: 101}}; !reflect.DeepEqual(keys, want) {
		t.Fatalf("after two snapshots: Retired() = %v, want %v", keys, want)
	}
}

func TestRetireProcess(t *testing.T) {
	events := scenario() // child 200 exits between snapshots 2 and 3
	a := attribution.New(100, t0)
	for _, ev := range events {
		a.Apply(ev)
	}
	if keys, pids := a.Retired(); len(keys)+len(pids) != 0 {
		t.Fatalf("one snapshot after the child's exit: Retired() = %v, %v; want nothing", keys, pids)
	}
	a.Apply(snap(4, nil,
		other(100, event.BucketBaseline, 50*mib),
		other(200, event.BucketStart, 3*mib),
		thread(200, 200, 5*mib, "child"),
		other(200, event.BucketRelease, -8*mib),
	))
	keys, pids := a.Retired()
	sortKeys(keys)
	wantKeys := []event.BucketKey{
		{PID: 200, Kind: event.BucketThread, ID: 200},
		{PID: 200, Kind: event.BucketStart},
		{PID: 200, Kind: event.BucketRelease},
	}
	if !reflect.DeepEqual(keys, wantKeys) {
		t.Errorf("Retired() buckets = %v, want %v", keys, wantKeys)
	}
	if want := []uint32{200}; !reflect.DeepEqual(pids, want) {
		t.Errorf("Retired() pids = %v, want %v", pids, want)
	}
	if keys, pids := a.Retired(); len(keys)+len(pids) != 0 {
		t.Errorf("second Retired() = %v, %v; want nothing", keys, pids)
	}
	// The process is folded once: a later snapshot retires nothing more.
	a.Apply(snap(5, nil, other(100, event.BucketBaseline, 50*mib)))
	if keys, pids := a.Retired(); len(keys)+len(pids) != 0 {
		t.Errorf("Retired() after a later snapshot = %v, %v; want nothing", keys, pids)
	}
	// Its accounts remain, under their names.
	s := a.Summary()
	var child []bucketRes
	for _, b := range bucketsOf(s) {
		if b.PID == 200 {
			child = append(child, b)
		}
	}
	wantChild := []bucketRes{{"thread:child", 200, 5 * mib}, {"inherited", 200, 3 * mib}, {"released", 200, -8 * mib}}
	if !reflect.DeepEqual(child, wantChild) {
		t.Errorf("child buckets = %v, want %v", child, wantChild)
	}
}

func sortKeys(keys []event.BucketKey) {
	slices.SortFunc(keys, func(a, b event.BucketKey) int {
		return cmp.Or(cmp.Compare(a.PID, b.PID), cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.ID, b.ID))
	})
}

func TestProcesses(t *testing.T) {
	pm := func(pid uint32, cur, peak int64) event.ProcessMemory {
		return event.ProcessMemory{PID: pid, Current: cur, Peak: peak}
	}
	a := attribution.New(100, t0)
	a.SetComm(100, "server")
	for _, ev := range []event.Event{
		snap(1, []event.ProcessMemory{pm(100, 5*mib, 5*mib)}, thread(100, 100, 1*mib, "renamed")),
		fork(2, 100, 100, 200, "child"),
		exec(2, 200, "/bin/helper"),
		snap(2, []event.ProcessMemory{pm(100, 9*mib, 9*mib), pm(200, 1*mib, 2*mib)},
			thread(100, 100, 1*mib, "renamed"), thread(200, 200, 1*mib, "helper")),
		snap(3, []event.ProcessMemory{pm(100, 7*mib, 7*mib), pm(200, 1*mib, 1*mib)},
			thread(100, 100, 1*mib, "renamed"), thread(200, 200, 1*mib, "helper")),
		groupExit(4, 200, 200, 3<<8, "helper"),
	} {
		a.Apply(ev)
	}
	s := a.Summary()
	want := []struct {
		PID      uint32
		Parent   uint32
		Comm     string
		Exe      string
		Exited   bool
		ExitCode int32
		Peak     int64
	}{
		// The comm set from /proc wins over the thread bucket's;
		// the peak is the highest any snapshot reported.
		{100, 0, "server", "", false, 0, 9 * mib},
		// Parent from the fork, name from its main thread's bucket.
		{200, 100, "helper", "/bin/helper", true, 3 << 8, 2 * mib},
	}
	if len(s.Processes) != len(want) {
		t.Fatalf("Processes = %+v, want %d", s.Processes, len(want))
	}
	for i, w := range want {
		p := s.Processes[i]
		if p.PID != w.PID || p.Parent != w.Parent || p.Comm != w.Comm || p.Exe != w.Exe ||
			p.Exited != w.Exited || p.ExitCode != w.ExitCode || p.Peak != w.Peak {
			t.Errorf("Processes[%d] = %+v, want %+v", i, p, w)
		}
	}
	if s.Main == nil || s.Main.PID != 100 || s.Main.Peak != 9*mib {
		t.Errorf("Main = %+v, want pid 100 with peak %d", s.Main, 9*mib)
	}
	if !s.Start.Equal(t0) || !s.End.Equal(at(3)) {
		t.Errorf("Start, End = %v, %v; want %v, %v", s.Start, s.End, t0, at(3))
	}
}

// TestProcessParentAfterSnapshot: a snapshot (read from the kernel's
// tables) can show a child before its fork record comes out of the ring
// buffer; the record still names its parent.
func TestProcessParentAfterSnapshot(t *testing.T) {
	a := attribution.New(100, t0)
	a.Apply(snap(1, []event.ProcessMemory{{PID: 100, Current: 5 * mib}, {PID: 200, Current: 24 * mib}}))
	a.Apply(fork(1, 100, 100, 200, "node"))
	s := a.Summary()
	if len(s.Processes) != 2 || s.Processes[1].PID != 200 || s.Processes[1].Parent != 100 {
		t.Errorf("Processes = %+v, want pid 200 with parent 100", s.Processes)
	}
	if s.Processes[0].Parent != 0 {
		t.Errorf("the main target's parent = %d, want 0", s.Processes[0].Parent)
	}
}

func TestProcessCommFromExit(t *testing.T) {
	a := attribution.New(100, t0)
	a.Apply(fork(1, 100, 100, 200, "sh"))
	a.Apply(groupExit(2, 200, 200, 0, "sh"))
	s := a.Summary()
	if len(s.Processes) != 2 || s.Processes[1].PID != 200 || s.Processes[1].Comm != "sh" || s.Processes[1].Parent != 100 {
		t.Errorf("Processes = %+v, want pid 200 named sh, parent 100", s.Processes)
	}
}

func TestSummaryTotals(t *testing.T) {
	a := attribution.New(100, t0)
	s1 := snap(1, nil, thread(100, 100, 4*mib, "main"))
	s1.Peak = 6 * mib
	s1.Stats = event.Stats{LostEvents: 3, BucketOverflow: 1, DecodeErrors: 2}
	a.Apply(s1)
	s := a.Summary()
	if s.Current != 4*mib || s.GroupPeak != 6*mib || s.Stats != s1.Stats {
		t.Errorf("Current, GroupPeak, Stats = %d, %d, %+v; want %d, %d, %+v",
			s.Current, s.GroupPeak, s.Stats, 4*mib, 6*mib, s1.Stats)
	}
	// Every member and total, not only resident memory, sums into Growth.
	b1 := thread(100, 101, 0, "w")
	b1.RSS = [event.RSSMembers]int64{1, 2, 3, 4}
	b1.Faults, b1.Mapped, b1.Unmapped, b1.MadeWritable, b1.AdvisedFree = 1, 2, 3, 4, 5
	b2 := other(100, event.BucketKernel, 0)
	b2.RSS = [event.RSSMembers]int64{10, 20, 30, 40}
	b2.Faults, b2.Mapped, b2.Unmapped, b2.MadeWritable, b2.AdvisedFree = 10, 20, 30, 40, 50
	a = attribution.New(100, t0)
	a.Apply(snap(1, nil, b1, b2))
	want := event.Counters{
		RSS:    [event.RSSMembers]int64{11, 22, 33, 44},
		Faults: 11, Mapped: 22, Unmapped: 33, MadeWritable: 44, AdvisedFree: 55,
	}
	if got := a.Summary().Growth; got != want {
		t.Errorf("Growth = %+v, want %+v", got, want)
	}
}

func TestDeterminism(t *testing.T) {
	events := append(scenario(),
		threadExit(4, 100, 101, "worker"),
		snap(4, nil,
			other(100, event.BucketBaseline, 50*mib),
			thread(100, 100, 2*mib, "main"),
			thread(100, 101, 7*mib, "worker"),
			thread(100, 102, 7*mib, "worker"),
			thread(100, 103, 7*mib, "pool"),
			other(100, event.BucketKernel, -1*mib),
		),
		snap(5, nil,
			other(100, event.BucketBaseline, 50*mib),
			thread(100, 100, 2*mib, "main"),
			thread(100, 102, 7*mib, "worker"),
			thread(100, 103, 7*mib, "pool"),
		),
		groupExit(6, 100, 100, 0, "main"),
		snap(6, nil,
			other(100, event.BucketBaseline, 50*mib),
			thread(100, 100, 2*mib, "main"),
			thread(100, 102, 7*mib, "worker"),
			thread(100, 103, 7*mib, "pool"),
			other(100, event.BucketRelease, -66*mib),
		),
	)
	want := run(events).Summary()
	// Map iteration order differs from run to run: repeat to catch an
	// order dependence.
	for i := range 20 {
		if got := run(events).Summary(); !reflect.DeepEqual(got, want) {
			t.Fatalf("run %d: Summary differs:\n%+v\nwant\n%+v", i, got, want)
		}
	}
	// Summary does not change the account.
	a := run(events)
	first := a.Summary()
	if second := a.Summary(); !reflect.DeepEqual(first, second) {
		t.Errorf("second Summary differs:\n%+v\nwant\n%+v", second, first)
	}
}
