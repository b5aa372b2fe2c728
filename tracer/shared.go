package tracer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/memdiag/memdiag/event"
)

// Shared is one loaded tracer serving several targets at once: fleet
// mode's, one per node whatever the number of containers. It follows a
// parent cgroup (Config.Cgroup: the node's pods cgroup), so every process
// that execs below it is traced from its exec, before userspace knows
// whose it is. Each exec record carries the cgroup id of the process,
// and a router routes every record to the View of that cgroup (a
// container being traced), or keeps it with the cgroup's pending records
// until userspace decides: NewView takes them (the container is selected:
// traced from its first exec), Drop frees them and the processes' kernel
// state (not selected, or never named). A View also owns the cgroups below
// its own (found at NewView and at each Nest). Children follow their
// parent's route; records of a process routed nowhere are discarded.
//
// Memory: the kernel's maps are the one tracer's (their sizes do not grow
// with the number of targets); userspace holds per View a channel of
// QueueLen records and one batch of a pending cgroup's, and the pids it
// routes; per pending cgroup at most MaxPendingEvents records (MaxPending
// cgroups).
type Shared struct {
	t *Tracer
	// unknown is called, on the router's goroutine, when a process execs
	// in a cgroup with no View.
	unknown func(cgroup uint64)

	mu       sync.Mutex
	views    map[uint64]*View          // by cgroup id
	routes   map[uint32]any            // pid or tid -> *View or *pendingCgroup
	pending  map[uint64]*pendingCgroup // by cgroup id
	execCg   map[uint32]uint64         // pid -> cgroup id of its exec record, until routed
	stops    []*View                   // views stopping: closed once their records are routed
	ignored  map[uint64]bool           // the kernel's ignored_cgroups, mirrored
	dropped  uint64                    // records routed nowhere (processes dropped or not followed)
	overflow uint64                    // records a pending cgroup had no room for

	snapMu sync.Mutex
	snap   *event.Snapshot
	snapAt time.Time

	routerDone chan struct{}
}

// Bounds of what a Shared keeps for cgroups no View has claimed yet.
const (
	// MaxPending is how many unclaimed cgroups are followed at once;
	// processes exec'ing in more are dropped at once.
	MaxPending = 64
	// MaxPendingEvents is how many records one unclaimed cgroup keeps.
	MaxPendingEvents = 4096
)

// pendingCgroup holds the records of processes traced from their exec in
// a cgroup no View has claimed yet.
type pendingCgroup struct {
	cgroup uint64
	since  time.Time
	pids   map[uint32]bool
	events []event.Event
	freed  []event.Bucket
}

// ringEmpty is the reader's mark, in shared mode, that the ring buffer was
// empty at at (the tracer's clock): every record made before is behind it
// in the channel.
type ringEmpty struct{ at time.Time }

func (r ringEmpty) When() time.Time { return r.at }

// OpenShared loads one tracer for every target; cfg.Cgroup is the parent
// cgroup whose new processes are traced from their exec. unknown, when not
// nil, is called when a process execs in a cgroup no View claims (a
// caller that wants it resolved soon wakes its discovery); it must not
// block.
func OpenShared(cfg Config, unknown func(cgroup uint64)) (*Shared, error) {
	if cfg.Cgroup == "" {
		return nil, errors.New("a shared tracer needs the parent cgroup whose processes it follows")
	}
	s := &Shared{unknown: unknown, views: map[uint64]*View{}, routes: map[uint32]any{}, pending: map[uint64]*pendingCgroup{},
		execCg: map[uint32]uint64{}, ignored: map[uint64]bool{}, routerDone: make(chan struct{})}
	t, err := open(cfg, s.sawExec)
	if err != nil {
		return nil, err
	}
	s.t = t
	go s.route()
	return s, nil
}

// Tracer is the one tracer (its uprobes, stacks and stats).
func (s *Shared) Tracer() *Tracer { return s.t }

