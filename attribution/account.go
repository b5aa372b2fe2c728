package attribution

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/memdiag/memdiag/event"
)

// retireAfter is how many snapshots a bucket of an exited thread is kept
// live after its exit, so charges still in flight are read before it is
// folded away and deleted from the kernel.
const retireAfter = 2

// Process is what the account knows about one traced process.
type Process struct {
	PID       uint32
	Parent    uint32 // 0 for a target given by the user
	Comm      string
	Exe       string // last exec'd file, when seen
	Exited    bool
	ExitCode  int32
	OOMKilled bool // the OOM killer chose it
	Execs     int  // execs seen while traced
	// Peak is the highest resident memory the kernel reported for this
	// process, counting each counter from its first change after attach.
	Peak      int64
	exitedSeq int
}

// Account accumulates events into per-bucket memory accounts.
type Account struct {
	main  uint32
	procs map[uint32]*Process
	order []uint32 // pids in the order first seen

	live     map[event.BucketKey]event.Counters // latest value of every bucket still in the kernel
	retired  map[nameKey]event.Counters         // folded buckets of exited threads and processes
	exited   map[event.BucketKey]int            // thread bucket -> snapshot seq of its thread's exit
	parents  map[uint32]uint32                  // forked task -> parent pid, until placed
	folded   map[event.BucketKey]event.Counters // folded buckets until a snapshot shows them gone
	forget   []event.BucketKey                  // folded, to delete from the kernel
	deadPIDs []uint32                           // processes whose kernel state can go

	seq         int
	first, last *event.Snapshot
	start       time.Time

	opts    Options
	cats    map[string]*category
	open    map[uint64]*op
	spare   []*op                 // ended ops to reuse (newOp)
	sockOps map[sockKey]uint64    // socket -> the open op begun on it last
	ended   map[uint64]endedBlock // op id / 64 -> which of those 64 ops ended, and when the last did
	orphans map[uint64]orphan     // op buckets seen in a snapshot before their begin
	owners  map[uint64]*category  // ended ops that mapped memory -> their category
	// unclaimed: give-backs of ops not known yet when their snapshot came
	// (the maps are read apart from the ring buffer, so an op's begin and
	// end records can come after a give-back it made), charged to the
	// forgotten category meanwhile and moved to the op's category when its
	// begin comes.
	unclaimed map[uint64]unclaimed
	ownerRing []uint64 // owners' ids, oldest first, for eviction
	ownerNext int
	notices   []Notice
	evicted   int // open ops ended early because the table was full
	tlsSeen   bool
	tl        timeline
	markers   []event.Marker           // bounded: maxMarkers
	abLive    int64                    // exact mode: live ArrayBuffer bytes at the last snapshot
	heap      heapState                // runtime heap samples joined with ops
	trend     map[string]*[]trendPoint // per category: mapping measures against work (trend.go)
}

// maxMarkers bounds the markers kept for the timeline.
const maxMarkers = 1000

func (a *Account) marker(m event.Marker) {
	if len(a.markers) < maxMarkers {
		a.markers = append(a.markers, m)
	}
}

// nameKey groups buckets in reports: per process, per bucket name.
type nameKey struct {
	PID  uint32
	Name string
}

// New returns an account for the process main (the pid the user gave, or
// the command `run` started).
func New(main uint32, start time.Time) *Account {
	a := &Account{
		main:      main,
		procs:     map[uint32]*Process{},
		live:      map[event.BucketKey]event.Counters{},
		retired:   map[nameKey]event.Counters{},
		exited:    map[event.BucketKey]int{},
		parents:   map[uint32]uint32{},
		folded:    map[event.BucketKey]event.Counters{},
		start:     start,
		cats:      map[string]*category{},
		open:      map[uint64]*op{},
		sockOps:   map[sockKey]uint64{},
		ended:     map[uint64]endedBlock{},
		orphans:   map[uint64]orphan{},
		unclaimed: map[uint64]unclaimed{},
		owners:    map[uint64]*category{},
		heap:      newHeapState(),
	}
	a.opts.defaults()
	a.process(main)
	return a
}

// SetOptions sets how operations are named and bounded; call it before
// the first event.
func (a *Account) SetOptions(o Options) {
	o.defaults()
	a.opts = o
}

