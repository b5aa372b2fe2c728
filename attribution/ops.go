package attribution

import (
	"cmp"
	"slices"
	"sort"
	"time"

	"github.com/memdiag/memdiag/event"
)

// Options tune the account's handling of operations.
type Options struct {
	Categorizer *Categorizer
	// KeepOps is how many recent ops each category keeps (default 100).
	KeepOps int
	// GrowthRSS, GrowthExternal: an op (or cycle) whose RSS or external
	// growth reaches them is noticed (a [GROWTH] line); 0 disables.
	GrowthRSS      int64
	GrowthExternal int64
	// MaxCategories bounds the category table; ops beyond it go to
	// "other (too many categories)". Default 1000.
	MaxCategories int
	// MaxOpenOps bounds the table of ops still open; the oldest is ended
	// when it is full. Default 65536.
	MaxOpenOps int
	// StaleOp ends an op whose counters did not move for this long (its
	// end record was lost). Default 5 minutes.
	StaleOp time.Duration
	// ExactExternal says external bytes come from the ArrayBuffer
	// allocator uprobes (--exact-external).
	ExactExternal bool
	// NativeHeap says the same table follows libc's allocator
	// (--native-heap): ABAlloc and ABFreed are native heap bytes.
	NativeHeap bool
}

func (o *Options) defaults() {
	if o.Categorizer == nil {
		o.Categorizer = NewCategorizer(nil)
	}
	if o.KeepOps <= 0 {
		o.KeepOps = 100
	}
	if o.MaxCategories <= 0 {
		o.MaxCategories = 1000
	}
	if o.MaxOpenOps <= 0 {
		o.MaxOpenOps = 65536
	}
	if o.StaleOp <= 0 {
		o.StaleOp = 5 * time.Minute
	}
}

// OpRecord is one finished op (or cycle) as reports list it.
type OpRecord struct {
	Name     string
	Detail   string
	PID      uint32
	Begin    time.Time
	End      time.Time
	Ops      int // ops in a cycle; 1 otherwise
	Counters event.Counters
}

// Notice is an op (or cycle) that grew past the threshold.
type Notice struct {
	Category string
	Exact    bool // external bytes are the exact ArrayBuffer counts
	OpRecord
}

// unit is what a category counts: one op, or one cycle of ops.
type unit struct {
	rec     OpRecord
	open    int       // member ops still open
	last    time.Time // latest begin or end of a member
	pending bool      // a cycle still accepting members
}

// category accumulates the ops of one name.
type category struct {
	name, kind string
	gap        time.Duration
	ops        int
	done       event.Counters            // finished ops' counters
	perPID     map[uint32]event.Counters // finished ops' counters per process
	recent     []OpRecord                // ring of the last KeepOps units
	next       int                       // ring position
	top        []OpRecord                // largest units by resident growth, at most 3
	cycle      *unit                     // the cycle being gathered
}

// maxPerPID bounds a category's per-process accounts; more go to pid 0.
const maxPerPID = 256

// pidKey is the key a process's account has in perPID.
func (c *category) pidKey(pid uint32) uint32 {
	if _, ok := c.perPID[pid]; ok || len(c.perPID) < maxPerPID {
		return pid
	}
	return 0
}

// op is an operation still open.
type op struct {
	id    uint64
	pid   uint32
	fd    int32 // the socket it began on
	cat   *category
	unit  *unit          // own, or the cycle it is part of
	own   unit           // its unit when it begins one: a cycle's first op holds the cycle
	live  event.Counters // provisional, from snapshots
	moved time.Time      // when live last changed
	// superseded: its socket began another op, so the kernel ended this
	// one and its end record was lost (the ring buffer was full). The
	// next snapshot's read of its bucket is final.
	superseded bool
}

// sockKey is a socket of a traced process.
type sockKey struct {
	pid uint32
	fd  int32
}

const topOps = 3

// orphanAfter is how many snapshots an op bucket may precede its begin
// record before the begin counts as lost.
const orphanAfter = 3

// orphan is an op bucket whose begin has not been seen (yet).
type orphan struct {
	seq  int // snapshot it was first seen in
	pid  uint32
	live event.Counters
}

