package report

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The view model: everything the page template shows, computed from a
// Report and formatted for people.

type card struct {
	Label, Value, Sub string
	Unit              string // after the value, smaller: "/min"
	Tone              string // "up", "down" or ""
}

type culpritView struct {
	Name, Kind, Color               string
	Primary                         bool // at least half of the ops' growth
	Share, RSS, Ops, Avg            string
	ShareOf                         string // what Share is a share of
	External, Retained, GrowthShare string
}

type categoryRow struct {
	Name, Kind, Color                 string
	Ops, OpenOps                      string
	RSS, External, Retained, Avg, Pct string
	HighWater                         string // committed, not retained (RetainedHighWaterBytes)
	Culprit                           bool
	Negative                          bool
}

type opRow struct {
	Name, Detail, PID, Ops, Began, Took, RSS, External string
}

type opGroup struct {
	Name, Kind, Color, RSS string
	Open                   bool
	Ops                    []opRow
}

type memRow struct {
	Label, RSS, Anon, File, Shmem string
}

type kv struct {
	Label, Value, Note string
	Bad                bool
}

type markerRow struct {
	N                                int
	Time, Offset, Kind, Label, Color string
}

type processRow struct {
	PID, Parent, Comm, Exe, Status, RSS string
}

type pageView struct {
	Title, Comm, PID, Exe, Mode, Status string
	Cmdline                             string // the target's command line, "" when unknown
	ProcessExe                          bool   // some process has an exe to show
	TopN                                int
	Started, Ended, Duration, Tool      string
	Cards                               []card
	Culprit                             *culpritView
	NoCulprit                           string
	Suspect                             string // the verdict's suspect (a mapping estimate), or ""
	Verdict, VerdictMethod              string // the verdict's sentence and how it was measured
	Timeline                            *timelineChart
	TimelineNote                        string
	Markers                             []markerRow
	HeapDiffs                           []heapDiffView
	Bars                                *barChart
	BarsNote                            string
	Categories                          []categoryRow
	Negative                            string // names of the categories whose RSS shrank, or ""
	NegativeNote                        string // what a negative category means
	TopOps                              []opGroup
	Memory                              []memRow
	Counters                            []kv
	HealthOK                            bool
	Health                              []kv
	Processes                           []processRow
	MoreProcesses                       int
}