// Main returns the main target's pid.
func (a *Account) Main() uint32 { return a.main }

func (a *Account) process(pid uint32) *Process {
	p, ok := a.procs[pid]
	if !ok {
		p = &Process{PID: pid, Parent: a.parents[pid]}
		delete(a.parents, pid)
		a.procs[pid] = p
		a.order = append(a.order, pid)
	}
	return p
}

// SetComm records a process's name (from /proc, for targets found there).
func (a *Account) SetComm(pid uint32, comm string) { a.process(pid).Comm = comm }

// Apply takes one event.
func (a *Account) Apply(ev event.Event) {
	switch e := ev.(type) {
	case *event.Fork:
		// The kernel reports threads and processes alike: remember the
		// parent until the child either exits as a thread or shows up as
		// a process of its own in a snapshot. A snapshot reads the kernel's
		// tables, not the ring buffer, so it may show the child first:
		// then the child takes its parent now.
		if p, ok := a.procs[e.Child]; ok && p.Parent == 0 && !p.Exited && e.Child != a.main {
			p.Parent = e.PID
		} else if !ok {
			a.parents[e.Child] = e.PID
		}
	case *event.Exec:
		p := a.process(e.PID)
		p.Exe = e.Filename
		p.Execs++
	case *event.Exit:
		if e.GroupDead {
			p := a.process(e.PID)
			p.Exited, p.ExitCode, p.exitedSeq = true, e.ExitCode, a.seq
			if p.Comm == "" {
				p.Comm = e.Comm
			}
			return
		}
		delete(a.parents, e.TID)
		a.exited[event.BucketKey{PID: e.PID, Kind: event.BucketThread, ID: uint64(e.TID)}] = a.seq
	case *event.OpBegin:
		a.opBegin(e)
	case *event.OpEnd:
		if e.HasFinal {
			a.opEnd(e.OpID, e.Time, &e.Final)
		} else {
			a.opEnd(e.OpID, e.Time, nil)
		}
	case *event.TLSSeen:
		a.tlsSeen = true
	case *event.OOM:
		p := a.process(e.PID)
		p.OOMKilled = true
		a.marker(event.Marker{Header: e.Header, Kind: "oom", Label: fmt.Sprintf("the OOM killer chose pid %d (anon %d MiB)", e.PID, e.AnonRSS>>20)})
	case *event.Marker:
		a.marker(*e)
	case *event.HeapSample:
		a.heapSample(e)
	case *event.HeapFree:
		a.heapFree(e)
	case *event.GCCycle:
		a.heap.goCycles[e.PID]++
	case *event.HeapLive:
		a.heapLive(e)
	case *event.Sampling:
		a.heap.sampling[e.PID] = *e
	case *event.Snapshot:
		a.snapshot(e)
	}
}

func (a *Account) snapshot(s *event.Snapshot) {
	a.seq++
	if a.first == nil {
		a.first = s
	}
	a.last = s
	a.abLive = 0
	for _, pm := range s.Processes {
		p := a.process(pm.PID)
		p.Peak = max(p.Peak, pm.Peak)
		a.abLive += pm.ArrayBuffers
	}
	if len(a.folded) > 0 {
		present := make(map[event.BucketKey]bool, len(s.Buckets))
		for _, b := range s.Buckets {
			present[b.Key] = true
		}
		for k := range a.folded {
			if !present[k] {
				delete(a.folded, k)
			}
		}
	}
	for _, b := range s.Freed {
		a.freed(b)
	}
	for _, b := range s.Buckets {
		if prev, ok := a.folded[b.Key]; ok {
			delete(a.folded, b.Key)
			switch {
			case b.Created != prev.Created:
				// Deleted and created again (a late charge): a new
				// bucket, all of it counts.
			case b.Counters == prev:
				a.folded[b.Key] = prev
				continue // read again before the delete took effect
			default:
				// Folded, but the kernel still has it (its delete
				// failed): only what came since counts.
				b.Counters = sub(b.Counters, prev)
			}
		}
		if b.Key.Kind == event.BucketOp {
			a.opSnapshot(b, s.Time)
			continue
		}
		a.live[b.Key] = b.Counters
		if b.Key.PID != 0 {
			p := a.process(b.Key.PID)
			if b.Key.Kind == event.BucketThread && uint64(b.Key.PID) == b.Key.ID && p.Comm == "" {
				p.Comm = b.Comm
			}
		}
	}
	// Fold away buckets whose thread or process is gone for good.
	for key, at := range a.exited {
		if a.seq-at >= retireAfter {
			a.fold(key)
			delete(a.exited, key)
		}
	}
	for _, pid := range a.order {
		p := a.procs[pid]
		if !p.Exited || p.exitedSeq < 0 || a.seq-p.exitedSeq < retireAfter {
			continue
		}
		for key := range a.live {
			if key.PID == pid {
				a.fold(key)
			}
		}
		a.endOpsOf(pid, s.Time)
		p.exitedSeq = -1 // folded
		a.deadPIDs = append(a.deadPIDs, pid)
	}
	a.boundProcesses()
	for _, c := range a.cats {
		if c.cycle != nil && c.cycle.open == 0 && s.Time.Sub(c.cycle.last) >= c.gap {
			a.closeCycle(c)
		}
	}
	a.pruneEnded()
	a.recordTrend()
	a.tl.add(func() TimelinePoint { return a.point(s.Time) })
}