func (a *Account) categoryFor(n Naming) *category {
	c, ok := a.cats[n.Category]
	if !ok {
		if len(a.cats) >= a.opts.MaxCategories {
			n = Naming{Category: "other (too many categories)", Kind: n.Kind}
			if c, ok = a.cats[n.Category]; ok {
				return c
			}
		}
		c = &category{name: n.Category, kind: n.Kind, gap: n.CycleGap, perPID: map[uint32]event.Counters{}}
		a.cats[n.Category] = c
	}
	return c
}

func (a *Account) opBegin(b *event.OpBegin) {
	if _, dup := a.open[b.OpID]; dup {
		return
	}
	delete(a.orphans, b.OpID)
	// The kernel ends a socket's op before it begins the next one there,
	// in that order in the ring buffer: an op still open on this socket
	// lost its end record. Without this it stayed open, its bucket in the
	// kernel, until StaleOp (5 minutes): a storm that lost 16,384 ends
	// filled the bucket table, and every later op got no bucket and made
	// no record at all (BENCHMARKS.md, "Record storms"). (An fd closed by
	// its op's own callback ends that op at the thread's next poll; should
	// the fd be reused before, and a snapshot come between, the op ends
	// at that snapshot and what it charges until the poll is idle's:
	// totals conserve.)
	sock := sockKey{b.PID, b.FD}
	if prev, ok := a.sockOps[sock]; ok {
		if p := a.open[prev]; p != nil {
			p.superseded = true
		}
	}
	a.sockOps[sock] = b.OpID
	if len(a.open) >= a.opts.MaxOpenOps {
		a.endOldest(b.Time)
	}
	n := a.opts.Categorizer.Categorize(b)
	c := a.categoryFor(n)
	o := a.newOp()
	o.id, o.pid, o.fd, o.cat, o.moved = b.OpID, b.PID, b.FD, c, b.Time
	rec := OpRecord{Name: n.Name, Detail: n.Detail, PID: b.PID, Begin: b.Time, Ops: 1}
	switch {
	case c.gap > 0 && c.cycle != nil && b.Time.Sub(c.cycle.last) < c.gap:
		o.unit = c.cycle // part of the cycle under way
		o.unit.rec.Ops++
	default:
		if c.cycle != nil {
			a.closeCycle(c)
		}
		c.ops++
		o.own = unit{rec: rec, pending: c.gap > 0}
		o.unit = &o.own
		if c.gap > 0 {
			c.cycle = o.unit
		}
	}
	o.unit.open++
	o.unit.last = b.Time
	a.open[b.OpID] = o
	a.claim(b.OpID, c)
}

// opEnd finishes an op with its final counters (or its last snapshot's).
func (a *Account) opEnd(id uint64, at time.Time, final *event.Counters) {
	o, ok := a.open[id]
	if !ok {
		if final != nil && !a.isEnded(id) {
			// Its begin was lost: count it as unknown.
			o = &op{id: id, cat: a.categoryFor(Naming{Category: "unknown", Kind: KindUnknown}), moved: at}
			o.cat.ops++
			o.unit = &unit{rec: OpRecord{Name: "unknown (begin lost)", Begin: at, Ops: 1}, open: 1}
		} else {
			return
		}
	}
	c := o.live
	if final != nil {
		c = *final
	}
	delete(a.open, id)
	delete(a.orphans, id)
	if sock := (sockKey{o.pid, o.fd}); a.sockOps[sock] == id {
		delete(a.sockOps, sock)
	}
	a.markEnded(id)
	if c.Mapped > 0 || c.ABAlloc > 0 || c.Retained != 0 {
		a.rememberOwner(id, o.cat)
	}
	cat := o.cat
	cat.charge(o.pid, c)
	u := o.unit
	u.rec.Counters = add(u.rec.Counters, c)
	u.open--
	if at.After(u.last) {
		u.last = at
	}
	if at.After(u.rec.End) {
		u.rec.End = at
	}
	if u.open == 0 && !u.pending {
		a.record(cat, u)
	}
	a.release(o)
}

// maxSpareOps bounds the ended ops kept for reuse.
const maxSpareOps = 64

