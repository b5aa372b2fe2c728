package metrics

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/memdiag/memdiag/report"
)

// MaxCategories bounds the categories exported by name: the largest by
// |rss_bytes| are exported, the rest are summed into one series labelled
// category=OtherCategory, kind=OtherKind.
const MaxCategories = 200

// OtherCategory and OtherKind label the series that sums the categories
// beyond MaxCategories. No category of the report has kind "other", so the
// sum never collides with a category that is itself named "other".
const (
	OtherCategory = "other"
	OtherKind     = "other"
)

// rateWindow is how far back memdiag_growth_rate_rss_bytes_per_minute looks.
const rateWindow = time.Minute

// shutdownTimeout bounds how long Serve waits for scrapes in flight once its
// context ends.
const shutdownTimeout = 5 * time.Second

// Labels are the constant labels every series carries, and memdiag's version.
type Labels struct {
	ContainerID string // the target's container ID (see ContainerID); "" when unknown
	PodUID      string // the target's Kubernetes pod UID (see PodUID); "" when unknown
	Version     string // memdiag's version: only the version label of memdiag_build_info
	// Fleet mode (see Fleet) only: the Kubernetes namespace, pod and
	// container name of the target, labels of its series there.
	Namespace, Pod, Container string
}

// Exporter serves the metrics of one memdiag session. Update feeds it report
// snapshots; WriteTo and ServeListener expose the latest one. It is safe for
// concurrent use.
type Exporter struct {
	labels  []labelPair // the constant labels of every series
	version string

	// build says whether the collector emits memdiag_build_info (a
	// Fleet's targets leave it to the Fleet).
	build bool

	mu     sync.Mutex
	snap   *snapshot   // the latest Update, nil before the first
	ops    opsCounters // memdiag_category_ops_total, monotonic across Updates
	window []sample    // recent growth samples, oldest first, for the growth rate
	start  time.Time   // StartedAt of the session the samples belong to
}

// catKey names a category series.
type catKey struct{ name, kind string }

// otherKey is the series the categories beyond MaxCategories are summed in.
var otherKey = catKey{OtherCategory, OtherKind}

// catValues are a category series' gauges.
type catValues struct {
	rss, external, retained int64
}

// snapshot is what Collect emits, taken from one report.
type snapshot struct {
	pid         string
	rss         int64
	growth      int64
	rate        float64 // bytes per minute
	lost        uint64
	dumps       int
	culprit     string // "" when none
	suspect     string // verdict.suspect, "" when none
	suspectHeap string // verdict.suspect_kind
	categories  []catKey
	values      map[catKey]catValues
}

// sample is the RSS growth at one time.
type sample struct {
	at     time.Time
	growth int64
}

// opsCounters turns the report's cumulative op counts into counters that
// never go down, even when a category moves in or out of the "other" sum or
// a new session starts counting from zero.
type opsCounters struct {
	seen  map[catKey]int     // a category's op count at the previous Update
	total map[catKey]float64 // each series' counter
}

// New returns an exporter of memdiag's metrics and its own Go and process
// series, every series labelled with labels.
func New(labels Labels) *Exporter {
	e := newExporter(labels.Version, true)
	e.labels = []labelPair{{"container_id", labels.ContainerID}, {"pod_uid", labels.PodUID}}
	return e
}

func newExporter(version string, build bool) *Exporter {
	return &Exporter{version: version, build: build, ops: opsCounters{seen: map[catKey]int{}, total: map[catKey]float64{}}}
}

// Update replaces the exported values with those of r, a snapshot of the
// session so far, and dumps, the number of dumps taken. A nil r is ignored.
func (e *Exporter) Update(r *report.Report, dumps int) {
	if r == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if !r.StartedAt.Equal(e.start) || e.snap == nil {
		// A new session counts its ops from zero and its growth from
		// its own start.
		e.start = r.StartedAt
		e.ops.seen = map[catKey]int{}
		e.window = []sample{{at: r.StartedAt}}
	}
	s := &snapshot{
		pid:    strconv.FormatUint(uint64(r.Target.PID), 10),
		rss:    r.Final.RSS,
		growth: r.Growth.RSS,
		lost:   r.LostEvents,
		dumps:  dumps,
		values: map[catKey]catValues{},
	}
	if r.Culprit != nil {
		s.culprit = *r.Culprit
	}
	s.suspect, s.suspectHeap = r.Verdict.Suspect, r.Verdict.SuspectKind
	s.rate = e.growthRate(snapshotTime(r), r.Growth.RSS)

	cats := slices.Clone(r.Categories)
	slices.SortStableFunc(cats, func(a, b report.CategoryJSON) int {
		return cmp.Or(cmp.Compare(abs(b.RSSBytes), abs(a.RSSBytes)), cmp.Compare(a.Name, b.Name), cmp.Compare(a.Kind, b.Kind))
	})
	for i, c := range cats {
		k := catKey{c.Name, c.Kind}
		series := k
		if i >= MaxCategories {
			series = otherKey
		}
		if _, ok := s.values[series]; !ok {
			s.categories = append(s.categories, series)
		}
		v := s.values[series]
		v.rss += c.RSSBytes
		v.external += c.ExternalBytes
		v.retained += c.RetainedBytes
		s.values[series] = v
		e.ops.add(k, series, c.Ops)
	}
	e.snap = s
}

// add counts the ops category k completed since the previous Update into
// the counter of series.
func (o *opsCounters) add(k, series catKey, ops int) {
	delta := ops - o.seen[k]
	if delta < 0 { // the count restarted: all of it is new
		delta = ops
	}
	o.seen[k] = ops
	o.total[series] += float64(delta)
}