// maxProcesses bounds the processes an account keeps by pid; past it,
// exited ones are merged into pid 0 ("other processes"), so a service that
// forks without end cannot grow memdiag's memory.
const maxProcesses = 1024

// boundProcesses forgets exited processes past maxProcesses, oldest first,
// merging their accounts into pid 0.
func (a *Account) boundProcesses() {
	if len(a.procs) <= maxProcesses {
		return
	}
	kept := a.order[:0]
	for _, pid := range a.order {
		p := a.procs[pid]
		if len(a.procs) > maxProcesses && pid != a.main && p.Exited && p.exitedSeq == -1 {
			delete(a.procs, pid)
			for nk, c := range a.retired {
				if nk.PID == pid {
					other := nameKey{0, nk.Name}
					a.retired[other] = add(a.retired[other], c)
					delete(a.retired, nk)
				}
			}
			for _, c := range a.cats {
				if v, ok := c.perPID[pid]; ok {
					c.perPID[0] = add(c.perPID[0], v)
					delete(c.perPID, pid)
				}
			}
			continue
		}
		kept = append(kept, pid)
	}
	a.order = kept
}

// fold moves a live bucket's counters into the retired totals.
func (a *Account) fold(key event.BucketKey) {
	c, ok := a.live[key]
	if !ok {
		return
	}
	nk := nameKey{key.PID, bucketName(key, c)}
	a.retired[nk] = add(a.retired[nk], c)
	delete(a.live, key)
	a.forget = append(a.forget, key)
	a.folded[key] = c
}

// Retired returns, once, the buckets folded away and the processes gone,
// for the tracer to delete from the kernel's tables.
func (a *Account) Retired() (buckets []event.BucketKey, pids []uint32) {
	buckets, pids = a.forget, a.deadPIDs
	a.forget, a.deadPIDs = nil, nil
	slices.SortFunc(buckets, compareKeys)
	slices.Sort(pids)
	return buckets, pids
}

func compareKeys(x, y event.BucketKey) int {
	return cmp.Or(cmp.Compare(x.PID, y.PID), cmp.Compare(x.Kind, y.Kind), cmp.Compare(x.ID, y.ID))
}

// bucketName is how reports name a bucket.
func bucketName(key event.BucketKey, c event.Counters) string {
	if key.Kind == event.BucketThread {
		if c.Comm == "" {
			return "thread:?"
		}
		return "thread:" + c.Comm
	}
	return key.Kind.String()
}

// sub returns a - b; the kernel's counters only grow, so this is what was
// added since b was read.
func sub(a, b event.Counters) event.Counters {
	for i := range a.RSS {
		a.RSS[i] -= b.RSS[i]
	}
	a.Faults -= b.Faults
	a.Mapped -= b.Mapped
	a.Unmapped -= b.Unmapped
	a.MadeWritable -= b.MadeWritable
	a.AdvisedFree -= b.AdvisedFree
	a.External -= b.External
	a.Retained -= b.Retained
	a.RetainedNative -= b.RetainedNative
	a.RetainedHeap -= b.RetainedHeap
	a.ABAlloc -= b.ABAlloc
	a.ABFreed -= b.ABFreed
	return a
}