// newOp returns a zeroed op, reusing one that ended: ops begin and end
// ~100k times a second under a busy server, and their allocation was a
// fifth of memdiag's bytes allocated (issue #15).
func (a *Account) newOp() *op {
	n := len(a.spare)
	if n == 0 {
		return &op{}
	}
	o := a.spare[n-1]
	a.spare = a.spare[:n-1]
	return o
}

// release keeps an ended op for reuse unless its unit is a cycle that
// still gathers ops or waits for some to end (they point at it).
func (a *Account) release(o *op) {
	if o.unit == &o.own && (o.own.open > 0 || o.own.pending) || len(a.spare) >= maxSpareOps {
		return
	}
	*o = op{}
	a.spare = append(a.spare, o)
}

// endedBlock is 64 consecutive op ids' ends: the kernel numbers ops in
// sequence, so ends fill blocks densely, and a block is one map entry
// where an id was one (a storm of 150k ops a second kept ~450k entries,
// and inserting them was a tenth of memdiag's CPU).
type endedBlock struct {
	bits uint64 // bit id%64 set: that op ended
	seq  int    // snapshot seq of the block's latest end
}

// markEnded remembers that op id ended (at this snapshot seq).
func (a *Account) markEnded(id uint64) {
	b := a.ended[id/64]
	b.bits |= 1 << (id % 64)
	b.seq = a.seq
	a.ended[id/64] = b
}

func (a *Account) isEnded(id uint64) bool {
	return a.ended[id/64].bits&(1<<(id%64)) != 0
}

// closeCycle ends the gathering of a category's cycle; it is recorded once
// its last member op has ended.
func (a *Account) closeCycle(c *category) {
	u := c.cycle
	c.cycle = nil
	u.pending = false
	if u.open == 0 {
		a.record(c, u)
	}
}

// record files a finished unit: recent ring, top list, growth notice.
func (a *Account) record(c *category, u *unit) {
	rec := u.rec
	if len(c.recent) < a.opts.KeepOps {
		c.recent = append(c.recent, rec)
	} else {
		c.recent[c.next] = rec
		c.next = (c.next + 1) % len(c.recent)
	}
	// The largest few, kept in order (a later unit after equal ones): most
	// units are no larger than the smallest of a full list and stop here.
	r := rec.Counters.Resident()
	if len(c.top) < topOps || r > c.top[len(c.top)-1].Counters.Resident() {
		i := sort.Search(len(c.top), func(i int) bool { return c.top[i].Counters.Resident() < r })
		c.top = slices.Insert(c.top, i, rec)
		if len(c.top) > topOps {
			c.top = c.top[:topOps]
		}
	}
	ext := rec.Counters.External
	if a.opts.ExactExternal {
		ext = int64(rec.Counters.ABAlloc) - int64(rec.Counters.ABFreed)
	}
	over := a.opts.GrowthRSS > 0 && rec.Counters.Resident() >= a.opts.GrowthRSS ||
		a.opts.GrowthExternal > 0 && ext >= a.opts.GrowthExternal
	if over && len(a.notices) < 1000 {
		a.notices = append(a.notices, Notice{Category: c.name, Exact: a.opts.ExactExternal, OpRecord: rec})
	}
	a.addTrend(c.name, pointOf(int64(c.ops), c.done))
}

// endOldest ends the op that began first, to make room.
func (a *Account) endOldest(at time.Time) {
	var oldest *op
	for _, o := range a.open {
		if oldest == nil || o.id < oldest.id {
			oldest = o
		}
	}
	if oldest != nil {
		a.evicted++
		a.opEnd(oldest.id, at, nil)
	}
}