// newPageView computes everything the template shows.
func newPageView(r *Report) *pageView {
	v := &pageView{
		Comm:     cmp.Or(r.Target.Comm, "unknown"),
		PID:      strconv.FormatUint(uint64(r.Target.PID), 10),
		Exe:      r.Target.Exe,
		Cmdline:  r.Target.CommandLine(),
		Mode:     cmp.Or(r.Target.Mode, "attach"),
		Started:  clock(r.StartedAt),
		Ended:    clock(r.EndedAt),
		Duration: duration(time.Duration(r.DurationSec * float64(time.Second))),
		Tool:     cmp.Or(r.Tool, "memdiag"),
		Status:   "still running when tracing ended",
		TopN:     topSeries,
	}
	if r.Target.Exited {
		v.Status = "exited"
		if r.Target.ExitCode != nil {
			v.Status = exitStatus(*r.Target.ExitCode)
		}
	}
	v.Title = fmt.Sprintf("memdiag: %s (pid %s): RSS %s", v.Comm, v.PID, signed(r.Growth.RSS))

	colors := seriesColors(r.Categories)
	v.Cards = cards(r)
	v.Culprit, v.NoCulprit = culprit(r, colors)
	v.Suspect, v.Verdict, v.VerdictMethod = r.Verdict.Suspect, r.Verdict.Statement, r.Verdict.Method
	markers := slices.Clone(r.Markers)
	slices.SortStableFunc(markers, func(a, b MarkerJSON) int { return a.Time.Compare(b.Time) })
	v.Timeline, v.TimelineNote = newTimelineChart(r, colors, markers)
	v.Bars, v.BarsNote = newBarChart(r, colors)
	for i, m := range markers {
		v.Markers = append(v.Markers, markerRow{
			N: i + 1, Time: clock(m.Time), Offset: "+" + duration(m.Time.Sub(r.StartedAt)),
			Kind: m.Kind, Label: m.Label, Color: markerColor(m.Kind),
		})
	}
	v.HeapDiffs = heapDiffViews(r)
	for i, c := range r.Categories {
		row := categoryRow{
			Name: c.Name, Kind: c.Kind, Color: colorOf(colors, c.Name),
			Ops: strconv.Itoa(c.Ops), RSS: signed(c.RSSBytes), External: signed(c.ExternalBytes),
			Retained: bytesText(c.RetainedBytes), Avg: signed(c.AvgRSSBytesPerOp),
			Culprit: r.Culprit != nil && *r.Culprit == c.Name, Negative: c.RSSBytes < 0,
		}
		if c.OpenOps > 0 {
			row.OpenOps = fmt.Sprintf("%d open", c.OpenOps)
		}
		if c.RetainedHighWaterBytes > 0 {
			row.HighWater = bytesText(c.RetainedHighWaterBytes)
		}
		if c.Ops == 0 {
			row.Ops, row.Avg = "–", "–"
		}
		if r.Growth.RSS > 0 {
			row.Pct = fmt.Sprintf("%.1f%%", 100*float64(c.RSSBytes)/float64(r.Growth.RSS))
		}
		v.Categories = append(v.Categories, row)
		if row.Negative {
			v.Negative = strings.TrimPrefix(v.Negative+", "+c.Name, ", ")
		}
		if len(c.TopOps) == 0 {
			continue
		}
		g := opGroup{Name: c.Name, Kind: c.Kind, Color: colorOf(colors, c.Name), RSS: signed(c.RSSBytes), Open: i < topSeries}
		for _, o := range c.TopOps {
			row := opRow{
				Name: o.Name, Detail: o.Detail, PID: strconv.FormatUint(uint64(o.PID), 10), Ops: strconv.Itoa(o.Ops),
				Began: clockMilli(o.Begin), RSS: signed(o.RSSBytes), External: signed(o.ExternalBytes), Took: "–",
			}
			if !o.Begin.IsZero() && !o.End.IsZero() {
				row.Took = duration(o.End.Sub(o.Begin))
			}
			g.Ops = append(g.Ops, row)
		}
		v.TopOps = append(v.TopOps, g)
	}
	if v.Negative != "" {
		v.NegativeNote = negativeNote
	}
	v.Memory = []memRow{
		{"Baseline", bytesText(r.Baseline.RSS), bytesText(r.Baseline.Anon), bytesText(r.Baseline.File), bytesText(r.Baseline.Shmem)},
		{"Final", bytesText(r.Final.RSS), bytesText(r.Final.Anon), bytesText(r.Final.File), bytesText(r.Final.Shmem)},
		{"Growth", signed(r.Growth.RSS), signed(r.Growth.Anon), signed(r.Growth.File), signed(r.Growth.Shmem)},
	}
	v.Counters = []kv{
		{Label: "Peak before attach (VmHWM)", Value: bytesText(r.Baseline.HWM)},
		{Label: "Swap growth", Value: signed(r.Growth.Swap)},
		{Label: "Page faults", Value: count(r.Faults)},
		{Label: "Mapped / unmapped", Value: bytesText(int64(r.MappedBytes)) + " / " + bytesText(int64(r.UnmappedBytes))},
		{Label: "Made writable (mprotect)", Value: bytesText(int64(r.MadeWritableBytes))},
		{Label: "Advised free (madvise)", Value: bytesText(int64(r.AdvisedFreeBytes))},
		{Label: "Released at the target's exit", Value: signed(r.ExitReleaseBytes), Note: "kept out of growth"},
	}
	h := r.Health
	v.Health = []kv{
		{Label: "Lost lifecycle events", Value: count(r.LostEvents), Bad: r.LostEvents > 0, Note: "ring buffer full; byte totals are unaffected"},
		{Label: "Unattributed growth", Value: signed(r.UnattributedBytes), Bad: r.UnattributedBytes != 0, Note: "growth no bucket explains"},
		{Label: "Bucket table overflow", Value: count(h.BucketOverflow), Bad: h.BucketOverflow > 0, Note: "see --max-buckets"},
		{Label: "Address-space table overflow", Value: count(h.MMOverflow), Bad: h.MMOverflow > 0},
		{Label: "Target table overflow", Value: count(h.TargetOverflow), Bad: h.TargetOverflow > 0},
		{Label: "Pending-syscall overflow", Value: count(h.PendingOverflow), Bad: h.PendingOverflow > 0},
		{Label: "Undecodable records", Value: count(h.DecodeErrors), Bad: h.DecodeErrors > 0},
		{Label: "Socket table overflow", Value: count(h.SocketOverflow), Bad: h.SocketOverflow > 0},
		{Label: "Thread table overflow", Value: count(h.ThreadOverflow), Bad: h.ThreadOverflow > 0},
		{Label: "Region table overflow", Value: count(h.RegionOverflow), Bad: h.RegionOverflow > 0},
		{Label: "Ops evicted", Value: strconv.Itoa(h.OpsEvicted), Bad: h.OpsEvicted > 0},
	}
	v.HealthOK = true
	for _, k := range v.Health {
		v.HealthOK = v.HealthOK && !k.Bad
	}
	const maxProcesses = 50
	for i, p := range r.Processes {
		if i == maxProcesses {
			v.MoreProcesses = len(r.Processes) - i
			break
		}
		row := processRow{PID: strconv.FormatUint(uint64(p.PID), 10), Comm: p.Comm, Exe: p.Exe, RSS: signed(p.RSSBytes), Status: "running"}
		v.ProcessExe = v.ProcessExe || p.Exe != ""
		if p.Parent != 0 {
			row.Parent = strconv.FormatUint(uint64(p.Parent), 10)
		}
		if p.Exited {
			row.Status = "exited"
		}
		v.Processes = append(v.Processes, row)
	}
	return v
}

