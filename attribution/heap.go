package attribution

// The verdict's evidence: runtime heap samples joined with the ops that
// allocated them, and what each category still keeps.
//
// V8 and the Go runtime sample allocations (one sample per interval of
// bytes allocated, Poisson) and forget the samples the GC frees. The kernel
// tags each sample with the bucket current on the allocating thread
// (event.HeapSample); this file maps the bucket to its category at that
// moment and keeps the sample until the runtime says it is gone:
//
//   - V8: a HeapLive event (the sampling profile, read after a full GC)
//     lists the samples still alive; every sample with an ordinal up to
//     its UpTo that is not listed is gone.
//   - Go: HeapFree names a freed sampled object. A sample counts as
//     surviving once two GC cycles have ended since it was allocated (the
//     first marks it, the sweep before the second frees it if dead);
//     younger samples are pending, and count with the survival rate their
//     category shows on matured samples.
//
// Each live sample stands for w = s / (1 - exp(-s/r)) bytes (s its size,
// r the sampling interval), the estimator both runtimes use; the variance
// of the sum is estimated by the sum of w² · exp(-s/r) over the samples.

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/memdiag/memdiag/event"
)

// maxHeapSamples bounds the samples kept; past it new samples are counted
// in Summary.HeapSamplesDropped (health.heap_samples_dropped) and not followed.
const maxHeapSamples = 1 << 20

// sampleKey names a sample: V8 by ordinal, Go by address, per process.
type sampleKey struct {
	pid uint32
	id  uint64
}

// heapSample is one sample being followed.
type heapSample struct {
	cat   string
	size  uint64 // unscaled
	bytes int64  // V8: scaled size from the last profile (0 until one lists it)
	cycle uint64 // Go: GC cycles ended before it was allocated
}

// heapState is the account's runtime-sampling state.
// silentGoCycles is how many GC cycles without one Go sample show that the
// profiler is off: a cycle normally follows at least 4 MiB of allocation
// (the heap goal's floor), so three of them without a sample at one per
// 512 KiB would have odds below e^-24. (An idle process's forced cycles,
// every two minutes, allocate little: it falls back to the estimate too,
// which is as empty as the samples would be.)
const silentGoCycles = 3

type heapState struct {
	sampling map[uint32]event.Sampling // pid -> the latest sampling status
	v8       map[sampleKey]*heapSample
	v8UpTo   map[uint32]uint64           // pid -> UpTo of the last profile
	v8Last   map[uint32]map[uint64]int64 // pid -> live ordinals of the last profile (for late samples)
	v8Base   map[uint32]int64            // pid -> V8 live heap bytes when sampling started
	v8Used   map[uint32]int64            // pid -> V8 live heap bytes at the last profile
	goLive   map[sampleKey]*heapSample
	goCycles map[uint32]uint64
	goSeen   map[uint32]uint64      // pid -> Go samples seen
	goDead   map[string]*[2]float64 // category -> {bytes, samples} freed before they matured: its churn
	dropped  int
}

func newHeapState() heapState {
	return heapState{
		sampling: map[uint32]event.Sampling{},
		v8:       map[sampleKey]*heapSample{},
		v8UpTo:   map[uint32]uint64{},
		v8Last:   map[uint32]map[uint64]int64{},
		v8Base:   map[uint32]int64{},
		v8Used:   map[uint32]int64{},
		goLive:   map[sampleKey]*heapSample{},
		goCycles: map[uint32]uint64{},
		goSeen:   map[uint32]uint64{},
		goDead:   map[string]*[2]float64{},
	}
}

// ownerCategory names the category a bucket stands for now. An op bucket
// is named by its open op (its end record comes after its samples in the
// ring); a thread by its name as last read (a thread not read yet is
// "thread:?").
func (a *Account) ownerCategory(k event.BucketKey) string {
	switch k.Kind {
	case event.BucketOp:
		if o, ok := a.open[k.ID]; ok {
			return o.cat.name
		}
		if c, ok := a.owners[k.ID]; ok {
			return c.name
		}
		return event.BucketIdle.String() // the kernel's fallback for an ended op, too
	case event.BucketThread:
		if c, ok := a.live[k]; ok {
			return bucketName(k, c)
		}
		return "thread:?"
	}
	return k.Kind.String()
}

func (a *Account) heapSample(e *event.HeapSample) {
	h := &a.heap
	s := &heapSample{cat: a.ownerCategory(e.Owner), size: e.Size}
	key := sampleKey{e.PID, e.Ordinal}
	if e.Runtime == event.RuntimeGo {
		key.id = e.Addr
		s.cycle = h.goCycles[e.PID]
		h.goSeen[e.PID]++
	}
	if len(h.v8)+len(h.goLive) >= maxHeapSamples {
		h.dropped++
		return
	}
	switch e.Runtime {
	case event.RuntimeV8:
		if e.Ordinal <= h.v8UpTo[e.PID] {
			// Came after the profile that covers it: keep it only if
			// that profile listed it.
			b, ok := h.v8Last[e.PID][e.Ordinal]
			if !ok {
				return
			}
			s.bytes = b
		}
		h.v8[key] = s
	case event.RuntimeGo:
		h.goLive[key] = s
	}
}

func (a *Account) heapFree(e *event.HeapFree) {
	h := &a.heap
	key := sampleKey{e.PID, e.Addr}
	s, ok := h.goLive[key]
	if !ok {
		return
	}
	delete(h.goLive, key)
	if h.goCycles[e.PID] >= s.cycle+2 {
		return // it had matured: counted among the survivors it no longer is
	}
	// Freed young: evidence of its category's churn.
	d := h.goDead[s.cat]
	if d == nil {
		d = &[2]float64{}
		h.goDead[s.cat] = d
	}
	d[0] += a.sampleWeight(e.PID, s.size)
	d[1]++
}