// CgroupID is the id the kernel gives the cgroup v2 directory dir (its
// inode number), as exec records carry it.
func CgroupID(dir string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return 0, fmt.Errorf("reading cgroup %s: %w", dir, err)
	}
	return st.Ino, nil
}

// sawExec is called by the reader before an exec record goes out.
func (s *Shared) sawExec(pid uint32, cgroup uint64) {
	s.mu.Lock()
	s.execCg[pid] = cgroup
	s.mu.Unlock()
}

// route moves every record of the tracer to its View or pending cgroup,
// until the tracer's channel closes; then it closes every View's. Each
// View gets a batch's records for it in one batch, sent when the batch is
// routed, or at once while a View is stopping (before its channel may
// close).
func (s *Shared) route() {
	defer close(s.routerDone)
	out := map[*View]*event.Batch{} // the records routed to each View, not sent yet
	for b := range s.t.events {
		var at time.Time
		for _, ev := range b.Events {
			if m, ok := ev.(ringEmpty); ok {
				s.sendRouted(out)
				s.closeStopped(m.at)
				continue
			}
			at = ev.When() // once sent, ev is the view's (event.Recycle)
			if v := s.dest(ev); v != nil {
				o := out[v]
				if o == nil {
					o = event.NewBatch()
					out[v] = o
				}
				o.Events = append(o.Events, ev)
			}
			if s.t.wantMarks.Load() { // a View is stopping
				s.sendRouted(out)
				s.closeStopped(at)
			}
		}
		b.Release()
		s.sendRouted(out)
		if !at.IsZero() {
			s.closeStopped(at)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range s.views {
		v.end()
	}
	for _, v := range s.stops {
		v.end()
	}
	s.views, s.stops = map[uint64]*View{}, nil
}

// sendRouted sends each View the records routed to it (the router only
// ends a View, so none was ended since).
func (s *Shared) sendRouted(out map[*View]*event.Batch) {
	for v, b := range out {
		v.ch <- b
		delete(out, v)
	}
}

// dest finds where ev goes: a View (returned, to be sent outside the
// lock), a pending cgroup (kept here), or nowhere.
func (s *Shared) dest(ev event.Event) *View {
	s.mu.Lock()
	defer s.mu.Unlock()
	pid, tid := header(ev)
	r := s.routes[pid]
	switch e := ev.(type) {
	case *event.Exec:
		cg, ok := s.execCg[pid]
		delete(s.execCg, pid)
		if r == nil && ok {
			if v := s.views[cg]; v != nil {
				r = v
				v.pids[pid] = true
			} else if p := s.pendingOf(cg); p != nil && len(p.pids) < MaxPendingEvents {
				r = p
				p.pids[pid] = true
				if s.unknown != nil {
					s.unknown(cg)
				}
			}
			if r == nil {
				s.dropLocked([]uint32{pid})
			} else {
				s.routes[pid] = r
			}
		}
	case *event.Fork:
		switch d := r.(type) {
		case *View:
			s.routes[e.Child] = r
			d.pids[e.Child] = true
		case *pendingCgroup:
			if len(d.pids) >= MaxPendingEvents {
				s.dropLocked([]uint32{e.Child}) // bounded: not followed
				break
			}
			s.routes[e.Child] = r
			d.pids[e.Child] = true
		}
	case *event.Exit:
		if tid != pid {
			// A thread (a fork record named it like a child): forgotten
			// whole, so thread churn does not grow the sets.
			delete(s.routes, tid)
			switch d := r.(type) {
			case *View:
				delete(d.pids, tid)
			case *pendingCgroup:
				delete(d.pids, tid)
			}
		}
		if e.GroupDead {
			delete(s.routes, pid)
		}
	}
	switch d := r.(type) {
	case *View:
		if d.ended {
			// Stopped, not closed yet: its channel is closed.
			s.dropped++
			return nil
		}
		d.lastRouted = time.Now()
		return d
	case *pendingCgroup:
		if len(d.events) >= MaxPendingEvents {
			s.overflow++
			return nil
		}
		d.events = append(d.events, ev)
		return nil
	}
	s.dropped++
	return nil
}

// pendingOf returns cgroup's pending entry, making it; nil when the
// cgroup is ignored or MaxPending are followed already.
func (s *Shared) pendingOf(cg uint64) *pendingCgroup {
	if p := s.pending[cg]; p != nil {
		return p
	}
	if s.ignored[cg] || len(s.pending) >= MaxPending {
		return nil
	}
	p := &pendingCgroup{cgroup: cg, since: time.Now(), pids: map[uint32]bool{}}
	s.pending[cg] = p
	return p
}

// header returns the process and thread of a record (0 for the ones of no
// process: snapshots, the reader's marks).
func header(ev event.Event) (pid, tid uint32) {
	if h, ok := ev.(interface{ Proc() (uint32, uint32) }); ok {
		return h.Proc()
	}
	return 0, 0
}

// closeStopped closes the channels of stopping views whose records are
// all routed: a record made at or after the view began stopping was
// routed (records come in the order they were reserved), or the reader
// found the ring empty after it (the reader marks those moments only while
// a View is stopping). Both times are the tracer's clock's
// (kernel time mapped to wall time as records are).
func (s *Shared) closeStopped(routed time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.stops) == 0 {
		return
	}
	keep := s.stops[:0]
	for _, v := range s.stops {
		if !routed.Before(v.stopAt) {
			v.end()
			continue
		}
		keep = append(keep, v)
	}
	s.stops = keep
	if len(keep) == 0 {
		s.t.wantMarks.Store(false) // idle: no wakeup for nobody
	}
}

// NewView claims the cgroup dir (a container): the records of processes
// already traced from their exec there are its first, pids (its processes
// running now) are traced from here, and every process that execs there
// from now on is its. fromExec lists the pids of pids that were traced
// from their exec already (none of their memory is a baseline).
func (s *Shared) NewView(dir string, pids []int) (v *View, fromExec []int, err error) {
	cg, err := CgroupID(dir)
	if err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.views[cg] != nil {
		return nil, nil, fmt.Errorf("cgroup %s is traced already", dir)
	}
	if s.ignored[cg] {
		if err := s.t.objs.IgnoredCgroups.Delete(&cg); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil, nil, fmt.Errorf("following cgroup %s again: %w", dir, err)
		}
		delete(s.ignored, cg)
	}
	v = &View{s: s, cgroup: cg, dir: dir, pids: map[uint32]bool{}, stopped: make(chan struct{})}
	p := s.pending[cg]
	v.ch = make(chan *event.Batch, cap(s.t.events)+1) // +1: the pending records
	if p != nil {
		s.adoptLocked(v, p)
	}
	for _, pid := range pids {
		key := uint32(pid)
		var tgt memdiagTarget
		if v.pids[key] || s.t.objs.Targets.Lookup(&key, &tgt) == nil {
			// Traced from its exec (or fork) already, its record maybe
			// not read yet: the router sends its records here now.
			fromExec = append(fromExec, pid)
			v.pids[key] = true
			s.routes[key] = v
			continue
		}
		if err := s.t.AddTarget(pid); err != nil {
			s.dropLocked(keys(v.pids))
			for pid := range v.pids {
				delete(s.routes, pid)
			}
			return nil, nil, err
		}
		v.pids[uint32(pid)] = true
		s.routes[uint32(pid)] = v
	}
	s.views[cg] = v
	s.nestLocked(v)
	return v, fromExec, nil
}

