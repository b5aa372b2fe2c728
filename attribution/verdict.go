package attribution

// The verdict: which categories keep memory, how much per op, and on what
// evidence. Allocation is not retention: resident growth charged to whoever
// touched a new page says who grew the process; what a category keeps is
// what its ops allocated and is still live. Per kind:
//
//   - runtime heap: the runtime's own sampler joined with the ops (V8, Go;
//     heap.go) when it runs; else the writable mappings the runtime made or
//     committed during the category's ops (an estimate blind to heaps that
//     reuse their pages);
//   - native heap: the native allocator's mappings made during the
//     category's ops and not given back: mappings of their own (a large
//     malloc chunk), kept as long as what was allocated in them (measured),
//     and growth of a shared heap (brk, arena commits), charged to whoever
//     needed fresh pages (an estimate: Counters.RetainedHeap); with
//     --native-heap, the malloc'd blocks the category's ops allocated and
//     nobody freed (libc's allocator followed with uprobes), instead;
//   - external (exact mode): ArrayBuffers allocated and not freed, which
//     replace the native estimate of the same bytes.
//
// A category retains significantly when its sampled part is more than two
// standard errors above zero and at least minRetained, or when what its
// mappings keep is at least minRetained and kept growing with the
// category's work (trend.go: a heap that grew once to its high-water mark,
// or buffers in flight at the end, are not a leak). Mappings that did not
// keep growing are not counted as retained at all: they are reported
// apart, as committed during the ops (Retention.HighWater). The culprit is
// the significant category that keeps most by measurement (a runtime
// sampler, followed blocks, exact ArrayBuffers, mappings of their own);
// with none, the verdict is that no operation retains memory. A category
// whose retention rests mostly on an estimate is never the culprit: the
// pages a shared heap commits during an op are the op's only when nothing
// reuses space another op freed, and a heap that does (malloc, V8,
// pymalloc) charges the route that allocates fresh pages, not the one that
// keeps what it took. When such a category would keep most, the verdict
// names it as a suspect (Verdict.Suspect), says in which heap memory
// grows, and names the mode that measures it. Without a runtime sampler
// and with no category retaining, a runtime heap that grew is said as
// such (Verdict.Unsampled), not as "nothing retains".

import (
	"fmt"
	"math"
	"strings"

	"github.com/memdiag/memdiag/event"
)

// minRetained is the least a category must keep to be called retaining.
const minRetained = 1 << 20

// trendSnapshots is how many snapshots (seconds) a run needs before the
// verdict judges whether the process's unsampled growth went on.
const trendSnapshots = 20

// Retention is what a category's ops still keep, by kind, with its evidence.
type Retention struct {
	Bytes       int64 // best estimate, every kind
	StdErr      int64 // one standard error of Bytes (the sampled part; 0 for estimates)
	RuntimeHeap int64 // the runtime's managed heap
	Native      int64 // the native heap: mapping estimate, or followed blocks (--native-heap)
	External    int64 // exact mode: ArrayBuffers not freed
	Samples     int   // live runtime samples behind RuntimeHeap
	// Estimated is the part of Bytes that rests on mapping estimates
	// (pages committed during the ops), which can follow who allocated
	// rather than who keeps (a shared heap's growth, the runtime's own
	// mappings without a sampler); EstimatedKind says which heap: "runtime"
	// or "native".
	Estimated     int64
	EstimatedKind string
	// HighWater is what the mapping estimate found committed during the
	// ops that did not grow with their work (a heap's high-water mark,
	// buffers in flight): not counted in Bytes.
	HighWater   int64
	Method      string
	PerOp       float64 // Bytes per op (0 without ops)
	PerOpErr    float64 // StdErr per op
	Significant bool
}

// Verdict says which category keeps memory, or that none does.
type Verdict struct {
	Culprit string  // "" when no category is measured to retain significantly
	Share   float64 // the culprit's part of what measured significant categories keep
	// Suspect is the category that keeps most by a mapping estimate alone,
	// when it keeps more than the culprit (or there is no culprit): where
	// memory grew, not shown to be where it is kept. SuspectKind says which
	// heap the estimate is of ("native" or "runtime").
	Suspect     string
	SuspectKind string
	// Unsampled is, when no category retains and no runtime sampler ran,
	// how much anonymous memory outside the native heap grew (≥ 1 MiB):
	// growth the verdict cannot place, said instead of "nothing retains".
	Unsampled int64
	Statement string // one sentence for humans
	Method    string // how the runtime heap was measured
}