// snapshotTime is when r was taken.
func snapshotTime(r *report.Report) time.Time {
	if r.EndedAt.After(r.StartedAt) {
		return r.EndedAt
	}
	return r.StartedAt.Add(time.Duration(r.DurationSec * float64(time.Second)))
}

// growthRate returns the RSS growth per minute over the last rateWindow (or
// since the session started, when it is younger), and remembers the sample.
// The base is the latest sample at least rateWindow old, so Updates every
// interval give the rate since the previous one, as the [PERIODIC] log line.
func (e *Exporter) growthRate(at time.Time, growth int64) float64 {
	base := 0
	for i, s := range e.window {
		if !s.at.After(at.Add(-rateWindow)) {
			base = i
		}
	}
	e.window = e.window[base:]
	b := e.window[0]
	// Keep at most one sample a second: the window stays small however
	// often Update is called.
	if last := e.window[len(e.window)-1]; at.Sub(last.at) >= time.Second {
		e.window = append(e.window, sample{at: at, growth: growth})
	}
	elapsed := at.Sub(b.at)
	if elapsed <= 0 {
		return 0
	}
	return float64(growth-b.growth) / elapsed.Minutes()
}

func abs(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

// WriteTo writes the metrics in the Prometheus text format (version 0.0.4),
// as /metrics answers them.
func (e *Exporter) WriteTo(w io.Writer) (int64, error) {
	return writeExposition(w, func(x *exposition) {
		addSelf(x, e.labels)
		e.collect(x)
	})
}

// Listen opens addr for Serve, with a clear error when the address is
// already in use.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("metrics address %s is already in use by another process: choose another --metrics-addr: %w", addr, err)
	}
	if err != nil {
		return nil, fmt.Errorf("listening for metrics on %s: %w", addr, err)
	}
	return ln, nil
}

// ServeListener serves the metrics at /metrics on ln, which the caller
// opened with Listen (to fail before tracing starts), until ctx ends, then
// shuts down, giving scrapes in flight a few seconds. It returns nil after a
// shutdown caused by ctx, and the error otherwise. It closes ln.
func (e *Exporter) ServeListener(ctx context.Context, ln net.Listener) error {
	return serve(ctx, ln, func(w io.Writer) { e.WriteTo(w) })
}

// Descriptions of memdiag's series; doc.go lists them.
var (
	descTargetRSS = newDesc("memdiag_target_rss_bytes",
		"Resident memory of the target at the latest snapshot: baseline plus growth (report final.rss_bytes).", gaugeType, "pid")
	descGrowth = newDesc("memdiag_target_growth_rss_bytes",
		"Change of resident memory since tracing began, target and children (report growth.rss_bytes).", gaugeType)
	descRate = newDesc("memdiag_growth_rate_rss_bytes_per_minute",
		"RSS growth per minute over the last minute (since the start when tracing is younger).", gaugeType)
	descCatRSS = newDesc("memdiag_category_rss_bytes",
		"Resident memory growth charged to a category (report categories[].rss_bytes).", gaugeType, "category", "kind")
	descCatExternal = newDesc("memdiag_category_external_bytes",
		"External (off-heap) memory growth charged to a category (report categories[].external_bytes).", gaugeType, "category", "kind")
	descCatRetained = newDesc("memdiag_category_retained_bytes",
		"Memory allocated by a category's ops and still live (report categories[].retained_bytes).", gaugeType, "category", "kind")
	descCatOps = newDesc("memdiag_category_ops_total",
		"Operations completed in a category (report categories[].ops).", counterType, "category", "kind")
	descLost = newDesc("memdiag_lost_events_total",
		"Lifecycle events the ring buffer could not take (report lost_events); byte totals never depend on them.", counterType)
	descDumps = newDesc("memdiag_dumps_total",
		"Dumps taken at RSS thresholds.", counterType)
	descCulprit = newDesc("memdiag_culprit_info",
		"1 for the category that dominates growth (report culprit); absent when there is none.", gaugeType, "category")
	descSuspect = newDesc("memdiag_suspect_info",
		"1 for the category a mapping estimate alone points at, when no measured culprit keeps more (report verdict.suspect): where a heap grew, not shown to be who keeps it.", gaugeType, "category", "heap")
	descBuild = newDesc("memdiag_build_info",
		"1, labelled with memdiag's version.", gaugeType, "version")
)

// collect adds the exporter's series: memdiag_build_info (unless in a
// Fleet, which has its own) and the latest snapshot's.
func (e *Exporter) collect(x *exposition) {
	if e.build {
		x.add(descBuild, e.labels, 1, e.version)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.snap
	if s == nil {
		return
	}
	x.add(descTargetRSS, e.labels, float64(s.rss), s.pid)
	x.add(descGrowth, e.labels, float64(s.growth))
	x.add(descRate, e.labels, s.rate)
	x.add(descLost, e.labels, float64(s.lost))
	x.add(descDumps, e.labels, float64(s.dumps))
	if s.culprit != "" {
		x.add(descCulprit, e.labels, 1, s.culprit)
	}
	if s.suspect != "" {
		x.add(descSuspect, e.labels, 1, s.suspect, s.suspectHeap)
	}
	for _, k := range s.categories {
		v := s.values[k]
		x.add(descCatRSS, e.labels, float64(v.rss), k.name, k.kind)
		x.add(descCatExternal, e.labels, float64(v.external), k.name, k.kind)
		x.add(descCatRetained, e.labels, float64(v.retained), k.name, k.kind)
		x.add(descCatOps, e.labels, e.ops.total[k], k.name, k.kind)
	}
}