// culprit picks the op category that grew most: by retained mapping bytes
// when byRetained and any op category retains some, else by resident
// growth (who grew the process, not who keeps memory: see verdict.go). The share is of the total over the op
// categories that grew by the same measure.
func culprit(cats []CategorySummary, byRetained bool) (name string, share float64, by string) {
	pick := func(measure func(*CategorySummary) int64) (string, float64) {
		var best string
		var top, total int64
		for i := range cats {
			c := &cats[i]
			if c.Kind != KindHTTP && c.Kind != KindOutbound {
				continue
			}
			if v := measure(c); v > 0 {
				total += v
				if v > top || v == top && c.Name < best {
					best, top = c.Name, v
				}
			}
		}
		if total == 0 {
			return "", 0
		}
		return best, float64(top) / float64(total)
	}
	if byRetained {
		if name, share = pick((*CategorySummary).RetainedBytes); name != "" {
			return name, share, "retained"
		}
	}
	name, share = pick(func(c *CategorySummary) int64 { return c.Resident() })
	if name == "" {
		return "", 0, ""
	}
	return name, share, "rss"
}

// kindOf gives the category kind of a non-op bucket name.
func kindOf(name string) string {
	switch name {
	case event.BucketIdle.String():
		return KindIdle
	case event.BucketKernel.String(), event.BucketStart.String(), event.BucketRelease.String(), event.BucketOverflow.String():
		return KindProcess
	}
	return KindBackground
}

func add(a, b event.Counters) event.Counters {
	for i := range a.RSS {
		a.RSS[i] += b.RSS[i]
	}
	a.Faults += b.Faults
	a.Mapped += b.Mapped
	a.Unmapped += b.Unmapped
	a.MadeWritable += b.MadeWritable
	a.AdvisedFree += b.AdvisedFree
	a.External += b.External
	a.Retained += b.Retained
	a.RetainedNative += b.RetainedNative
	a.RetainedHeap += b.RetainedHeap
	a.ABAlloc += b.ABAlloc
	a.ABFreed += b.ABFreed
	a.Comm = ""
	a.Created = 0
	return a
}

// Bucket is one named account in a Summary.
type Bucket struct {
	Name string
	PID  uint32
	event.Counters
}

// Summary is the account's state at its latest snapshot.
type Summary struct {
	Start, End time.Time
	Main       *Process
	Processes  []Process
	// Baseline is the resident memory the kernel first reported for the
	// processes that existed at attach (0 for `run`).
	Baseline event.Counters
	// Growth sums every bucket: the change of resident memory since
	// attach, per member, with faults and mapping totals.
	Growth event.Counters
	// ExitRelease is the main target's own teardown once it exited:
	// reported apart, so Growth says how it stood just before exit.
	ExitRelease event.Counters
	Buckets     []Bucket // by resident growth, largest first; ops summed per category
	// Categories holds every account of growth: op categories and the
	// non-op buckets (idle, background threads, kernel…), largest first.
	// They sum to Growth.
	Categories []CategorySummary
	// Verdict names the category that keeps memory, or says none does.
	Verdict Verdict
	// Culprit and CulpritShare repeat Verdict.Culprit and Verdict.Share;
	// CulpritBy is "retained" when there is a culprit.
	Culprit      string
	CulpritShare float64
	CulpritBy    string
	// GrewMost is the op category with the largest resident growth (who
	// grew the process, which is not who keeps memory), and its share of
	// the growth of the op categories that grew.
	GrewMost      string
	GrewMostShare float64
	// Sampling says which runtime samplers were joined with the ops.
	Sampling []event.Sampling
	// HeapSamplesDropped counts runtime samples not followed (table full).
	HeapSamplesDropped int
	// ExternalMode is "estimated" (native-allocator mappings) or "exact"
	// (ArrayBuffer allocator uprobes).
	ExternalMode string
	// ExternalLive is, in exact mode, the ArrayBuffer bytes live in the
	// traced processes now (allocated minus freed, whoever allocated).
	ExternalLive int64
	OpsEvicted   int  // open ops ended early because their table was full
	TLSSeen      bool // a served socket carried TLS
	// Timeline is the growth over time, one point per snapshot (thinned
	// evenly to a bounded number).
	Timeline []TimelinePoint
	// Markers are thresholds crossed, dumps and OOM kills, in order.
	Markers   []event.Marker
	Current   int64 // resident memory of all traced processes, as last reported
	GroupPeak int64 // highest resident memory of all traced processes together
	Stats     event.Stats
	Snapshots int
}