// Nest gives every View the cgroups made below its own since it was
// claimed (or since the last Nest): a process that execs in one is the
// View's, and one pending there is adopted (its records sent to the View
// when its channel has room for them, else dropped and counted).
func (s *Shared) Nest() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, v := range s.views {
		if id == v.cgroup {
			s.nestLocked(v)
		}
	}
}

// nestLocked claims for v the cgroups below its directory (s.mu held).
func (s *Shared) nestLocked(v *View) {
	filepath.WalkDir(v.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() || path == v.dir {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok || s.views[st.Ino] != nil {
			return nil
		}
		s.views[st.Ino] = v
		if p := s.pending[st.Ino]; p != nil {
			s.adoptLocked(v, p)
		}
		return nil
	})
}

// adoptLocked moves a pending cgroup's records and processes to v (s.mu
// held): its records precede any later one of its processes, which the
// router sends to v from now on.
func (s *Shared) adoptLocked(v *View, p *pendingCgroup) {
	delete(s.pending, p.cgroup)
	if len(p.events) > 0 {
		if len(v.ch) == cap(v.ch) {
			s.overflow += uint64(len(p.events))
		} else {
			b := event.NewBatch()
			b.Events = append(b.Events, p.events...)
			v.ch <- b
		}
	}
	for pid := range p.pids {
		v.pids[pid] = true
		s.routes[pid] = v
	}
	v.freed = append(v.freed, p.freed...)
}

