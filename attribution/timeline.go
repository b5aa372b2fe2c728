package attribution

import (
	"cmp"
	"slices"
	"time"

	"github.com/memdiag/memdiag/event"
)

// Timeline bounds: at most maxPoints points (when full, every other point
// is dropped and the spacing doubles), each with at most maxPointCats
// categories (the largest by absolute growth).
const (
	maxPoints    = 360
	maxPointCats = 64
)

// TimelinePoint is the cumulative growth at one snapshot.
type TimelinePoint struct {
	Time     time.Time
	Resident int64            // growth of resident memory since the start
	External int64            // growth of external memory since the start
	ByCat    map[string]int64 // resident growth per category (largest maxPointCats)
}

// timeline keeps a bounded, evenly thinned series of points.
type timeline struct {
	points []TimelinePoint
	every  int // keep one snapshot in every
	count  int // snapshots seen
}

func (tl *timeline) add(p func() TimelinePoint) {
	tl.count++
	if tl.every == 0 {
		tl.every = 1
	}
	if (tl.count-1)%tl.every != 0 {
		return
	}
	tl.points = append(tl.points, p())
	if len(tl.points) > maxPoints {
		kept := tl.points[:0]
		for i := 0; i < len(tl.points); i += 2 {
			kept = append(kept, tl.points[i])
		}
		tl.points = kept
		tl.every *= 2
	}
}

// point takes the current growth per category, without building a
// whole Summary (it runs at every snapshot).
func (a *Account) point(at time.Time) TimelinePoint {
	totals := map[string]int64{}
	var external int64
	ext := func(c event.Counters) int64 {
		if a.opts.ExactExternal {
			return int64(c.ABAlloc) - int64(c.ABFreed)
		}
		return c.External
	}
	for _, c := range a.cats {
		totals[c.name] += c.done.Resident()
		external += ext(c.done)
	}
	for _, o := range a.open {
		totals[o.cat.name] += o.live.Resident()
		external += ext(o.live)
	}
	for _, o := range a.orphans {
		totals["unknown"] += o.live.Resident()
		external += ext(o.live)
	}
	mainExited := a.procs[a.main].Exited
	addBucket := func(pid uint32, name string, c event.Counters) {
		if name == event.BucketBaseline.String() || name == event.BucketRelease.String() && pid == a.main && mainExited {
			return
		}
		totals[name] += c.Resident()
		external += ext(c)
	}
	for k, c := range a.retired {
		addBucket(k.PID, k.Name, c)
	}
	for k, c := range a.live {
		addBucket(k.PID, bucketName(k, c), c)
	}
	type kv struct {
		name string
		v    int64
	}
	var all []kv
	var total int64
	for n, v := range totals {
		total += v
		if v != 0 {
			all = append(all, kv{n, v})
		}
	}
	slices.SortFunc(all, func(x, y kv) int { return cmp.Or(cmp.Compare(abs(y.v), abs(x.v)), cmp.Compare(x.name, y.name)) })
	p := TimelinePoint{Time: at, Resident: total, External: external, ByCat: map[string]int64{}}
	for i, e := range all {
		if i == maxPointCats {
			break
		}
		p.ByCat[e.name] = e.v
	}
	return p
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}
