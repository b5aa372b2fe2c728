package attribution

// A leak accumulates with the work that causes it; a heap that grew once to
// its high-water mark, or buffers still in flight when the run ends, do not.
// The mapping estimates (what the category's ops mapped or committed and did
// not give back) are only evidence of retention when they keep growing with
// the category's ops: trend keeps, per category, a bounded history of the
// estimate's parts against the category's op count (snapshot count for
// categories without ops, such as idle).

import (
	"strings"

	"github.com/memdiag/memdiag/event"
)

// maxTrendPoints bounds each category's history; past it, every other
// point is dropped (the first and the latest stay).
const maxTrendPoints = 128

// trendPoint is a category's mapping measures at one snapshot.
type trendPoint struct {
	x       int64 // ops so far (or the snapshot number, for categories without ops)
	native  int64 // RetainedNative
	runtime int64 // Retained - RetainedNative
	ab      int64 // ABAlloc - ABFreed
}

func pointOf(x int64, c event.Counters) trendPoint {
	return trendPoint{x: x, native: c.RetainedNative, runtime: c.Retained - c.RetainedNative, ab: int64(c.ABAlloc) - int64(c.ABFreed)}
}

// record adds the categories' measures at this snapshot.
func (a *Account) recordTrend() {
	// Op categories as their finished ops and later give-backs left them
	// (the same measure as at each op's end).
	for _, c := range a.cats {
		a.addTrend(c.name, pointOf(int64(c.ops), c.done))
	}
	// Categories without ops (idle, background threads), against time.
	byName := map[string]event.Counters{}
	for k, c := range a.live {
		if k.Kind == event.BucketIdle || k.Kind == event.BucketThread {
			n := bucketName(k, c)
			byName[n] = add(byName[n], c)
		}
	}
	for k, c := range a.retired {
		if k.Name == event.BucketIdle.String() || strings.HasPrefix(k.Name, "thread:") {
			byName[k.Name] = add(byName[k.Name], c)
		}
	}
	for n, c := range byName {
		a.addTrend(n, pointOf(int64(a.seq), c))
	}
}

func (a *Account) addTrend(name string, p trendPoint) {
	if a.trend == nil {
		a.trend = map[string]*[]trendPoint{}
	}
	// A pointer per name: this runs at every op's end, and one lookup
	// then does.
	hp := a.trend[name]
	if hp == nil {
		hp = new([]trendPoint)
		a.trend[name] = hp
	}
	h := *hp
	if n := len(h); n > 0 && h[n-1].x == p.x {
		h[n-1] = p // no new ops: the latest measure replaces it
		return
	}
	if len(h) >= maxTrendPoints {
		kept := h[:1]
		for i := 2; i < len(h); i += 2 {
			kept = append(kept, h[i])
		}
		h = kept
	}
	*hp = append(h, p)
}

// growsWithWork reports whether measure kept growing with a category's
// work: its floor (the least value) over the last quarter of the work is
// above its floor over the second quarter by at least a quarter of its last
// value, by half of minRetained, and by the measure's swing within the
// second quarter. Retention that accumulates raises the floor steadily; buffers in
// flight make a sawtooth whose floor stays put, and a heap that grew once to
// its high-water mark stays flat. ok is false when the history is too short
// to say.
func (a *Account) growsWithWork(name string, measure func(trendPoint) int64) (grows, ok bool) {
	hp := a.trend[name]
	if hp == nil || len(*hp) < 8 {
		return false, false
	}
	h := *hp
	first, last := h[0].x, h[len(h)-1].x
	span := last - first
	if span < 8 {
		return false, false
	}
	// bounds gives the least and the greatest value over [lo, hi].
	bounds := func(lo, hi int64) (least, most int64, found bool) {
		for _, p := range h {
			if p.x >= lo && p.x <= hi {
				v := measure(p)
				if !found || v < least {
					least = v
				}
				if !found || v > most {
					most = v
				}
				found = true
			}
		}
		return least, most, found
	}
	q2, q2top, ok2 := bounds(first+span/4, first+span/2)
	q4, _, ok4 := bounds(first+3*span/4, last)
	if !ok2 || !ok4 {
		return false, false
	}
	rise := q4 - q2
	// The rise must also stand above the measure's swing within the
	// second quarter: a linear leak rises between the quarters by twice
	// what it moves within one, while buffers in flight swing by their
	// whole amount with a floor that drifts by less (GC timing, a heap
	// that fragments).
	swing := q2top - q2
	return rise >= minRetained/2 && 4*rise >= measure(h[len(h)-1]) && rise >= swing, true
}