// Pending lists the cgroups whose processes are traced from their exec
// but that no View claimed yet, with when the first exec was seen.
func (s *Shared) Pending() map[uint64]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[uint64]time.Time, len(s.pending))
	for cg, p := range s.pending {
		out[cg] = p.since
	}
	return out
}

// Drop stops following the processes of an unclaimed cgroup: their
// records are discarded, their kernel state freed. Later execs there are
// followed again (unless the cgroup is ignored).
func (s *Shared) Drop(cgroup uint64) (processes int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropPending(cgroup)
}

// dropPending drops a pending cgroup, returning how many processes it
// followed (s.mu held).
func (s *Shared) dropPending(cg uint64) (int, error) {
	p := s.pending[cg]
	if p == nil {
		return 0, nil
	}
	delete(s.pending, cg)
	for pid := range p.pids {
		delete(s.routes, pid)
	}
	return len(p.pids), s.dropLocked(keys(p.pids))
}

// SetIgnored makes the cgroups ids (containers the selector does not pick)
// the ones whose execs make no target, and drops what is pending there;
// it returns how many processes it dropped.
func (s *Shared) SetIgnored(ids []uint64) (dropped int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	want := map[uint64]bool{}
	var errs []error
	one := uint8(1)
	for _, cg := range ids {
		if s.views[cg] != nil {
			continue
		}
		want[cg] = true
		if !s.ignored[cg] {
			if err := s.t.objs.IgnoredCgroups.Update(&cg, &one, ebpf.UpdateAny); err != nil {
				errs = append(errs, fmt.Errorf("ignoring cgroup %d: %w", cg, err))
				continue
			}
			s.ignored[cg] = true
		}
		n, err := s.dropPending(cg)
		dropped += n
		errs = append(errs, err)
	}
	for cg := range s.ignored {
		if !want[cg] {
			if err := s.t.objs.IgnoredCgroups.Delete(&cg); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				errs = append(errs, fmt.Errorf("forgetting ignored cgroup %d: %w", cg, err))
			}
			delete(s.ignored, cg)
		}
	}
	return dropped, errors.Join(errs...)
}

// Counts is what a Shared holds now, for its bound and its tests.
type Counts struct {
	Views, Pending, Routes, Ignored int
	Dropped, Overflow               uint64 // records routed nowhere, records a pending cgroup had no room for
	Targets, Buckets                int    // entries of the kernel's targets and buckets maps (buckets: with the held op slots)
}

// Counts counts the routes and the kernel's entries.
func (s *Shared) Counts() Counts {
	s.mu.Lock()
	views := 0
	for id, v := range s.views {
		if id == v.cgroup {
			views++
		}
	}
	c := Counts{Views: views, Pending: len(s.pending), Routes: len(s.routes), Ignored: len(s.ignored), Dropped: s.dropped, Overflow: s.overflow}
	s.mu.Unlock()
	c.Targets = countEntries(s.t.objs.Targets)
	c.Buckets = countEntries(s.t.objs.Buckets)
	_ = s.t.heldOpSlots(func(*memdiagOpSlot) { c.Buckets++ })
	return c
}