// externalGrowth is the growth of external memory: the categories' sum, or
// the last timeline point when no category has any.
func externalGrowth(r *Report) int64 {
	var sum int64
	for _, c := range r.Categories {
		sum += c.ExternalBytes
	}
	if sum == 0 && len(r.Timeline) > 0 {
		sum = r.Timeline[len(r.Timeline)-1].ExternalBytes
	}
	return sum
}

func cards(r *Report) []card {
	tone := func(b int64) string {
		switch {
		case b > 0:
			return "up"
		case b < 0:
			return "down"
		}
		return ""
	}
	peakSub := "target process"
	if r.Peak.GroupRSS > r.Peak.RSS {
		peakSub = "with children " + bytesText(r.Peak.GroupRSS)
	}
	rate, rateUnit, rateSub := "–", "", "RSS over "+duration(time.Duration(r.DurationSec*float64(time.Second)))
	if perMin, over, ok := recentRate(r); ok {
		rate, rateUnit = SignedBytes(int64(math.Round(perMin))), "/min"
		rateSub = "RSS trend over the last " + duration(over)
		if r.DurationSec > 0 {
			rateSub += fmt.Sprintf(" (whole run %s/min)", SignedBytes(int64(math.Round(float64(r.Growth.RSS)/(r.DurationSec/60)))))
		}
	} else if r.DurationSec > 0 {
		rate = SignedBytes(int64(math.Round(float64(r.Growth.RSS) / (r.DurationSec / 60))))
		rateUnit = "/min"
		rateSub += ", too few samples for a trend"
	}
	ext := externalGrowth(r)
	extSub := "none seen"
	if ext != 0 {
		extSub = "off-heap, summed over categories"
	}
	var extPeak int64
	for _, p := range r.Timeline {
		if abs64(p.ExternalBytes) > abs64(extPeak) {
			extPeak = p.ExternalBytes
		}
	}
	if extPeak != 0 {
		extSub = "peak " + signed(extPeak) + " while traced"
	}
	return []card{
		{Label: "RSS growth", Value: signed(r.Growth.RSS), Tone: tone(r.Growth.RSS),
			Sub: fmt.Sprintf("anon %s · file %s · shmem %s", signed(r.Growth.Anon), signed(r.Growth.File), signed(r.Growth.Shmem))},
		{Label: "Final RSS", Value: bytesText(r.Final.RSS), Sub: "from a baseline of " + bytesText(r.Baseline.RSS)},
		{Label: "Peak RSS", Value: bytesText(r.Peak.RSS), Sub: peakSub},
		{Label: "Growth rate", Value: rate, Unit: rateUnit, Tone: tone(r.Growth.RSS), Sub: rateSub},
		{Label: "External growth", Value: signed(ext), Tone: tone(ext), Sub: extSub},
	}
}