// opSnapshot takes an op bucket's provisional counters; it returns the
// key when the op is stale (its end was lost) and should be dropped from
// the kernel.
func (a *Account) opSnapshot(b event.Bucket, now time.Time) {
	o, ok := a.open[b.Key.ID]
	if !ok {
		if a.isEnded(b.Key.ID) {
			return // read before the tracer took it at the op's end
		}
		// Its begin may still be on its way through the ring buffer;
		// after a few snapshots, it was lost: track it as unknown.
		orph, seen := a.orphans[b.Key.ID]
		if !seen {
			orph.seq = a.seq
		}
		orph.pid, orph.live = b.Key.PID, b.Counters
		a.orphans[b.Key.ID] = orph
		if a.seq-orph.seq < orphanAfter {
			return // counted as unknown, provisionally, until then
		}
		delete(a.orphans, b.Key.ID)
		c := a.categoryFor(Naming{Category: "unknown", Kind: KindUnknown})
		c.ops++
		o = &op{id: b.Key.ID, pid: b.Key.PID, cat: c, moved: now,
			unit: &unit{rec: OpRecord{Name: "unknown (begin lost)", PID: b.Key.PID, Begin: now, Ops: 1}, open: 1}}
		a.open[b.Key.ID] = o
	}
	if o.superseded {
		// Its end record was lost; nothing charges it any more (its
		// thread moved to the next op): this read is its final one.
		a.opEnd(o.id, now, &b.Counters)
		a.forget = append(a.forget, b.Key)
		return
	}
	if b.Counters != o.live {
		o.live, o.moved = b.Counters, now
		return
	}
	if now.Sub(o.moved) >= a.opts.StaleOp {
		a.opEnd(o.id, now, nil)
		a.forget = append(a.forget, b.Key)
	}
}