// retention computes a category's Retention; heap is its sampled estimate
// (nil when none), sampled whether a runtime sampler covers the process.
func (a *Account) retention(cs *CategorySummary, heap *heapEstimate, sampled string, exact bool) Retention {
	var r Retention
	mappedRuntime := cs.Retained - cs.RetainedNative
	r.Native = cs.RetainedNative
	native := a.opts.NativeHeap
	switch {
	case native:
		r.Native = int64(cs.ABAlloc) - int64(cs.ABFreed) // replaces the estimate
	case exact:
		r.External = int64(cs.ABAlloc) - int64(cs.ABFreed)
		r.Native = 0 // the same bytes, measured exactly
	}
	loopHeap := sampled != "" && cs.Kind == KindIdle
	if loopHeap && !native {
		// Between operations the event loop allocates for what comes
		// next (read buffers before the read names an op): the native
		// heap growth it meets there is the service's, not the loop's.
		// With a sampler, idle keeps what was sampled there; with
		// --native-heap, what was allocated there and kept.
		r.Native = 0
	}
	mapping := r.Native
	switch {
	case sampled != "":
		if heap != nil {
			r.RuntimeHeap = int64(math.Round(heap.bytes))
			r.StdErr = int64(math.Round(math.Sqrt(heap.variance)))
			r.Samples = heap.samples
		}
		r.Method = "sampled (" + sampled + ")"
	default:
		r.RuntimeHeap = mappedRuntime
		mapping += mappedRuntime
		r.Method = "mapping estimate"
	}
	switch {
	case native:
		r.Method += ", native heap followed (malloc uprobes)"
	case loopHeap:
		r.Method += ", native estimate not counted between operations"
	case exact:
		r.Method += ", exact ArrayBuffers"
	default:
		r.Method += ", native mappings (a shared heap's growth estimated)"
	}
	r.Bytes = r.RuntimeHeap + r.Native + r.External
	// mapped is what rests on mappings (not on samples or followed
	// blocks). Of the native part, growth of a shared heap (brk, an
	// arena's commits) is an estimate; mappings of their own (large
	// malloc chunks) are kept as long as what was allocated in them, a
	// measurement. The runtime's own mappings grow its heap: an estimate.
	var mapped int64
	if !native && r.Native > 0 {
		mapped = r.Native
		if r.Estimated = min(max(cs.RetainedHeap, 0), r.Native); r.Estimated > 0 {
			r.EstimatedKind = "native"
		}
	}
	if sampled == "" && r.RuntimeHeap > 0 {
		mapped += r.RuntimeHeap
		if r.RuntimeHeap > r.Estimated {
			r.EstimatedKind = "runtime"
		}
		r.Estimated += r.RuntimeHeap
	}
	if cs.Ops > 0 {
		r.PerOp = float64(r.Bytes) / float64(cs.Ops)
		r.PerOpErr = float64(r.StdErr) / float64(cs.Ops)
	}
	sampledSig := sampled != "" && r.RuntimeHeap-2*r.StdErr > minRetained/4 && r.RuntimeHeap >= minRetained
	measure := func(p trendPoint) int64 {
		m := p.native
		if exact || native {
			m = p.ab
		}
		if sampled == "" {
			m += p.runtime
		}
		return m
	}
	grows, known := a.growsWithWork(cs.Name, measure)
	if !known {
		// No history (a summary before two snapshots): the last ops
		// still adding to it is the best sign left.
		var recent int64
		for _, op := range cs.Recent {
			recent += measure(pointOf(0, op.Counters))
		}
		grows = recent > 0 // no finished op (idle, threads): no evidence
	}
	mappingSig := mapping+r.External >= minRetained && grows
	if loopHeap && !native {
		mappingSig = false
	}
	if !mappingSig && mapped > 0 {
		// Memory mapped or committed during the ops that did not keep
		// growing with their work: a heap's high-water mark, buffers in
		// flight, free space in an arena. Not shown to be kept: reported
		// apart, not as retained.
		r.HighWater = mapped
		if !native && r.Native > 0 {
			r.Native = 0
		}
		if sampled == "" && r.RuntimeHeap > 0 {
			r.RuntimeHeap = 0
		}
		r.Estimated, r.EstimatedKind = 0, ""
		r.Bytes = r.RuntimeHeap + r.Native + r.External
		if cs.Ops > 0 {
			r.PerOp = float64(r.Bytes) / float64(cs.Ops)
		}
	}
	r.Significant = r.Bytes >= minRetained && (sampledSig || mappingSig)
	return r
}