func culprit(r *Report, colors map[string]string) (*culpritView, string) {
	if r.Culprit == nil {
		if r.Verdict.Statement != "" {
			return nil, "" // the verdict's sentence says why
		}
		return nil, "No operation category grew: the growth belongs to threads and process-level buckets (see the categories below)."
	}
	name := *r.Culprit
	cv := &culpritView{
		Name: name, Color: colorOf(colors, name), Primary: r.CulpritShare >= 0.5,
		Share: fmt.Sprintf("%.0f%%", r.CulpritShare*100),
	}
	switch r.CulpritBy {
	case "retained":
		cv.ShareOf = "the bytes operations still retained at the end"
	default:
		cv.ShareOf = "the RSS growth charged to operations"
	}
	for _, c := range r.Categories {
		if c.Name != name {
			continue
		}
		cv.Kind = c.Kind
		cv.RSS = signed(c.RSSBytes)
		cv.Ops = strconv.Itoa(c.Ops)
		cv.Avg = signed(c.AvgRSSBytesPerOp)
		cv.External = signed(c.ExternalBytes)
		cv.Retained = bytesText(c.RetainedBytes)
		if r.Growth.RSS > 0 {
			cv.GrowthShare = fmt.Sprintf("%.0f%%", 100*float64(c.RSSBytes)/float64(r.Growth.RSS))
		}
	}
	return cv, ""
}

// seriesColors gives the top categories by final |RSS growth| their
// palette colour; every other category is drawn in otherColor.
func seriesColors(cats []CategoryJSON) map[string]string {
	out := map[string]string{}
	for i, name := range topCategories(cats) {
		out[name] = palette[i]
	}
	return out
}

// topCategories names up to topSeries categories with the largest final
// |RSS growth| (ties: larger |external| + retained, then name), leaving out
// categories with nothing at all.
func topCategories(cats []CategoryJSON) []string {
	cs := slices.Clone(cats)
	cs = slices.DeleteFunc(cs, func(c CategoryJSON) bool {
		return c.RSSBytes == 0 && c.ExternalBytes == 0 && c.RetainedBytes == 0
	})
	slices.SortStableFunc(cs, func(x, y CategoryJSON) int {
		return cmp.Or(cmp.Compare(abs64(y.RSSBytes), abs64(x.RSSBytes)),
			cmp.Compare(abs64(y.ExternalBytes)+abs64(y.RetainedBytes), abs64(x.ExternalBytes)+abs64(x.RetainedBytes)),
			cmp.Compare(x.Name, y.Name))
	})
	var names []string
	for _, c := range cs {
		if len(names) == topSeries {
			break
		}
		if !slices.Contains(names, c.Name) {
			names = append(names, c.Name)
		}
	}
	return names
}

