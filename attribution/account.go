package attribution

import (
	"cmp"
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
	PID      uint32
	Parent   uint32 // 0 for a target given by the user
	Comm     string
	Exe      string // last exec'd file, when seen
	Exited   bool
	ExitCode int32
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
		main:    main,
		procs:   map[uint32]*Process{},
		live:    map[event.BucketKey]event.Counters{},
		retired: map[nameKey]event.Counters{},
		exited:  map[event.BucketKey]int{},
		parents: map[uint32]uint32{},
		folded:  map[event.BucketKey]event.Counters{},
		start:   start,
	}
	a.process(main)
	return a
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
		// a process of its own in a snapshot.
		a.parents[e.Child] = e.PID
	case *event.Exec:
		p := a.process(e.PID)
		p.Exe = e.Filename
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
	for _, pm := range s.Processes {
		p := a.process(pm.PID)
		p.Peak = max(p.Peak, pm.Peak)
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
	for _, b := range s.Buckets {
		if prev, ok := a.folded[b.Key]; ok {
			// Folded, but the kernel still has it (a delete failed or a
			// late charge raced it): only what came since counts.
			if b.Counters == prev {
				continue
			}
			b.Counters = sub(b.Counters, prev)
			delete(a.folded, b.Key)
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
		p.exitedSeq = -1 // folded
		a.deadPIDs = append(a.deadPIDs, pid)
	}
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
	return a
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
	a.Comm = ""
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
	Buckets     []Bucket // by resident growth, largest first
	Current     int64    // resident memory of all traced processes, as last reported
	GroupPeak   int64    // highest resident memory of all traced processes together
	Stats       event.Stats
	Snapshots   int
}

// Unattributed is the growth the buckets do not explain: Current minus
// baseline minus growth minus exit release. Zero unless kernel tables
// overflowed or charges raced a snapshot.
func (s *Summary) Unattributed() int64 {
	return s.Current - s.Baseline.Resident() - s.Growth.Resident() - s.ExitRelease.Resident()
}

// Summary computes the accounts as of the latest snapshot.
func (a *Account) Summary() *Summary {
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
	}
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