// endOpsOf ends every open op of an exited process.
func (a *Account) endOpsOf(pid uint32, at time.Time) {
	var ids []uint64
	for id, o := range a.open {
		if o.pid == pid {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		a.opEnd(id, at, nil)
	}
}

// pruneEnded forgets ended op ids old enough that no snapshot can still
// show them.
func (a *Account) pruneEnded() {
	for block, b := range a.ended {
		if a.seq-b.seq > retireAfter {
			delete(a.ended, block) // its last end is that old: so are the others
		}
	}
	for id, o := range a.orphans {
		if a.seq-o.seq > 2*orphanAfter {
			delete(a.orphans, id) // gone without a trace: taken at an end we applied
		}
	}
	for id, u := range a.unclaimed {
		if a.seq-u.seq > 2*orphanAfter {
			delete(a.unclaimed, id) // its begin was lost: it stays forgotten
		}
	}
}

// Notices returns, once, the ops that grew past the threshold since the
// last call.
func (a *Account) Notices() []Notice {
	n := a.notices
	a.notices = nil
	return n
}

// TLSSeen says whether a served socket carried TLS.
func (a *Account) TLSSeen() bool { return a.tlsSeen }

// CategorySummary is one category in a Summary.
type CategorySummary struct {
	Name string
	Kind string
	Ops  int // ops, or cycles for cycle categories
	event.Counters
	OpenOps int        // ops still open, counted with their latest counters
	Top     []OpRecord // largest ops (or cycles) by resident growth
	Recent  []OpRecord // the last KeepOps, oldest first
	PerPID  map[uint32]event.Counters
	// Retention is what the category's ops still keep (the verdict's
	// evidence; see verdict.go).
	Retention Retention
}

// RetainedBytes is what the category's ops made and is still there:
// mappings not unmapped, and (exact mode) ArrayBuffers not freed.
func (c *CategorySummary) RetainedBytes() int64 {
	return c.Retained + int64(c.ABAlloc) - int64(c.ABFreed)
}

// ExternalBytes is the category's external growth: in exact mode the
// ArrayBuffer bytes allocated and not freed, else the RSS growth of
// native-allocator mappings.
func (c *CategorySummary) ExternalBytes(exact bool) int64 {
	if exact {
		return int64(c.ABAlloc) - int64(c.ABFreed)
	}
	return c.External
}

// AvgResidentPerOp is the resident growth per op.
func (c *CategorySummary) AvgResidentPerOp() int64 {
	if c.Ops == 0 {
		return 0
	}
	return c.Resident() / int64(c.Ops)
}

// opCategories summarizes every op category, open ops included.
func (a *Account) opCategories() []CategorySummary {
	out := make([]CategorySummary, 0, len(a.cats))
	idx := map[string]int{}
	for _, c := range a.cats {
		if c.name == forgotten.Category && c.done == (event.Counters{}) {
			continue // every give-back in it was claimed
		}
		cs := CategorySummary{Name: c.name, Kind: c.kind, Ops: c.ops, Counters: c.done, PerPID: map[uint32]event.Counters{}}
		for pid, v := range c.perPID {
			cs.PerPID[pid] = v
		}
		cs.Top = slices.Clone(c.top)
		cs.Recent = append(slices.Clone(c.recent[c.next:]), c.recent[:c.next]...)
		if c.cycle != nil && c.cycle.open == 0 {
			cs.Top = mergeTop(cs.Top, c.cycle.rec)
		}
		idx[c.name] = len(out)
		out = append(out, cs)
	}
	for _, o := range a.open {
		cs := &out[idx[o.cat.name]]
		cs.Counters = add(cs.Counters, o.live)
		cs.PerPID[o.pid] = add(cs.PerPID[o.pid], o.live)
		cs.OpenOps++
	}
	// Op buckets whose begin is still on its way (or lost): their bytes
	// count, as unknown, until the begin names them.
	for _, o := range a.orphans {
		i, ok := idx["unknown"]
		if !ok {
			i = len(out)
			idx["unknown"] = i
			out = append(out, CategorySummary{Name: "unknown", Kind: KindUnknown, PerPID: map[uint32]event.Counters{}})
		}
		cs := &out[i]
		cs.Counters = add(cs.Counters, o.live)
		cs.PerPID[o.pid] = add(cs.PerPID[o.pid], o.live)
		cs.OpenOps++
	}
	return out
}

func mergeTop(top []OpRecord, r OpRecord) []OpRecord {
	top = append(top, r)
	slices.SortStableFunc(top, func(x, y OpRecord) int { return cmp.Compare(y.Counters.Resident(), x.Counters.Resident()) })
	if len(top) > topOps {
		top = top[:topOps]
	}
	return top
}

// maxOwners bounds how many ended ops that mapped or allocated memory are
// remembered, so what they give back later finds their category.
const maxOwners = 65536

// rememberOwner keeps an ended op's category for its later give-backs.
func (a *Account) rememberOwner(id uint64, c *category) {
	if len(a.ownerRing) < maxOwners {
		a.ownerRing = append(a.ownerRing, id)
	} else {
		delete(a.owners, a.ownerRing[a.ownerNext])
		a.ownerRing[a.ownerNext] = id
		a.ownerNext = (a.ownerNext + 1) % maxOwners
	}
	a.owners[id] = c
}

// forgotten names the category of give-backs whose op is not known.
var forgotten = Naming{Category: "freed (op forgotten)", Kind: KindUnknown}

// unclaimed is what ops not known yet gave back (Account.unclaimed).
type unclaimed struct {
	seq      int // snapshot it was first seen in
	pid      uint32
	counters event.Counters
}

// freed adds memory an op gave back after it ended to the op's category.
// A give-back of an op whose begin has not come yet is charged to the
// forgotten category until it does (claim).
func (a *Account) freed(b event.Bucket) {
	c := a.owners[b.Key.ID]
	if o, ok := a.open[b.Key.ID]; ok {
		c = o.cat
	}
	if c == nil {
		c = a.categoryFor(forgotten)
		if !a.isEnded(b.Key.ID) {
			u, seen := a.unclaimed[b.Key.ID]
			if !seen {
				u.seq, u.pid = a.seq, b.Key.PID
			}
			u.counters = add(u.counters, b.Counters)
			a.unclaimed[b.Key.ID] = u
		}
	}
	c.charge(b.Key.PID, b.Counters)
}

// charge adds counters of process pid to the category's finished ones.
func (c *category) charge(pid uint32, v event.Counters) {
	c.done = add(c.done, v)
	k := c.pidKey(pid)
	c.perPID[k] = add(c.perPID[k], v)
}

// claim moves what op id gave back before its begin came from the
// forgotten category to c.
func (a *Account) claim(id uint64, c *category) {
	u, ok := a.unclaimed[id]
	if !ok {
		return
	}
	delete(a.unclaimed, id)
	a.categoryFor(forgotten).charge(u.pid, sub(event.Counters{}, u.counters))
	c.charge(u.pid, u.counters)
}