func countEntries(m *ebpf.Map) int {
	var k []byte
	n := 0
	it := m.Iterate()
	var v []byte
	for it.Next(&k, &v) {
		n++
	}
	return n
}

// Close stops and frees the tracer; every View's channel closes once
// its records are routed.
func (s *Shared) Close() error {
	err := s.t.Close()
	<-s.routerDone
	return err
}

// dropLocked frees the kernel state of processes that are no target of
// anyone's any more (s.mu held).
func (s *Shared) dropLocked(pids []uint32) error {
	if len(pids) == 0 {
		return nil
	}
	return s.t.DropProcesses(pids)
}

// DropProcesses stops tracing live or dead processes and deletes their
// kernel state: their entries (and their threads') in targets and the
// per-thread maps, their buckets, mms, regions, libc range, sockets and
// bit.
func (t *Tracer) DropProcesses(pids []uint32) error {
	set := map[uint32]bool{}
	var errs []error
	del := func(m *ebpf.Map, k any) {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, err)
		}
	}
	for _, pid := range pids {
		set[pid] = true
		tids := []uint32{pid}
		if ents, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(int(pid)), "task")); err == nil {
			for _, e := range ents {
				if n, err := strconv.Atoi(e.Name()); err == nil && uint32(n) != pid {
					tids = append(tids, uint32(n))
				}
			}
		}
		for _, tid := range tids {
			del(t.objs.Targets, &tid)
			// thread_states and pending are task storage: the kernel frees
			// a thread's with the thread.
		}
		del(t.objs.LibcRanges, &pid)
	}
	errs = append(errs,
		// The mms before the buckets: an RSS change of a known mm charges
		// its process without looking the target up, so until its mm state
		// goes a live process would make buckets after the sweep below.
		deleteWhere(t.objs.MmStates, "mm states", func(_ uint64, st memdiagMmState) bool { return set[st.Tgid] }),
		deleteWhere(t.objs.Buckets, "buckets", func(k memdiagBucketKey, _ memdiagCounters) bool {
			return set[k.Tgid] && k.Kind != uint32(event.BucketOverflow)
		}),
		deleteWhere(t.objs.Sockets, "sockets", func(k memdiagSockKey, _ memdiagSockInfo) bool { return set[k.Tgid] }),
		t.freeOpSlots(func(o *memdiagOpSlot) bool { return set[o.Tgid] }))
	if err := t.Forget(nil, pids); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("dropping processes %v: %w", pids, err)
	}
	return nil
}

// snapshot returns a snapshot of every target taken after v's last routed
// record (one read serves every View flushing within 250 ms; a stopping
// View's final one is always fresh); the freed
// buckets it takes go to their View's (or pending cgroup's) queue.
func (s *Shared) snapshot(v *View) (*event.Snapshot, error) {
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	s.mu.Lock()
	last, final := v.lastRouted, v.stopping
	s.mu.Unlock()
	if !final && s.snap != nil && s.snapAt.After(last) && time.Since(s.snapAt) < 250*time.Millisecond {
		return s.snap, nil
	}
	at := time.Now()
	snap, err := s.t.Snapshot()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	for _, b := range snap.Freed {
		switch d := s.routes[b.Key.PID].(type) {
		case *View:
			d.freed = append(d.freed, b)
			continue
		case *pendingCgroup:
			d.freed = append(d.freed, b)
			continue
		}
		for _, w := range s.views {
			if w.pids[b.Key.PID] {
				w.freed = append(w.freed, b)
				break
			}
		}
	}
	s.mu.Unlock()
	snap.Freed = nil
	s.snap, s.snapAt = snap, at
	return snap, nil
}