func colorOf(colors map[string]string, name string) string {
	if c, ok := colors[name]; ok {
		return c
	}
	return otherColor
}

func markerColor(kind string) string {
	switch kind {
	case "threshold":
		return "#B45309"
	case "dump":
		return "#6D28D9"
	case "oom":
		return "#B91C1C"
	}
	return "#374151"
}

// heapDiffView is one heap diff of the "What grew between dumps" section.
type heapDiffView struct {
	From, To, Summary, Beside string
	Rows                      []heapGroupRow
}

type heapGroupRow struct {
	N                                int
	Name, Grew, Retained, Count, New string
	Path                             string
}

// heapDiffViews lays out the report's heap diffs.
func heapDiffViews(r *Report) []heapDiffView {
	var out []heapDiffView
	for _, d := range r.HeapDiffs {
		hv := heapDiffView{
			From: dirName(d.From), To: dirName(d.To), Beside: d.Beside,
			Summary: fmt.Sprintf("reachable heap %s → %s (%s), %s new objects", bytesText(d.ReachableFrom), bytesText(d.ReachableTo),
				signed(d.ReachableTo-d.ReachableFrom), count(int(d.NewObjects))),
		}
		for i, g := range d.Groups {
			hv.Rows = append(hv.Rows, heapGroupRow{N: i + 1, Name: g.Name, Grew: signed(g.GrewBytes), Retained: signed(g.RetainedDelta),
				Count: fmt.Sprintf("%+d", g.CountDelta), New: count(int(g.New)), Path: g.Path})
		}
		out = append(out, hv)
	}
	return out
}

// recentRate is the RSS growth rate per minute over the second half of the
// run: the least-squares slope of the timeline's points there (at least
// three, with the growth at the half interpolated between the points around
// it, and the end of the run). A service that grew once while it warmed
// up and then held steady has a rate near 0 here, where the whole run's
// average would extrapolate that one step.
func recentRate(r *Report) (perMin float64, over time.Duration, ok bool) {
	if r.DurationSec <= 0 || r.StartedAt.IsZero() {
		return 0, 0, false
	}
	half := r.StartedAt.Add(time.Duration(r.DurationSec / 2 * float64(time.Second)))
	var xs, ys []float64
	for i, p := range r.Timeline {
		if p.Time.Before(half) {
			continue
		}
		if len(xs) == 0 && i > 0 && p.Time.After(half) {
			// The growth at the half, between the points around it.
			q := r.Timeline[i-1]
			f := float64(half.Sub(q.Time)) / float64(p.Time.Sub(q.Time))
			xs = append(xs, 0)
			ys = append(ys, float64(q.RSSBytes)+f*float64(p.RSSBytes-q.RSSBytes))
		}
		xs = append(xs, p.Time.Sub(half).Minutes())
		ys = append(ys, float64(p.RSSBytes))
	}
	if end := r.StartedAt.Add(time.Duration(r.DurationSec * float64(time.Second))); len(xs) > 0 && end.After(r.Timeline[len(r.Timeline)-1].Time) {
		xs = append(xs, end.Sub(half).Minutes())
		ys = append(ys, float64(r.Growth.RSS))
	}
	if len(xs) < 3 {
		return 0, 0, false
	}
	var mx, my float64
	for i := range xs {
		mx += xs[i]
		my += ys[i]
	}
	mx /= float64(len(xs))
	my /= float64(len(ys))
	var sxy, sxx float64
	for i := range xs {
		sxy += (xs[i] - mx) * (ys[i] - my)
		sxx += (xs[i] - mx) * (xs[i] - mx)
	}
	if sxx == 0 {
		return 0, 0, false
	}
	return sxy / sxx, time.Duration(xs[len(xs)-1] * float64(time.Minute)), true
}
