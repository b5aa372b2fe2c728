//go:build privileged

package tracer

import (
	"bufio"
	"cmp"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// modelRegion is one mapping of the model: what the kernel's table must hold.
type modelRegion struct {
	start, len uint64
	class      uint32
	counted    uint32
}

func (r modelRegion) end() uint64 { return r.start + r.len }

// regionModel is today's region-table semantics as a sorted slice of
// disjoint mappings, the simplest structure that can say them.
type regionModel struct{ regs []modelRegion }

func (m *regionModel) at(addr uint64) (int, bool) {
	for i, r := range m.regs {
		if r.start <= addr && addr < r.end() {
			return i, true
		}
	}
	return -1, false
}

func (m *regionModel) from(start uint64) (int, bool) {
	for i, r := range m.regs {
		if r.start == start {
			return i, true
		}
	}
	return -1, false
}

// unmapCovers says whether the kernel's unmap walk over [a, b) (the mapping
// holding a, then mappings that start where the last ended, at most
// maxUnmap of them, stopping at a gap) reaches every mapping that meets
// [a, b). Ops where it does not are ones today's table already gets wrong
// (it keeps mappings it did not reach); the test does not make them.
func (m *regionModel) unmapCovers(a, b uint64) bool {
	const maxUnmap = 8
	pos, n := a, 0
	i, ok := m.at(pos)
	for ok && pos < b && n < maxUnmap {
		pos = m.regs[i].end()
		n++
		i, ok = m.from(pos)
	}
	if pos >= b {
		return true
	}
	for _, r := range m.regs {
		if r.start < b && pos < r.end() && r.end() > a {
			return false
		}
	}
	return n < maxUnmap
}

// unmap forgets [a, b): each mapping keeps what is outside.
func (m *regionModel) unmap(a, b uint64) {
	var out []modelRegion
	for _, r := range m.regs {
		if r.end() <= a || r.start >= b {
			out = append(out, r)
			continue
		}
		if r.start < a {
			l := r
			l.len = a - r.start
			out = append(out, l)
		}
		if r.end() > b {
			rr := r
			rr.start, rr.len = b, r.end()-b
			out = append(out, rr)
		}
	}
	m.regs = out
	m.sort()
}

func (m *regionModel) add(r modelRegion) {
	m.regs = append(m.regs, r)
	m.sort()
}

func (m *regionModel) sort() {
	slices.SortFunc(m.regs, func(a, b modelRegion) int { return cmp.Compare(a.start, b.start) })
}

// covered says whether every page of [a, b) is mapped.
func (m *regionModel) covered(a, b uint64) bool {
	for pos := a; pos < b; {
		i, ok := m.at(pos)
		if !ok {
			return false
		}
		pos = m.regs[i].end()
	}
	return true
}

// TestRegionTableMatchesModel drives a real traced process through random
// mmap(MAP_FIXED), munmap and mprotect calls inside a reservation and
// checks, after each, that the kernel's region table (one entry per
// mapping) holds exactly the model's mappings, and that its index finds,
// for the first, last and a middle byte of each, that mapping, and for
// holes none: the O(1) table gives the answers the LPM trie gave. The
// kernel's lookups start from the last mapping found on their CPU, and
// the walk often changes a mapping just found, then works beside it: an
// answer kept past a change puts wrong pieces in the table.
func TestRegionTableMatchesModel(t *testing.T) {
	tr := openDrained(t)

	// The traced process: a small C program, so nothing but its orders
	// maps memory (a Go helper's runtime put its own mappings in the
	// holes the test made).
	helper := buildC(t, "../testdata/workload/regionops.c")
	cmd := exec.Command(helper)
	in, stdout := startPiped(t, cmd)
	out := bufio.NewScanner(stdout)
	pid := uint32(cmd.Process.Pid)
	// On one CPU, each lookup of the kernel's starts from the mapping its
	// last one found there (a per-CPU cache): answers kept past a change
	// then show in the table.
	var cpu0 unix.CPUSet
	cpu0.Set(0)
	if err := unix.SchedSetaffinity(int(pid), &cpu0); err != nil {
		t.Fatal(err)
	}
	if err := tr.AddTarget(int(pid)); err != nil {
		t.Fatal(err)
	}
	// Every mapping counts as the native allocator's, so commits by
	// mprotect (which only the native class has) are exercised.
	if err := tr.objs.LibcRanges.Update(&pid, &memdiagLibcRange{Lo: 1, Hi: 1 << 62}, ebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}
	var last string // the last operation, for failure messages
	do := func(format string, args ...any) (uint64, bool) {
		t.Helper()
		last = fmt.Sprintf(strings.ReplaceAll(format, "%d", "%#x"), args...)
		fmt.Fprintf(in, format+"\n", args...)
		if !out.Scan() {
			t.Fatalf("helper process gone: %v", out.Err())
		}
		f := strings.Fields(out.Text())
		if f[0] != "ok" {
			return 0, false
		}
		v, _ := strconv.ParseUint(f[1], 0, 64)
		return v, true
	}

	const page = 4096
	const span = 64 << 20
	base, ok := do("reserve %d", span)
	if !ok {
		t.Fatal("reserving the arena failed")
	}
	var model regionModel
	learn := func(start, n uint64, counted uint32) {
		t.Helper()
		r, ok, err := tr.regionAt(pid, genOf(t, tr, pid), start)
		if err != nil || !ok || r.Start != start || r.Len != n {
			t.Fatalf("new mapping %#x+%#x: table has %+v (found %v, %v)", start, n, r, ok, err)
		}
		model.add(modelRegion{start: start, len: n, class: r.Class, counted: counted})
	}
	learn(base, span, 0)
	// What the process had retained before the walk (its loader's own
	// mappings, made while it started).
	native0, heap0 := retainedOf(t, tr, pid)

	rng := rand.New(rand.NewPCG(1, 2))
	sizes := []uint64{1, 1, 2, 3, 4, 8, 16, 17, 64, 100, 256, 1024}
	// Half the operations land on or beside the range the last one
	// changed: the kernel's lookup for them then starts from the
	// mapping its last lookup found on this CPU (struct region_cache),
	// just changed, shrunk, split or committed, and an answer kept past
	// the change puts the wrong pieces back in the table.
	var lastA, lastN uint64
	pick := func() (uint64, uint64) {
		n := sizes[rng.IntN(len(sizes))] * page
		a := base + uint64(rng.IntN(span/page))*page
		if lastN != 0 && rng.IntN(2) == 0 {
			a = lastA + uint64(rng.IntN(int(lastN/page)+1))*page
			if back := uint64(rng.IntN(int(n/page)+1)) * page; a-base >= back {
				a -= back
			}
		}
		if a+n > base+span {
			a = base + span - n
		}
		return a, n
	}
	ops := map[string]int{}
	// Half the time before an operation, the kernel finds the mapping it
	// is about to change without changing the table (an mprotect of a
	// page of a writable mapping: no commit), so that mapping is in its
	// cache when the operation changes it in place.
	look := func(addr uint64) {
		t.Helper()
		i, ok := model.at(addr)
		if !ok || model.regs[i].counted == 0 || rng.IntN(2) == 0 {
			return
		}
		r := model.regs[i]
		p := r.start + uint64(rng.IntN(int(r.len/page)))*page
		if _, ok := do("protect %d %d %d", p, page, unix.PROT_READ|unix.PROT_WRITE); !ok {
			t.Fatalf("mprotect %#x+%#x in %#x+%#x failed", p, page, r.start, r.len)
		}
		ops["look"]++
	}
	for step := 0; step < 600; step++ {
		a, n := pick()
		switch k := rng.IntN(10); {
		case k < 4: // mmap MAP_FIXED, writable or a reservation
			if !model.unmapCovers(a, a+n) {
				continue
			}
			prot, counted := unix.PROT_READ|unix.PROT_WRITE, uint32(1)
			if rng.IntN(3) == 0 {
				prot, counted = unix.PROT_NONE, 0
			}
			look(a)
			if _, ok := do("map %d %d %d", a, n, prot); !ok {
				t.Fatalf("step %d: mmap %#x+%#x failed", step, a, n)
			}
			model.unmap(a, a+n)
			learn(a, n, counted)
			ops["mmap"]++
		case k < 7: // munmap: of part of a mapping, of several, or of one whole
			whole := false
			if i, ok := model.at(a); ok && rng.IntN(3) == 0 && model.regs[i].len <= sizes[len(sizes)-1]*page {
				a, n, whole = model.regs[i].start, model.regs[i].len, true
			}
			if !model.unmapCovers(a, a+n) {
				continue
			}
			look(a)
			if _, ok := do("unmap %d %d", a, n); !ok {
				t.Fatalf("step %d: munmap %#x+%#x failed", step, a, n)
			}
			model.unmap(a, a+n)
			ops["munmap"]++
			if whole {
				ops["munmap (whole)"]++
			}
		case k == 9: // mremap in place: shrink, or grow a mapping into the hole after it
			newn := n / 2 / page * page
			if rng.IntN(2) == 0 && len(model.regs) > 1 {
				j := rng.IntN(len(model.regs) - 1)
				r, next := model.regs[j], model.regs[j+1]
				a, n, newn = r.start, r.len, r.len+min(r.len, next.start-r.end())
			}
			i, found := model.at(a)
			if !found || newn == 0 || newn == n || !model.unmapCovers(a, a+n) {
				continue
			}
			look(a)
			if _, ok := do("remap %d %d %d", a, n, newn); !ok {
				ops["mremap (refused)"]++ // the range spans mappings the kernel keeps apart, or no hole to grow into
				continue
			}
			r := model.regs[i]
			model.unmap(a, a+n)
			model.add(modelRegion{start: a, len: min(n, newn), class: r.class, counted: r.counted})
			if newn > n {
				model.add(modelRegion{start: a + n, len: newn - n, class: r.class, counted: r.counted})
				ops["mremap (grow)"]++
			} else {
				ops["mremap (shrink)"]++
			}
		default: // mprotect writable: a commit of a native reservation
			look(a)
			_, ok := do("protect %d %d %d", a, n, unix.PROT_READ|unix.PROT_WRITE)
			if ok != model.covered(a, a+n) {
				t.Fatalf("step %d: mprotect %#x+%#x: ok=%v, model says mapped=%v", step, a, n, ok, !ok)
			}
			if !ok {
				ops["mprotect (hole)"]++
				continue
			}
			if i, found := model.at(a); found && model.regs[i].counted == 0 && model.regs[i].class == classNative && a+n <= model.regs[i].end() {
				r := model.regs[i]
				model.unmap(a, a+n)
				model.add(modelRegion{start: a, len: n, class: r.class, counted: 2}) // RG_HEAP: a shared heap's growth
				ops["mprotect (commit)"]++
			} else {
				ops["mprotect (no change)"]++
			}
		}
		lastA, lastN = a, n
		checkRegions(t, tr, pid, base, span, &model, rng, step, last)
	}
	t.Logf("ops: %v; %d mappings at the end", ops, len(model.regs))

	// The owners' retained counters agree with the table: every counted
	// mapping is native here, and the commits are a shared heap's growth
	// (RG_HEAP, retained_heap), the writable mmaps mappings of their own.
	var wantNative, wantHeap int64
	for _, r := range model.regs {
		if r.counted != 0 {
			wantNative += int64(r.len)
		}
		if r.counted == 2 {
			wantHeap += int64(r.len)
		}
	}
	gotNative, gotHeap := retainedOf(t, tr, pid)
	gotNative, gotHeap = gotNative-native0, gotHeap-heap0
	if gotNative != wantNative || gotHeap != wantHeap || wantHeap == 0 || wantHeap == wantNative {
		t.Errorf("retained native %d, of it a shared heap's growth %d; the table holds %d and %d (want both parts non-empty)", gotNative, gotHeap, wantNative, wantHeap)
	}
	if ops["mprotect (commit)"] == 0 || ops["munmap"] == 0 || ops["mmap"] == 0 || ops["mremap (shrink)"] == 0 || ops["mremap (grow)"] == 0 ||
		ops["munmap (whole)"] == 0 || ops["look"] == 0 {
		t.Fatalf("the random walk missed an operation kind: %v", ops)
	}
}

// checkRegions compares the kernel's table inside [base, base+span) with the
// model, then looks addresses up through the index.
func checkRegions(t *testing.T, tr *Tracer, pid uint32, base, span uint64, model *regionModel, rng *rand.Rand, step int, last string) {
	t.Helper()
	var (
		k   memdiagRegionKey
		s   memdiagRegionSlots
		got []modelRegion
	)
	empty := 0 // entries kept vacant for reuse: at most one per CPU
	it := tr.objs.Regions.Iterate()
	for it.Next(&k, &s) {
		if k.Tgid == pid && s.R[0].Len == 0 && s.R[1].Len == 0 {
			empty++
		}
		for _, v := range s.R {
			if k.Tgid != pid || v.Len <= regionClaimed || v.Start < base || v.Start >= base+span {
				continue
			}
			if want := chunkOf(v.Start, regionLevel(v.Len)); k.Chunk != want {
				t.Fatalf("step %d (%s): mapping %#x+%#x is under chunk %#x, not %#x", step, last, v.Start, v.Len, k.Chunk, want)
			}
			got = append(got, modelRegion{start: v.Start, len: v.Len, class: v.Class, counted: v.Counted})
		}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	if cpus, err := ebpf.PossibleCPU(); err != nil || empty > cpus {
		t.Fatalf("step %d (%s): %d empty entries in the table, more than one per CPU (%v)", step, last, empty, err)
	}
	slices.SortFunc(got, func(a, b modelRegion) int { return cmp.Compare(a.start, b.start) })
	if !slices.Equal(got, model.regs) {
		var extra, missing []modelRegion
		for _, r := range got {
			if !slices.Contains(model.regs, r) {
				extra = append(extra, r)
			}
		}
		for _, r := range model.regs {
			if !slices.Contains(got, r) {
				missing = append(missing, r)
			}
		}
		t.Fatalf("step %d (%s): the table has, and the model has not:\n%sthe model has, and the table has not:\n%s", step, last, fmtRegions(extra), fmtRegions(missing))
	}
	for _, r := range model.regs {
		for _, addr := range []uint64{r.start, r.end() - 1, r.start + r.len/2 + 17} {
			f, ok, err := tr.regionAt(pid, genOf(t, tr, pid), addr)
			if err != nil || !ok || f.Start != r.start || f.Len != r.len {
				t.Fatalf("step %d: lookup %#x: got %#x+%#x found=%v err=%v, want %#x+%#x", step, addr, f.Start, f.Len, ok, err, r.start, r.len)
			}
		}
	}
	for range 16 {
		addr := base + uint64(rng.IntN(int(span)))
		_, inModel := model.at(addr)
		f, ok, err := tr.regionAt(pid, genOf(t, tr, pid), addr)
		if err != nil || ok != inModel || ok && (addr < f.Start || addr >= f.Start+f.Len) {
			t.Fatalf("step %d: lookup %#x: got %#x+%#x found=%v err=%v, model has it: %v", step, addr, f.Start, f.Len, ok, err, inModel)
		}
	}
}

func fmtRegions(rs []modelRegion) string {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "  %#x+%#x class %d counted %d\n", r.start, r.len, r.class, r.counted)
	}
	return b.String()
}

// retainedOf sums the retained native bytes of process pid's buckets, and
// the part of them that grew a shared heap.
func retainedOf(t *testing.T, tr *Tracer, pid uint32) (native, heap int64) {
	t.Helper()
	var k memdiagBucketKey
	var c memdiagCounters
	it := tr.objs.Buckets.Iterate()
	for it.Next(&k, &c) {
		if k.Tgid == pid {
			native += c.RetainedNative
			heap += c.RetainedHeap
		}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	if err := tr.heldOpSlots(func(o *memdiagOpSlot) {
		if o.Tgid == pid {
			native += o.C.RetainedNative
			heap += o.C.RetainedHeap
		}
	}); err != nil {
		t.Fatal(err)
	}
	return native, heap
}

// genOf is process pid's exec generation, which its regions are keyed by:
// 0, or 1 when the kernel saw its exec as a target's (exec.Cmd.Start
// returns once the exec closed its close-on-exec pipe, which can be before
// sched_process_exec, after the test made the process a target).
func genOf(t *testing.T, tr *Tracer, pid uint32) uint32 {
	t.Helper()
	var tg memdiagTarget
	if err := tr.objs.Targets.Lookup(&pid, &tg); err != nil {
		t.Fatal(err)
	}
	return tg.Gen
}