// Unattributed is the growth the buckets do not explain: Current minus
// baseline minus growth minus exit release. Zero unless kernel tables
// overflowed or charges raced a snapshot.
func (s *Summary) Unattributed() int64 {
	return s.Current - s.Baseline.Resident() - s.Growth.Resident() - s.ExitRelease.Resident()
}

// Summary computes the accounts as of the latest snapshot.
func (a *Account) Summary() *Summary {
	s := a.summaryNoTimeline()
	s.Timeline = slices.Clone(a.tl.points)
	s.Markers = slices.Clone(a.markers)
	return s
}

func (a *Account) summaryNoTimeline() *Summary {
	s := &Summary{Start: a.start, Snapshots: a.seq}
	if a.last != nil {
		s.End = a.last.Time
		s.Current, s.GroupPeak, s.Stats = a.last.Total, a.last.Peak, a.last.Stats
	}
	byName := map[nameKey]event.Counters{}
	for k, c := range a.retired {
		byName[k] = add(byName[k], c)
	}
	for k, c := range a.live {
		nk := nameKey{k.PID, bucketName(k, c)}
		byName[nk] = add(byName[nk], c)
	}
	mainExited := a.procs[a.main].Exited
	s.OpsEvicted, s.TLSSeen = a.evicted, a.tlsSeen
	s.ExternalMode = "estimated"
	if a.opts.ExactExternal {
		s.ExternalMode = "exact"
		s.ExternalLive = a.abLive
	}
	opCats := a.opCategories()
	for _, cs := range opCats {
		s.Growth = add(s.Growth, cs.Counters)
		for pid, c := range cs.PerPID {
			if c != (event.Counters{}) {
				s.Buckets = append(s.Buckets, Bucket{Name: cs.Name, PID: pid, Counters: c})
			}
		}
	}
	nonOp := map[string]*CategorySummary{}
	for nk, c := range byName {
		switch {
		case nk.Name == event.BucketBaseline.String():
			s.Baseline = add(s.Baseline, c)
			continue
		case nk.Name == event.BucketRelease.String() && nk.PID == a.main && mainExited:
			s.ExitRelease = add(s.ExitRelease, c)
			continue
		}
		s.Growth = add(s.Growth, c)
		if c == (event.Counters{}) {
			continue
		}
		s.Buckets = append(s.Buckets, Bucket{Name: nk.Name, PID: nk.PID, Counters: c})
		cs := nonOp[nk.Name]
		if cs == nil {
			cs = &CategorySummary{Name: nk.Name, Kind: kindOf(nk.Name)}
			nonOp[nk.Name] = cs
		}
		cs.Counters = add(cs.Counters, c)
	}
	s.Categories = opCats
	for _, cs := range nonOp {
		s.Categories = append(s.Categories, *cs)
	}
	slices.SortFunc(s.Categories, func(x, y CategorySummary) int {
		return cmp.Or(cmp.Compare(y.Resident(), x.Resident()), cmp.Compare(x.Name, y.Name))
	})
	a.verdict(s)
	s.Culprit, s.CulpritShare, s.CulpritBy = s.Verdict.Culprit, s.Verdict.Share, "retained"
	if s.Culprit == "" {
		s.CulpritBy = ""
	}
	s.GrewMost, s.GrewMostShare, _ = culprit(s.Categories, false)
	s.Sampling = a.samplingStatus()
	s.HeapSamplesDropped = a.heap.dropped
	slices.SortFunc(s.Buckets, func(x, y Bucket) int {
		return cmp.Or(cmp.Compare(y.Resident(), x.Resident()), cmp.Compare(x.Name, y.Name), cmp.Compare(x.PID, y.PID))
	})
	for _, pid := range a.order {
		s.Processes = append(s.Processes, *a.procs[pid])
	}
	m := *a.procs[a.main]
	s.Main = &m
	return s
}