// verdict fills every category's Retention and picks the culprit among
// the service's own work (operations and idle event-loop turns).
func (a *Account) verdict(s *Summary) {
	heap := a.heapByCategory()
	sampled := ""
	for _, st := range a.samplingStatus() {
		if st.Active && (st.PID == a.main || sampled == "") {
			sampled = fmt.Sprintf("%s, every %s", st.Runtime, bytesText(st.Interval))
		}
	}
	exact := a.opts.ExactExternal
	var total int64
	culprit, suspect := -1, -1
	for i := range s.Categories {
		c := &s.Categories[i]
		c.Retention = a.retention(c, heap[c.Name], sampled, exact)
		r := c.Retention
		if !r.Significant || !candidate(c.Kind) {
			continue
		}
		if r.estimated() {
			if suspect < 0 || r.Bytes > s.Categories[suspect].Retention.Bytes {
				suspect = i
			}
			continue
		}
		total += r.Bytes
		if culprit < 0 || r.Bytes > s.Categories[culprit].Retention.Bytes {
			culprit = i
		}
	}
	s.Verdict.Method = "mapping estimate (no runtime sampler)"
	if sampled != "" {
		s.Verdict.Method = "runtime heap sampled (" + sampled + ")"
	}
	if suspect >= 0 && culprit >= 0 && s.Categories[suspect].Retention.Bytes <= s.Categories[culprit].Retention.Bytes {
		suspect = -1 // a smaller estimate beside a measured culprit: in its row only
	}
	var parts []string
	if culprit >= 0 {
		c := &s.Categories[culprit]
		s.Verdict.Culprit = c.Name
		s.Verdict.Share = float64(c.Retention.Bytes) / float64(total)
		parts = append(parts, fmt.Sprintf("%s retains %s%s, %.0f%% of what retaining categories keep",
			c.Name, bytesText(uint64(max(c.Retention.Bytes, 0))), perOpText(c), 100*s.Verdict.Share))
	}
	if suspect >= 0 {
		c := &s.Categories[suspect]
		s.Verdict.Suspect, s.Verdict.SuspectKind = c.Name, c.Retention.EstimatedKind
		also, lead := "", "no operation is measured to retain memory; "
		if culprit >= 0 {
			also, lead = " also", ""
		}
		parts = append(parts, fmt.Sprintf("%sthe %s heap%s grew %s during %s's ops%s, %s",
			lead, c.Retention.EstimatedKind, also, bytesText(uint64(max(c.Retention.Bytes, 0))), c.Name, perOpText(c), estimateHint(c.Retention.EstimatedKind)))
	}
	if len(parts) == 0 {
		s.Verdict.Statement = "no operation retains memory: no category keeps a significant amount"
		// Without a runtime sampler a runtime heap that reuses its pages,
		// or grows from helper threads (V8's GC), marks no op: saying
		// nothing retains would be a guess.
		if g := s.Growth.RSS[event.RSSAnon] - s.Growth.External; sampled == "" && g >= minRetained && a.stillGrowing() {
			s.Verdict.Unsampled = g
			s.Verdict.Statement = fmt.Sprintf("no operation is measured to retain memory, but the runtime heap is not sampled and anonymous memory outside the native heap grew %s: which operation keeps it is unknown without a runtime sampler (%s)", bytesText(uint64(g)), samplersText)
		}
		return
	}
	s.Verdict.Statement = strings.Join(parts, "; ")
}

// stillGrowing says whether the process's memory outside the native heap
// kept growing over the second half of the run (by half of minRetained or
// more), or whether the run is too short to tell (fewer than
// trendSnapshots snapshots: V8 grows its heap in steps, seconds apart, so
// a short run's second half can be flat while a leak fills pages committed
// before): a heap that grew to its working size early and stayed is not
// growth the verdict must place.
func (a *Account) stillGrowing() bool {
	p := a.tl.points
	if len(p) < trendSnapshots {
		return true
	}
	mid, last := p[len(p)/2], p[len(p)-1]
	return (last.Resident-last.External)-(mid.Resident-mid.External) >= minRetained/2
}

// estimated says whether a retention rests mostly on a mapping estimate.
func (r Retention) estimated() bool { return r.Estimated > 0 && 2*r.Estimated > r.Bytes }

// perOpText is a category's retention per op with its uncertainty, for
// the verdict's sentence ("" without ops).
func perOpText(c *CategorySummary) string {
	if c.Ops == 0 {
		return ""
	}
	r := c.Retention
	if r.estimated() {
		return fmt.Sprintf(" (%s per op over %d ops)", bytesText(uint64(max(r.PerOp, 0))), c.Ops)
	}
	return fmt.Sprintf(" (%s per op ± %s over %d ops)", bytesText(uint64(max(r.PerOp, 0))), bytesText(uint64(2*r.PerOpErr)), c.Ops)
}

// estimateHint says, for a verdict resting mostly on a mapping estimate,
// what that means and which opt-in measures it.
func estimateHint(kind string) string {
	const what = "an estimate from the pages they committed, which says who allocated fresh pages, not who keeps memory (a heap that reuses space one op freed charges the op that refills it): "
	if kind == "runtime" {
		return what + "a runtime sampler measures which operation keeps it (" + samplersText + ")"
	}
	return what + "--native-heap (or --exact-external for Node.js Buffers) measures which operation keeps it"
}

// samplersText says which runtime samplers memdiag joins, and where none.
const samplersText = "memdiag attach joins Go's memory profiler by default and V8's with --heap-sampling v8; CPython's heap has none memdiag can reach"

// candidate says whether a category kind can be the culprit: the service's
// operations and its event loop between them, not helper threads or the
// kernel.
func candidate(kind string) bool {
	return kind == KindHTTP || kind == KindOutbound || kind == KindIdle
}

// bytesText writes a byte count with a binary unit.
func bytesText(b uint64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}