// View is one target's share of a Shared tracer: a session.Tracer whose
// events, snapshots and state are those of its cgroup's processes.
type View struct {
	s          *Shared
	cgroup     uint64 // its directory's id; s.views also maps the ids of those below
	dir        string
	ch         chan *event.Batch
	pids       map[uint32]bool // processes routed here, until forgotten (s.mu)
	freed      []event.Bucket  // freed buckets taken by a snapshot, not yet given (s.mu)
	lastRouted time.Time       // when the router last sent here or Forget deleted: the next snapshot is read after (s.mu)
	peak       int64

	stopAt   time.Time
	stopping bool
	ended    bool // its channel is closed: nothing more is sent (s.mu)
	stopped  chan struct{}
	once     sync.Once
	closed   bool
}

// end closes the view's channel (router, s.mu held).
func (v *View) end() {
	v.once.Do(func() {
		v.ended = true
		close(v.ch)
		close(v.stopped)
	})
}

// Events implements session.Tracer.
func (v *View) Events() <-chan *event.Batch { return v.ch }

// Snapshot implements session.Tracer: the view's processes' buckets and
// memory; the group's total is theirs summed, its peak the highest total
// seen at a snapshot; stats are the shared tracer's.
func (v *View) Snapshot() (*event.Snapshot, error) {
	full, err := v.s.snapshot(v)
	if err != nil {
		return nil, err
	}
	out := &event.Snapshot{Time: full.Time, Stats: full.Stats}
	v.s.mu.Lock()
	for _, b := range full.Buckets {
		if v.pids[b.Key.PID] {
			out.Buckets = append(out.Buckets, b)
		}
	}
	for _, p := range full.Processes {
		if v.pids[p.PID] {
			out.Processes = append(out.Processes, p)
			out.Total += p.Current
		}
	}
	out.Freed, v.freed = v.freed, nil
	v.s.mu.Unlock()
	v.peak = max(v.peak, out.Total)
	out.Peak = v.peak
	return out, nil
}

// Forget implements session.Tracer; dead processes leave the view.
func (v *View) Forget(buckets []event.BucketKey, deadPIDs []uint32) error {
	err := v.s.t.Forget(buckets, deadPIDs)
	v.s.mu.Lock()
	for _, p := range deadPIDs {
		delete(v.pids, p)
	}
	// A snapshot read before would bring back what was just deleted.
	v.lastRouted = time.Now()
	v.s.mu.Unlock()
	return err
}

// ForgetOldImage implements session.Tracer.
func (v *View) ForgetOldImage(pid uint32) error { return v.s.t.ForgetOldImage(pid) }

// LearnProcess implements session.Tracer.
func (v *View) LearnProcess(pid int, seed bool) (bool, error) { return v.s.t.LearnProcess(pid, seed) }

// Stop implements session.Tracer: no new process is routed here, and the
// events channel closes once every record made before Stop is routed
// (the router sees the ring buffer empty after it).
func (v *View) Stop() error {
	s := v.s
	s.mu.Lock()
	if !v.stopping {
		v.stopping, v.stopAt = true, s.t.clock.Wall(monotonicNow())
		for id, w := range s.views {
			if w == v { // its own cgroup and those below
				delete(s.views, id)
			}
		}
		s.stops = append(s.stops, v)
		s.t.wantMarks.Store(true)
	}
	s.mu.Unlock()
	<-v.stopped
	return nil
}

// Close implements session.Tracer: the view's processes stop being traced
// and their kernel state is freed.
func (v *View) Close() error {
	v.Stop()
	s := v.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if v.closed {
		return nil
	}
	v.closed = true
	var pids []uint32
	for pid, r := range s.routes {
		if r == v {
			delete(s.routes, pid)
			pids = append(pids, pid)
		}
	}
	for pid := range v.pids {
		if r, ok := s.routes[pid]; ok && r != any(v) {
			continue // claimed since by a new View of the same cgroup
		}
		pids = append(pids, pid)
	}
	v.pids = map[uint32]bool{}
	return s.dropLocked(pids)
}

func keys(m map[uint32]bool) []uint32 {
	out := make([]uint32, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// monotonicNow is CLOCK_MONOTONIC, the kernel time records carry.
func monotonicNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}