func (a *Account) heapLive(e *event.HeapLive) {
	h := &a.heap
	if _, ok := h.v8Base[e.PID]; !ok {
		h.v8Base[e.PID] = e.HeapUsed // the first: the heap as sampling started
	}
	h.v8Used[e.PID] = e.HeapUsed
	live := make(map[uint64]int64, len(e.Samples))
	for _, s := range e.Samples {
		live[s.Ordinal] = s.Bytes
	}
	for k, s := range h.v8 {
		if k.pid != e.PID || k.id > e.UpTo {
			continue
		}
		b, ok := live[k.id]
		if !ok {
			delete(h.v8, k)
			continue
		}
		s.bytes = b
	}
	h.v8UpTo[e.PID] = e.UpTo
	h.v8Last[e.PID] = live
}

// v8Scale is, per process, the factor that brings the sampled live bytes
// down to V8's own count of heap growth since sampling started, when they
// exceed it. A sample keeps the size its object had when allocated, and V8
// shrinks some objects in place afterwards (a string builder's last part,
// trimmed arrays): JSON.stringify's result, for one, is sampled at up to
// twice its size. The factor is never above 1: a heap that also freed
// older objects grew by less than its new live objects, and that must not
// inflate them.
func (a *Account) v8Scale() map[uint32]float64 {
	h := &a.heap
	total := map[uint32]float64{}
	for k, s := range h.v8 {
		if k.id <= h.v8UpTo[k.pid] {
			total[k.pid] += float64(s.bytes)
		}
	}
	out := map[uint32]float64{}
	for pid, t := range total {
		out[pid] = 1
		growth := float64(h.v8Used[pid] - h.v8Base[pid])
		if base, ok := h.v8Base[pid]; ok && base > 0 && t > 0 && growth < t {
			out[pid] = max(growth, 0) / t
		}
	}
	return out
}

// sampleWeight is the bytes a sample of size bytes stands for in process
// pid's sampler.
func (a *Account) sampleWeight(pid uint32, size uint64) float64 {
	r := float64(a.heap.sampling[pid].Interval)
	s := float64(size)
	if r <= 0 || s <= 0 {
		return s
	}
	return s / -math.Expm1(-s/r)
}

// heapEstimate is the live sampled heap of one category.
type heapEstimate struct {
	bytes    float64
	variance float64
	samples  int
}

// heapByCategory estimates the live sampled heap of every category, and
// reports which runtimes sample which processes.
func (a *Account) heapByCategory() map[string]*heapEstimate {
	h := &a.heap
	out := map[string]*heapEstimate{}
	get := func(c string) *heapEstimate {
		e := out[c]
		if e == nil {
			e = &heapEstimate{}
			out[c] = e
		}
		return e
	}
	scale := a.v8Scale()
	for k, s := range h.v8 {
		if k.id > h.v8UpTo[k.pid] || s.bytes == 0 {
			continue // no profile has spoken for it yet
		}
		e := get(s.cat)
		w := float64(s.bytes) * scale[k.pid]
		e.bytes += w
		e.variance += w * w * a.unsampledOdds(k.pid, s.size)
		e.samples++
	}
	// Go: matured survivors count whole; pending ones at their category's
	// survival rate on matured samples.
	type tally struct{ survived, pending, pendVar, n float64 }
	goT := map[string]*tally{}
	for k, s := range h.goLive {
		t := goT[s.cat]
		if t == nil {
			t = &tally{}
			goT[s.cat] = t
		}
		w := a.sampleWeight(k.pid, s.size)
		if h.goCycles[k.pid] >= s.cycle+2 {
			t.survived += w
			e := get(s.cat)
			e.variance += w * w * a.unsampledOdds(k.pid, s.size)
			e.samples++
			t.n++
		} else {
			t.pending += w
			t.pendVar += w * w * a.unsampledOdds(k.pid, s.size)
		}
	}
	for cat, t := range goT {
		dead, deadN := 0.0, 0.0
		if d := h.goDead[cat]; d != nil {
			dead, deadN = d[0], d[1]
		}
		rate, n := 0.5, t.n+deadN
		if t.survived+dead > 0 {
			rate = t.survived / (t.survived + dead)
		}
		e := get(cat)
		e.bytes += t.survived + rate*t.pending
		e.variance += rate*rate*t.pendVar + t.pending*t.pending*rate*(1-rate)/math.Max(n, 1)
	}
	return out
}

// unsampledOdds is exp(-s/r): the chance an allocation of size s is not
// sampled, the factor of its sample's variance.
func (a *Account) unsampledOdds(pid uint32, size uint64) float64 {
	r := float64(a.heap.sampling[pid].Interval)
	if r <= 0 {
		return 0
	}
	return math.Exp(-float64(size) / r)
}

// samplingStatus returns the sampling statuses memdiag recorded (which
// runtime sampler, if any, is joined with each process's ops), by pid.
func (a *Account) samplingStatus() []event.Sampling {
	out := make([]event.Sampling, 0, len(a.heap.sampling))
	for _, s := range a.heap.sampling {
		if n := a.heap.goCycles[s.PID]; s.Active && s.Runtime == event.RuntimeGo && n >= silentGoCycles && a.heap.goSeen[s.PID] == 0 {
			// The uprobes are in place and the GC ran, but the profiler
			// sampled nothing: it is off (a rate that could not be read
			// was taken as the default). Nothing sampled is no evidence.
			s.Active = false
			s.Reason = fmt.Sprintf("the Go memory profiler took no sample over %d GC cycles: it is off in this process; the runtime heap is the mapping estimate", n)
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(x, y event.Sampling) int { return cmp.Compare(x.PID, y.PID) })
	return out
}
