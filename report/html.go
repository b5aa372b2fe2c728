package report

import (
	"bytes"
	"cmp"
	"fmt"
	"html/template"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The HTML report is one page that opens offline: inline CSS, inline SVG
// drawn here in Go, no script, and a Content-Security-Policy that forbids
// every fetch, so a copy mailed or attached to an incident shows the same
// thing anywhere. Every name that came from the traced service (category,
// op, detail, comm, exe) goes through html/template's escaping.
//
// Charts carry data-chart ("timeline", "categories") and each series or bar
// group carries data-category with its name, so tests (and users with a
// DOM inspector) can find them.

// topSeries is how many categories the charts draw on their own; the rest
// are summed as "other".
const topSeries = 8

// otherName names the sum of the categories beyond the top ones.
const otherName = "other"

// palette is Okabe & Ito's colour-blind-safe set (black swapped for Tol's
// wine, black being the total line), in the order series are stacked.
var palette = [topSeries]string{"#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#882255"}

// otherColor is the grey of everything beyond the top categories.
const otherColor = "#B4BAC2"

// HTML renders the report as one self-contained HTML page: the target and
// interval, baseline/final/peak/growth, the culprit, RSS growth over time
// stacked by category with markers, per-category bars, the categories and
// their top ops, and what the tracer could not keep.
func (r *Report) HTML() ([]byte, error) {
	var b bytes.Buffer
	if err := htmlPage.Execute(&b, newPageView(r)); err != nil {
		return nil, fmt.Errorf("rendering the HTML report: %w", err)
	}
	return b.Bytes(), nil
}

// px is a coordinate, printed with one decimal.
type px float64

func (p px) String() string { return strconv.FormatFloat(math.Round(float64(p)*10)/10, 'f', -1, 64) }

type card struct {
	Label, Value, Sub string
	Tone              string // "up", "down" or ""
}

type culpritView struct {
	Name, Kind, Color               string
	Primary                         bool // at least half of the ops' growth
	Share, RSS, Ops, Avg            string
	External, Retained, GrowthShare string
}

type legendItem struct {
	Name, Color, Value string
	Line               string // "solid" or "dash" for lines; "" for a swatch
}

type tick struct {
	Pos   px
	Label string
	Zero  bool
}

type areaPath struct {
	Name, Color, D, Title string
}

type markerMark struct {
	X, Y1, Y2, LX, LY px
	Anchor            string
	Label, Full, Kind string
	Color             string
}

type column struct {
	X, W  px
	Title string
}

type timelineChart struct {
	W, H                         int
	PlotX, PlotY, PlotH          px
	PlotRight, PlotBottom, ZeroY px
	TickEnd, UnitX, UnitY        px
	Areas                        []areaPath
	TotalD, ExternalD            string
	YTicks, XTicks               []tick
	Markers                      []markerMark
	Columns                      []column
	Legend                       []legendItem
	TotalTitle, ExternalTitle    string
	Caption                      string
}

type bar struct {
	X, Y, W, H px
	Fill       string
	Class      string
	Text       string
	TX, TY     px
	Anchor     string
}

type barRow struct {
	Name, Label, Color string
	Title              string
	LY                 px
	Bars               []bar
}

type barChart struct {
	W, H          int
	PlotX, Top    px
	Bottom, TickY px
	Rows          []barRow
	Ticks         []tick
	ShowExternal  bool
}

type categoryRow struct {
	Name, Kind, Color                 string
	Ops, OpenOps                      string
	RSS, External, Retained, Avg, Pct string
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
	TopN                                int
	Started, Ended, Duration, Tool      string
	Cards                               []card
	Culprit                             *culpritView
	NoCulprit                           string
	Timeline                            *timelineChart
	TimelineNote                        string
	Markers                             []markerRow
	Bars                                *barChart
	BarsNote                            string
	Categories                          []categoryRow
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
		if c.Ops == 0 {
			row.Ops, row.Avg = "–", "–"
		}
		if r.Growth.RSS > 0 {
			row.Pct = fmt.Sprintf("%.1f%%", 100*float64(c.RSSBytes)/float64(r.Growth.RSS))
		}
		v.Categories = append(v.Categories, row)
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
	rate := "–"
	if r.DurationSec > 0 {
		rate = fmt.Sprintf("%+.1f MB/min", float64(r.Growth.RSS)/(1<<20)/(r.DurationSec/60))
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
		{Label: "Growth rate", Value: rate, Tone: tone(r.Growth.RSS), Sub: "RSS over " + duration(time.Duration(r.DurationSec*float64(time.Second)))},
		{Label: "External growth", Value: signed(ext), Tone: tone(ext), Sub: extSub},
	}
}

func culprit(r *Report, colors map[string]string) (*culpritView, string) {
	if r.Culprit == nil {
		return nil, "No operation category grew: the growth belongs to threads and process-level buckets (see the categories below)."
	}
	name := *r.Culprit
	cv := &culpritView{
		Name: name, Color: colorOf(colors, name), Primary: r.CulpritShare >= 0.5,
		Share: fmt.Sprintf("%.0f%%", r.CulpritShare*100),
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

// Timeline chart geometry, in SVG user units.
const (
	tlWidth    = 1000
	tlPlotH    = 300
	tlLeft     = 72
	tlRight    = 24
	tlBottom   = 40
	tlRowH     = 15 // one row of marker labels
	tlBaseTop  = 14
	labelCharW = 6.3 // average width of an 11px character
)

// newTimelineChart draws the stacked areas of RSS growth by category, the
// total and external lines, and the markers; or says why it cannot.
func newTimelineChart(r *Report, colors map[string]string, markers []MarkerJSON) (*timelineChart, string) {
	switch len(r.Timeline) {
	case 0:
		return nil, "No timeline: tracing ended before memdiag took its first snapshot."
	case 1:
		return nil, "Only one snapshot was taken while tracing: a timeline needs at least two."
	}
	pts := slices.Clone(r.Timeline)
	slices.SortStableFunc(pts, func(a, b TimelineJSON) int { return a.Time.Compare(b.Time) })
	t0, t1 := pts[0].Time, pts[len(pts)-1].Time
	if !t1.After(t0) {
		return nil, "Every snapshot carries the same time: there is no timeline to draw."
	}

	// Series: the top categories, bottom-up, then "other" for the rest.
	type series struct {
		name, color string
		vals        []int64
	}
	var ss []series
	for _, name := range topCategories(r.Categories) {
		s := series{name: name, color: colors[name], vals: make([]int64, len(pts))}
		for i, p := range pts {
			s.vals[i] = p.Categories[name]
		}
		ss = append(ss, s)
	}
	other := series{name: otherName, color: otherColor, vals: make([]int64, len(pts))}
	hasOther, hasExternal := false, false
	for i, p := range pts {
		rest := p.RSSBytes
		for _, s := range ss {
			rest -= s.vals[i]
		}
		other.vals[i] = rest
		hasOther = hasOther || rest != 0
		hasExternal = hasExternal || p.ExternalBytes != 0
	}
	if hasOther {
		ss = append(ss, other)
	}

	// Stacks diverge from zero: the positive part of each series piles up
	// from zero, its negative part down, so a series that changes sign
	// never cuts across the others.
	type band struct{ lo, hi []int64 }
	up := make([]band, len(ss))
	down := make([]band, len(ss))
	hasUp := make([]bool, len(ss))
	hasDown := make([]bool, len(ss))
	var ymin, ymax int64
	for i := range pts {
		var pos, neg int64
		for k, s := range ss {
			v := s.vals[i]
			p, n := max(v, 0), min(v, 0)
			up[k].lo, up[k].hi = append(up[k].lo, pos), append(up[k].hi, pos+p)
			down[k].lo, down[k].hi = append(down[k].lo, neg+n), append(down[k].hi, neg)
			pos, neg = pos+p, neg+n
			hasUp[k], hasDown[k] = hasUp[k] || p != 0, hasDown[k] || n != 0
		}
		ymin = min(ymin, neg, pts[i].RSSBytes)
		ymax = max(ymax, pos, pts[i].RSSBytes)
		if hasExternal {
			ymin, ymax = min(ymin, pts[i].ExternalBytes), max(ymax, pts[i].ExternalBytes)
		}
	}
	yticks, ylo, yhi := byteScale(ymin, ymax, 0.04, 0.04, 5)

	// Marker labels go in rows above the plot, each in the first row where
	// it does not overlap the previous label. When they do not fit in
	// maxRows rows, markers show their number in the table below instead.
	plotW := float64(tlWidth - tlLeft - tlRight)
	xOf := func(t time.Time) float64 {
		return tlLeft + plotW*float64(t.Sub(t0))/float64(t1.Sub(t0))
	}
	type placed struct {
		m      MarkerJSON
		x, lx  float64
		row    int
		anchor string
		text   string
	}
	place := func(numbers bool) ([]placed, int, bool) {
		const maxRows = 4
		var out []placed
		var rowEnd []float64
		for n, m := range markers {
			if m.Time.Before(t0) || m.Time.After(t1) {
				continue
			}
			x := xOf(m.Time)
			p := placed{m: m, x: x, anchor: "start", lx: x + 4, text: truncate(cmp.Or(m.Label, m.Kind), 40), row: -1}
			if numbers {
				p.text = strconv.Itoa(n + 1)
			}
			w := float64(len([]rune(p.text)))*labelCharW + 8
			left, right := x, x+w
			if right > tlWidth-4 {
				p.anchor, p.lx = "end", x-4
				left, right = x-w, x
			}
			for i, end := range rowEnd {
				if left > end {
					p.row = i
					break
				}
			}
			if p.row < 0 {
				switch {
				case len(rowEnd) < maxRows:
					rowEnd = append(rowEnd, 0)
					p.row = len(rowEnd) - 1
				case !numbers:
					return nil, 0, false
				default:
					p.row = n % maxRows
				}
			}
			rowEnd[p.row] = max(rowEnd[p.row], right)
			out = append(out, p)
		}
		return out, len(rowEnd), true
	}
	marks, rows, ok := place(false)
	if !ok {
		marks, rows, _ = place(true)
	}
	top := float64(tlBaseTop + tlRowH*rows)
	c := &timelineChart{
		W: tlWidth, H: int(top) + tlPlotH + tlBottom,
		PlotX: tlLeft, PlotY: px(top), PlotH: tlPlotH,
		PlotRight: px(tlLeft + plotW), PlotBottom: px(top + tlPlotH),
	}
	c.TickEnd = c.PlotBottom + 5
	c.UnitX, c.UnitY = c.PlotRight, c.PlotBottom+30
	yOf := func(b int64) float64 {
		return top + tlPlotH*(yhi-float64(b))/(yhi-ylo)
	}
	c.ZeroY = px(yOf(0))
	for _, t := range yticks {
		c.YTicks = append(c.YTicks, tick{Pos: px(yOf(t.v)), Label: t.label, Zero: t.v == 0})
	}
	for _, t := range timeTicks(t0, t1) {
		c.XTicks = append(c.XTicks, tick{Pos: px(xOf(t.t)), Label: t.label})
	}
	c.Caption = "UTC"

	xs := make([]float64, len(pts))
	for i, p := range pts {
		xs[i] = xOf(p.Time)
	}
	polygon := func(b *strings.Builder, bd band) {
		for i := range pts {
			cmd := "L"
			if i == 0 {
				cmd = "M"
			}
			fmt.Fprintf(b, "%s%s %s", cmd, px(xs[i]), px(yOf(bd.hi[i])))
		}
		for i := len(pts) - 1; i >= 0; i-- {
			fmt.Fprintf(b, "L%s %s", px(xs[i]), px(yOf(bd.lo[i])))
		}
		b.WriteString("Z")
	}
	for k, s := range ss {
		var b strings.Builder
		if hasUp[k] || !hasDown[k] {
			polygon(&b, up[k])
		}
		if hasDown[k] {
			polygon(&b, down[k])
		}
		final := s.vals[len(pts)-1]
		c.Areas = append(c.Areas, areaPath{Name: s.name, Color: s.color, D: b.String(), Title: s.name + ": " + signed(final) + " at the end"})
		c.Legend = append(c.Legend, legendItem{Name: s.name, Color: s.color, Value: signed(final)})
	}
	line := func(val func(TimelineJSON) int64) string {
		var b strings.Builder
		for i, p := range pts {
			cmd := "L"
			if i == 0 {
				cmd = "M"
			}
			fmt.Fprintf(&b, "%s%s %s", cmd, px(xs[i]), px(yOf(val(p))))
		}
		return b.String()
	}
	last := pts[len(pts)-1]
	c.TotalD = line(func(p TimelineJSON) int64 { return p.RSSBytes })
	c.TotalTitle = "Total RSS growth: " + signed(last.RSSBytes) + " at the end"
	c.Legend = append(c.Legend, legendItem{Name: "total RSS growth", Color: "#111827", Value: signed(last.RSSBytes), Line: "solid"})
	if hasExternal {
		c.ExternalD = line(func(p TimelineJSON) int64 { return p.ExternalBytes })
		c.ExternalTitle = "External growth: " + signed(last.ExternalBytes) + " at the end"
		c.Legend = append(c.Legend, legendItem{Name: "external growth", Color: "#111827", Value: signed(last.ExternalBytes), Line: "dash"})
	}

	// One hover column per point, its tooltip the values at that time.
	for i, p := range pts {
		l, rt := float64(tlLeft), tlLeft+plotW
		if i > 0 {
			l = (xs[i-1] + xs[i]) / 2
		}
		if i < len(pts)-1 {
			rt = (xs[i] + xs[i+1]) / 2
		}
		var b strings.Builder
		fmt.Fprintf(&b, "%s (+%s)\ntotal RSS %s", clock(p.Time), duration(p.Time.Sub(t0)), signed(p.RSSBytes))
		if hasExternal {
			fmt.Fprintf(&b, "\nexternal %s", signed(p.ExternalBytes))
		}
		for k := len(ss) - 1; k >= 0; k-- {
			fmt.Fprintf(&b, "\n%s %s", ss[k].name, signed(ss[k].vals[i]))
		}
		c.Columns = append(c.Columns, column{X: px(l), W: px(max(rt-l, 0.5)), Title: b.String()})
	}

	for _, p := range marks {
		ly := tlBaseTop + float64(p.row)*tlRowH
		c.Markers = append(c.Markers, markerMark{
			X: px(p.x), Y1: px(ly + 3), Y2: c.PlotBottom, LX: px(p.lx), LY: px(ly),
			Anchor: p.anchor, Label: p.text, Full: clock(p.m.Time) + " " + p.m.Kind + ": " + p.m.Label,
			Kind: p.m.Kind, Color: markerColor(p.m.Kind),
		})
	}
	return c, ""
}

// Category bar chart geometry.
const (
	barWidth  = 1000
	barLabelW = 250
	barRight  = 120
	barTop    = 8
)

// newBarChart draws, per category, its RSS growth, external growth (when
// any category has some) and retained bytes as horizontal bars on one
// scale: the top categories, then "other" for the rest.
func newBarChart(r *Report, colors map[string]string) (*barChart, string) {
	if len(r.Categories) == 0 {
		return nil, "No categories: nothing was charged while tracing."
	}
	type row struct {
		name, color, kind  string
		rss, ext, retained int64
		n                  int
	}
	var rows []row
	top := topCategories(r.Categories)
	byName := map[string]int{}
	for _, name := range top {
		byName[name] = len(rows)
		rows = append(rows, row{name: name, color: colors[name]})
	}
	other := row{name: otherName, color: otherColor}
	for _, c := range r.Categories {
		i, ok := byName[c.Name]
		rw := &other
		if ok {
			rw = &rows[i]
		}
		rw.rss += c.RSSBytes
		rw.ext += c.ExternalBytes
		rw.retained += c.RetainedBytes
		rw.n++
		rw.kind = c.Kind
	}
	if other.rss != 0 || other.ext != 0 || other.retained != 0 {
		rows = append(rows, other)
	}
	if len(rows) == 0 {
		return nil, "No category grew, held external memory or retained anything."
	}
	showExt := false
	var lo, hi int64
	for _, rw := range rows {
		showExt = showExt || rw.ext != 0
		lo = min(lo, rw.rss, rw.ext, rw.retained)
		hi = max(hi, rw.rss, rw.ext, rw.retained)
	}
	// Room on the left of negative bars for their labels.
	ticks, tlo, thi := byteScale(lo, hi, 0.14, 0.02, 7)
	rowH := 38.0
	if showExt {
		rowH = 50
	}
	plotX := float64(barLabelW)
	plotW := float64(barWidth - barLabelW - barRight)
	xOf := func(b int64) float64 { return plotX + plotW*(float64(b)-tlo)/(thi-tlo) }
	zero := xOf(0)
	c := &barChart{
		W: barWidth, PlotX: px(plotX), Top: barTop,
		ShowExternal: showExt,
	}
	mk := func(v int64, y, h float64, fill, class, text string) bar {
		x0, x1 := min(zero, xOf(v)), max(zero, xOf(v))
		if v != 0 && x1-x0 < 1.5 {
			x1 = x0 + 1.5
		}
		if v == 0 && class != "rss" {
			text = "" // an empty bar needs no label
		}
		b := bar{X: px(x0), Y: px(y), W: px(x1 - x0), H: px(h), Fill: fill, Class: class, Text: text, TY: px(y + h/2 + 4)}
		if v < 0 {
			b.TX, b.Anchor = px(x0-6), "end"
		} else {
			b.TX, b.Anchor = px(x1+6), "start"
		}
		return b
	}
	y := float64(barTop)
	for _, rw := range rows {
		label := rw.name
		if rw.name == otherName && rw.n > 0 {
			label = fmt.Sprintf("other (%d categories)", rw.n)
		}
		br := barRow{Name: rw.name, Label: truncate(label, 31), Color: rw.color, LY: px(y + 16)}
		br.Title = fmt.Sprintf("%s\nRSS growth %s\nretained %s", label, signed(rw.rss), bytesText(rw.retained))
		br.Bars = append(br.Bars, mk(rw.rss, y+4, 16, rw.color, "rss", signed(rw.rss)))
		by := y + 23
		if showExt {
			br.Title += "\nexternal " + signed(rw.ext)
			br.Bars = append(br.Bars, mk(rw.ext, by, 9, rw.color, "ext", "external "+signed(rw.ext)))
			by += 12
		}
		br.Bars = append(br.Bars, mk(rw.retained, by, 9, rw.color, "ret", "retained "+bytesText(rw.retained)))
		c.Rows = append(c.Rows, br)
		y += rowH
	}
	c.Bottom = px(y)
	c.TickY = px(y + 16)
	c.H = int(y) + 26
	for _, t := range ticks {
		c.Ticks = append(c.Ticks, tick{Pos: px(xOf(t.v)), Label: t.label, Zero: t.v == 0})
	}
	return c, ""
}

type byteTick struct {
	v     int64
	label string
}

// byteScale picks about nticks round ticks for values in [lo, hi]
// (lo ≤ 0 ≤ hi): the axis runs from lo to hi, widened on each side with data
// by the fraction pad of the span (room for the data to breathe, or for
// labels), and the ticks are the multiples of a round step inside it.
func byteScale(lo, hi int64, padLo, padHi float64, nticks int) (ticks []byteTick, dlo, dhi float64) {
	if hi == lo {
		hi = lo + 1<<20
	}
	span := float64(hi - lo)
	dlo, dhi = float64(lo), float64(hi)
	if lo < 0 {
		dlo -= span * padLo
	}
	if hi > 0 {
		dhi += span * padHi
	}
	unit, name := float64(1<<10), "KB"
	switch {
	case max(abs64(lo), abs64(hi)) >= 1<<30:
		unit, name = 1<<30, "GB"
	case max(abs64(lo), abs64(hi)) >= 1<<20:
		unit, name = 1<<20, "MB"
	}
	step := max(nice(span/unit/float64(nticks))*unit, 1)
	for v := math.Ceil(dlo/step) * step; v <= dhi; v += step {
		n := v / unit
		label := "0"
		switch {
		case math.Abs(n) < 1e-9:
		case math.Abs(n-math.Round(n)) > 1e-9:
			label = strconv.FormatFloat(n, 'f', 1, 64) + " " + name
		default:
			label = strconv.FormatFloat(math.Round(n), 'f', 0, 64) + " " + name
		}
		if n > 1e-9 {
			label = "+" + label
		}
		ticks = append(ticks, byteTick{v: int64(math.Round(v)), label: label})
	}
	return ticks, dlo, dhi
}

// nice rounds x up to 1, 2 or 5 times a power of ten.
func nice(x float64) float64 {
	if x <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= x*0.999 {
			return m * p
		}
	}
	return 10 * p
}

type timeTick struct {
	t     time.Time
	label string
}

// timeTicks picks at most about eight round times in [t0, t1], in UTC.
func timeTicks(t0, t1 time.Time) []timeTick {
	span := t1.Sub(t0)
	steps := []time.Duration{
		time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second, 30 * time.Second,
		time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute,
		time.Hour, 2 * time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour,
	}
	step := steps[len(steps)-1]
	for _, s := range steps {
		if span/s <= 8 {
			step = s
			break
		}
	}
	for span/step > 8 {
		step *= 2
	}
	layout := "15:04:05"
	switch {
	case span > 36*time.Hour:
		layout = "Jan 2 15:04"
	case step >= time.Minute:
		layout = "15:04"
	}
	var out []timeTick
	for t := t0.UTC().Truncate(step); !t.After(t1); t = t.Add(step) {
		if t.Before(t0) {
			continue
		}
		out = append(out, timeTick{t: t, label: t.UTC().Format(layout)})
	}
	return out
}

// bytesText formats bytes for people: B, KB, MB, GB (binary, as in the log).
func bytesText(b int64) string {
	a := abs64(b)
	sign := ""
	if b < 0 {
		sign = "-"
	}
	f := float64(a)
	switch {
	case a < 1<<10:
		return fmt.Sprintf("%s%d B", sign, a)
	case a < 1<<20:
		return sign + trim(f/(1<<10)) + " KB"
	case a < 1<<30:
		return sign + trim(f/(1<<20)) + " MB"
	}
	return sign + strconv.FormatFloat(f/(1<<30), 'f', 2, 64) + " GB"
}

// trim keeps three significant digits or so: 1.23, 12.3, 123.
func trim(f float64) string {
	if f >= 100 {
		return strconv.FormatFloat(f, 'f', 0, 64)
	}
	return strconv.FormatFloat(f, 'f', 1, 64)
}

// signed formats bytes with a sign: +12.3 MB, -4.0 KB, 0 B.
func signed(b int64) string {
	if b > 0 {
		return "+" + bytesText(b)
	}
	return bytesText(b)
}

func count[T int | uint64](n T) string {
	s := strconv.FormatUint(uint64(n), 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func clock(t time.Time) string {
	if t.IsZero() {
		return "–"
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

func clockMilli(t time.Time) string {
	if t.IsZero() {
		return "–"
	}
	return t.UTC().Format("15:04:05.000")
}

// duration formats an interval briefly: 340ms, 22s, 5m 03s, 2h 05m.
func duration(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < 10*time.Second:
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Round(time.Second).Seconds()))
	case d < time.Hour:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm %02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	}
	d = d.Round(time.Minute)
	return fmt.Sprintf("%dh %02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
}

// exitStatus describes a wait(2) status.
func exitStatus(code int) string {
	if sig := code & 0x7f; sig != 0 {
		names := map[int]string{1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 6: "SIGABRT", 9: "SIGKILL", 11: "SIGSEGV", 13: "SIGPIPE", 15: "SIGTERM"}
		if n, ok := names[sig]; ok {
			return fmt.Sprintf("killed by signal %d (%s)", sig, n)
		}
		return fmt.Sprintf("killed by signal %d", sig)
	}
	return fmt.Sprintf("exited with status %d", code>>8&0xff)
}

func truncate(s string, n int) string {
	rs := []rune(s)
	if len(rs) <= n {
		return s
	}
	return string(rs[:n-1]) + "…"
}

func abs64(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

var htmlPage = template.Must(template.New("report").Parse(pageTemplate))

const pageTemplate = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<meta name="generator" content="{{.Tool}}">
<link rel="icon" href="data:,">
<title>{{.Title}}</title>
<style>
:root {
  color-scheme: light;
  --ink: #111827; --muted: #5b6472; --faint: #8a93a1; --line: #e4e7ec; --bg: #f4f5f7; --card: #fff;
  --up: #c2410c; --down: #047857; --warn: #b45309;
  --sans: -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Helvetica Neue", "Liberation Sans", "DejaVu Sans", Arial, sans-serif;
  --mono: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", "DejaVu Sans Mono", monospace;
}
* { box-sizing: border-box; }
html { background: var(--bg); }
body { margin: 0; font: 14px/1.45 var(--sans); color: var(--ink); -webkit-font-smoothing: antialiased; }
.page { max-width: 1120px; margin: 0 auto; padding: 0 24px 40px; }
header.hero { background: #1f2937; color: #f9fafb; }
header.hero .page { padding-top: 22px; padding-bottom: 22px; }
.brand { font-size: 12px; letter-spacing: .08em; text-transform: uppercase; color: #9ca3af; font-weight: 600; }
h1 { margin: 4px 0 8px; font-size: 26px; font-weight: 650; letter-spacing: -.01em; }
h1 .pid { font-weight: 400; color: #9ca3af; font-size: 18px; margin-left: 6px; }
.meta { display: flex; flex-wrap: wrap; gap: 6px 22px; color: #d1d5db; font-size: 13px; }
.meta b { color: #9ca3af; font-weight: 500; margin-right: 6px; }
.meta code { font-family: var(--mono); font-size: 12.5px; color: #f3f4f6; }
main.page { padding-top: 20px; }
.cards { display: grid; grid-template-columns: repeat(5, 1fr); gap: 12px; margin-bottom: 16px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 12px 14px; min-width: 0; }
.card .label { font-size: 11.5px; text-transform: uppercase; letter-spacing: .06em; color: var(--muted); font-weight: 600; }
.card .value { font-size: 22px; font-weight: 650; margin: 2px 0; font-variant-numeric: tabular-nums; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.card .value.up { color: var(--up); }
.card .value.down { color: var(--down); }
.card .sub { font-size: 12px; color: var(--muted); }
.callout { display: flex; gap: 14px; align-items: flex-start; background: var(--card); border: 1px solid var(--line); border-left: 6px solid var(--accent, #6b7280); border-radius: 10px; padding: 14px 18px; margin-bottom: 16px; }
.callout .badge { flex: none; font-size: 11px; font-weight: 700; letter-spacing: .07em; text-transform: uppercase; color: #fff; background: var(--accent, #6b7280); border-radius: 4px; padding: 3px 8px; margin-top: 3px; }
.callout .badge.soft { background: #e5e7eb; color: #374151; }
.callout .what { font-size: 18px; font-weight: 650; }
.callout .what code { font-family: var(--mono); font-size: 16.5px; word-break: break-all; }
.callout .why { color: var(--muted); margin-top: 2px; }
.callout .why b { color: var(--ink); font-weight: 600; font-variant-numeric: tabular-nums; }
.panel { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 16px 18px 14px; margin-bottom: 16px; }
.panel h2 { font-size: 15px; margin: 0 0 2px; font-weight: 650; }
.panel .hint { color: var(--muted); font-size: 12.5px; margin: 0 0 10px; }
.empty { color: var(--muted); background: #f9fafb; border: 1px dashed #d1d5db; border-radius: 8px; padding: 22px; text-align: center; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 16px; margin: 6px 0 6px; font-size: 12.5px; }
.legend span { display: inline-flex; align-items: center; gap: 6px; white-space: nowrap; }
.legend i { width: 12px; height: 12px; border-radius: 3px; display: inline-block; }
.legend i.line { height: 0; border-radius: 0; border-top: 2.5px solid; width: 18px; }
.legend i.dash { height: 0; border-radius: 0; border-top: 2.5px dashed; width: 18px; }
.legend i.ret { background: transparent !important; border: 1.5px solid #6b7280; }
.legend i.ext { opacity: .55; }
.legend em { font-style: normal; color: var(--muted); font-variant-numeric: tabular-nums; }
.legend .nm { font-family: var(--mono); font-size: 12px; }
svg.chart { width: 100%; height: auto; display: block; overflow: visible; }
svg.chart text { font-family: var(--sans); font-size: 11px; fill: var(--muted); }
svg.chart .grid { stroke: #eef0f3; stroke-width: 1; }
svg.chart .zero { stroke: #9ca3af; stroke-width: 1; }
svg.chart .axis { stroke: #cbd0d8; stroke-width: 1; }
svg.chart .area { stroke: #fff; stroke-width: .6; stroke-linejoin: round; fill-opacity: .9; }
svg.chart .halo { fill: none; stroke: #fff; stroke-width: 5; stroke-opacity: .85; stroke-linejoin: round; }
svg.chart .total { fill: none; stroke: #111827; stroke-width: 2; stroke-linejoin: round; }
svg.chart .external { fill: none; stroke: #111827; stroke-width: 1.8; stroke-dasharray: 6 4; stroke-linejoin: round; }
svg.chart .hover { fill: transparent; }
svg.chart .hover:hover { fill: rgba(17, 24, 39, .07); }
svg.chart .marker line { stroke-width: 1.2; stroke-dasharray: 3 3; }
svg.chart .marker text { font-size: 11px; font-weight: 600; }
svg.chart .cat { font-family: var(--mono); font-size: 12px; fill: var(--ink); }
svg.chart .val { font-size: 11.5px; fill: var(--ink); font-variant-numeric: tabular-nums; font-weight: 600; }
svg.chart .val.small { font-weight: 400; fill: var(--muted); font-size: 10.5px; }
svg.chart rect.ext { fill-opacity: .55; }
svg.chart rect.ret { fill-opacity: .16; stroke-width: 1.2; }
svg.chart .unit { font-size: 10.5px; fill: var(--faint); }
table { width: 100%; border-collapse: collapse; font-size: 13px; }
th { text-align: left; font-size: 11.5px; text-transform: uppercase; letter-spacing: .05em; color: var(--muted); font-weight: 600; border-bottom: 1px solid var(--line); padding: 6px 8px; white-space: nowrap; }
td { border-bottom: 1px solid #f0f1f4; padding: 6px 8px; vertical-align: top; }
tr:last-child td { border-bottom: 0; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.name { font-family: var(--mono); font-size: 12.5px; word-break: break-all; }
td.dim { color: var(--muted); }
td .sw { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 8px; vertical-align: 0; }
td .open { color: var(--muted); font-size: 11.5px; margin-left: 4px; }
tr.culprit td { background: #fff7ed; }
.pos { color: var(--up); }
.neg { color: var(--down); }
.kind { display: inline-block; font-size: 11px; border-radius: 10px; padding: 0 8px; background: #eef2f7; color: #374151; white-space: nowrap; }
.kind.http { background: #e0efff; color: #0b4f8a; }
.kind.outbound { background: #fdf0dc; color: #8a5300; }
.kind.process { background: #f1f1f1; color: #4b5563; }
details { border-top: 1px solid var(--line); padding: 8px 0; }
details:first-of-type { border-top: 0; }
summary { cursor: pointer; font-weight: 600; list-style-position: outside; }
summary code { font-family: var(--mono); font-size: 13px; }
summary .sw { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin: 0 8px 0 4px; }
summary em { font-style: normal; font-weight: 400; color: var(--muted); margin-left: 8px; }
details table { margin-top: 6px; }
.grid2 { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
.grid2 .panel { margin-bottom: 0; }
dl.kv { display: grid; grid-template-columns: 1fr auto; gap: 0; margin: 6px 0 0; font-size: 13px; }
dl.kv dt, dl.kv dd { margin: 0; padding: 5px 0; border-bottom: 1px solid #f0f1f4; }
dl.kv dd { text-align: right; font-variant-numeric: tabular-nums; font-weight: 600; }
dl.kv dt small { color: var(--faint); margin-left: 6px; }
dl.kv .bad { color: var(--warn); }
.status { display: inline-block; font-size: 12px; font-weight: 600; border-radius: 12px; padding: 2px 10px; margin: 4px 0 4px; }
.status.ok { background: #e6f4ee; color: #06603f; }
.status.warn { background: #fdf1de; color: #8a4a06; }
.markers { margin-top: 8px; font-size: 12.5px; }
.markers td { padding: 4px 8px; }
.markers .dot { display: inline-block; width: 8px; height: 8px; border-radius: 50%; margin-right: 6px; }
footer { color: var(--faint); font-size: 12px; text-align: center; margin-top: 8px; }
@media (max-width: 900px) { .cards { grid-template-columns: repeat(2, 1fr); } .grid2 { grid-template-columns: 1fr; } }
@media print { html { background: #fff; } .panel, .card, .callout { break-inside: avoid; } }
</style>
</head>
<body>
<header class="hero"><div class="page">
  <div class="brand">memdiag · memory growth report</div>
  <h1>{{.Comm}}<span class="pid">pid {{.PID}}</span></h1>
  <div class="meta">
    {{- if .Exe}}<span><b>exe</b><code>{{.Exe}}</code></span>{{end}}
    <span><b>mode</b>{{.Mode}}</span>
    <span><b>target</b>{{.Status}}</span>
  </div>
  <div class="meta">
    <span><b>traced</b>{{.Started}} → {{.Ended}}</span>
    <span><b>duration</b>{{.Duration}}</span>
  </div>
</div></header>
<main class="page">
<section class="cards">
{{- range .Cards}}
  <div class="card"><div class="label">{{.Label}}</div><div class="value {{.Tone}}">{{.Value}}</div><div class="sub">{{.Sub}}</div></div>
{{- end}}
</section>
{{with .Culprit -}}
<section class="callout culprit" data-culprit="{{.Name}}" style="--accent: {{.Color}}">
  {{if .Primary}}<div class="badge">Primary culprit</div>{{else}}<div class="badge soft">Largest grower</div>{{end}}
  <div>
    <div class="what"><code>{{.Name}}</code>{{if .Kind}} <span class="kind {{.Kind}}">{{.Kind}}</span>{{end}}</div>
    <div class="why"><b>{{.Share}}</b> of the growth charged to operations{{if .GrowthShare}} ({{.GrowthShare}} of all RSS growth){{end}}{{if .RSS}}: RSS <b>{{.RSS}}</b> over <b>{{.Ops}}</b> ops, <b>{{.Avg}}</b> per op on average, external <b>{{.External}}</b>, retained <b>{{.Retained}}</b>{{end}}.
    {{- if not .Primary}} No single category accounts for most of it.{{end}}</div>
  </div>
</section>
{{- else}}
<section class="callout"><div class="badge soft">No culprit</div><div class="why">{{.NoCulprit}}</div></section>
{{- end}}

<section class="panel">
  <h2>RSS growth over time, by category</h2>
  <p class="hint">Cumulative resident-memory growth since tracing began, stacked by category: up to {{.TopN}} categories with the largest final growth on their own, the rest summed as “other”; shrinking categories stack below zero. Hover over the chart for the values at each snapshot.</p>
{{- with .Timeline}}
  <div class="legend">
  {{- range .Legend}}
    <span>{{if .Line}}<i class="{{if eq .Line "dash"}}dash{{else}}line{{end}}" style="border-color: {{.Color}}"></i>{{else}}<i style="background: {{.Color}}"></i>{{end}}<span class="nm">{{.Name}}</span> <em>{{.Value}}</em></span>
  {{- end}}
  </div>
  <svg class="chart" data-chart="timeline" viewBox="0 0 {{.W}} {{.H}}" role="img" aria-label="RSS growth over time by category">
    <g class="yaxis">
    {{- range .YTicks}}
      <line class="{{if .Zero}}zero{{else}}grid{{end}}" x1="{{$.Timeline.PlotX}}" x2="{{$.Timeline.PlotRight}}" y1="{{.Pos}}" y2="{{.Pos}}"></line>
      <text x="{{$.Timeline.PlotX}}" dx="-8" y="{{.Pos}}" dy="4" text-anchor="end">{{.Label}}</text>
    {{- end}}
    </g>
    <g class="xaxis">
      <line class="axis" x1="{{.PlotX}}" x2="{{.PlotRight}}" y1="{{.PlotBottom}}" y2="{{.PlotBottom}}"></line>
    {{- range .XTicks}}
      <line class="axis" x1="{{.Pos}}" x2="{{.Pos}}" y1="{{$.Timeline.PlotBottom}}" y2="{{$.Timeline.TickEnd}}"></line>
      <line class="grid" x1="{{.Pos}}" x2="{{.Pos}}" y1="{{$.Timeline.PlotY}}" y2="{{$.Timeline.PlotBottom}}"></line>
      <text x="{{.Pos}}" y="{{$.Timeline.PlotBottom}}" dy="17" text-anchor="middle">{{.Label}}</text>
    {{- end}}
      <text class="unit" x="{{.UnitX}}" y="{{.UnitY}}" dy="6" text-anchor="end">{{.Caption}}</text>
    </g>
    <g class="series">
    {{- range .Areas}}
      <path class="area" data-category="{{.Name}}" fill="{{.Color}}" d="{{.D}}"><title>{{.Title}}</title></path>
    {{- end}}
    </g>
    <line class="zero" x1="{{.PlotX}}" x2="{{.PlotRight}}" y1="{{.ZeroY}}" y2="{{.ZeroY}}"></line>
    <path class="halo" d="{{.TotalD}}"></path>
    <path class="total" data-series="total" d="{{.TotalD}}"><title>{{.TotalTitle}}</title></path>
    {{- if .ExternalD}}
    <path class="external" data-series="external" d="{{.ExternalD}}"><title>{{.ExternalTitle}}</title></path>
    {{- end}}
    <g class="markers">
    {{- range .Markers}}
      <g class="marker" data-marker="{{.Kind}}"><title>{{.Full}}</title>
        <line x1="{{.X}}" x2="{{.X}}" y1="{{.Y1}}" y2="{{.Y2}}" stroke="{{.Color}}"></line>
        <text x="{{.LX}}" y="{{.LY}}" dy="9" text-anchor="{{.Anchor}}" fill="{{.Color}}">{{.Label}}</text>
      </g>
    {{- end}}
    </g>
    <g class="hovers">
    {{- range .Columns}}
      <rect class="hover" x="{{.X}}" y="{{$.Timeline.PlotY}}" width="{{.W}}" height="{{$.Timeline.PlotH}}"><title>{{.Title}}</title></rect>
    {{- end}}
    </g>
  </svg>
{{- else}}
  <div class="empty" data-chart-empty="timeline">{{.TimelineNote}}</div>
{{- end}}
{{- if .Markers}}
  <table class="markers"><thead><tr><th class="n">#</th><th>Event</th><th>Time</th><th class="n">Since start</th><th>What</th></tr></thead><tbody>
  {{- range .Markers}}
    <tr><td class="n dim">{{.N}}</td><td><span class="dot" style="background: {{.Color}}"></span>{{.Kind}}</td><td>{{.Time}}</td><td class="n">{{.Offset}}</td><td>{{.Label}}</td></tr>
  {{- end}}
  </tbody></table>
{{- end}}
</section>

<section class="panel">
  <h2>Growth by category</h2>
  <p class="hint">RSS growth charged to each category{{with .Bars}}{{if .ShowExternal}}, its external (off-heap) growth{{end}}{{end}} and the bytes its operations still retained at the end.</p>
{{- with .Bars}}
  <div class="legend">
    <span><i style="background: #6b7280"></i>RSS growth</span>
    {{- if .ShowExternal}}<span><i class="ext" style="background: #6b7280"></i>external growth</span>{{end}}
    <span><i class="ret"></i>retained</span>
  </div>
  <svg class="chart" data-chart="categories" viewBox="0 0 {{.W}} {{.H}}" role="img" aria-label="Growth by category">
    {{- range .Ticks}}
    <line class="{{if .Zero}}zero{{else}}grid{{end}}" x1="{{.Pos}}" x2="{{.Pos}}" y1="{{$.Bars.Top}}" y2="{{$.Bars.Bottom}}"></line>
    <text x="{{.Pos}}" y="{{$.Bars.TickY}}" text-anchor="middle">{{.Label}}</text>
    {{- end}}
    {{- range .Rows}}
    <g class="bars" data-category="{{.Name}}"><title>{{.Title}}</title>
      <text class="cat" x="{{$.Bars.PlotX}}" dx="-14" y="{{.LY}}" text-anchor="end">{{.Label}}</text>
      {{- range .Bars}}
      <rect class="{{.Class}}" x="{{.X}}" y="{{.Y}}" width="{{.W}}" height="{{.H}}" rx="2" fill="{{.Fill}}" stroke="{{.Fill}}"{{if eq .Class "rss"}} stroke-width="0"{{end}}></rect>
      {{- if .Text}}
      <text class="val{{if ne .Class "rss"}} small{{end}}" x="{{.TX}}" y="{{.TY}}" text-anchor="{{.Anchor}}">{{.Text}}</text>
      {{- end}}
      {{- end}}
    </g>
    {{- end}}
  </svg>
{{- else}}
  <div class="empty" data-chart-empty="categories">{{.BarsNote}}</div>
{{- end}}
</section>

<section class="panel">
  <h2>Categories</h2>
  <p class="hint">Every category, largest RSS growth first. “Avg / op” is RSS growth per completed operation.</p>
{{- if .Categories}}
  <table class="categories">
    <thead><tr><th>Category</th><th>Kind</th><th class="n">Ops</th><th class="n">RSS growth</th><th class="n">Share</th><th class="n">External</th><th class="n">Retained</th><th class="n">Avg / op</th></tr></thead>
    <tbody>
    {{- range .Categories}}
      <tr{{if .Culprit}} class="culprit"{{end}} data-category="{{.Name}}"><td class="name"><span class="sw" style="background: {{.Color}}"></span>{{.Name}}</td><td><span class="kind {{.Kind}}">{{.Kind}}</span></td><td class="n">{{.Ops}}{{if .OpenOps}}<span class="open">({{.OpenOps}})</span>{{end}}</td><td class="n {{if .Negative}}neg{{else}}pos{{end}}">{{.RSS}}</td><td class="n">{{.Pct}}</td><td class="n">{{.External}}</td><td class="n">{{.Retained}}</td><td class="n">{{.Avg}}</td></tr>
    {{- end}}
    </tbody>
  </table>
{{- else}}
  <div class="empty">No categories: nothing was charged while tracing.</div>
{{- end}}
</section>

{{- if .TopOps}}
<section class="panel">
  <h2>Top operations</h2>
  <p class="hint">The operations (or cycles) that grew the most in each category.</p>
  {{- range .TopOps}}
  <details{{if .Open}} open{{end}} data-category="{{.Name}}">
    <summary><span class="sw" style="background: {{.Color}}"></span><code>{{.Name}}</code><em>{{.Kind}} · RSS {{.RSS}}</em></summary>
    <table>
      <thead><tr><th>Operation</th><th>Detail</th><th class="n">PID</th><th class="n">Ops</th><th>Began (UTC)</th><th class="n">Took</th><th class="n">RSS</th><th class="n">External</th></tr></thead>
      <tbody>
      {{- range .Ops}}
        <tr><td class="name">{{.Name}}</td><td class="name dim">{{.Detail}}</td><td class="n">{{.PID}}</td><td class="n">{{.Ops}}</td><td>{{.Began}}</td><td class="n">{{.Took}}</td><td class="n">{{.RSS}}</td><td class="n">{{.External}}</td></tr>
      {{- end}}
      </tbody>
    </table>
  </details>
  {{- end}}
</section>
{{- end}}

<div class="grid2">
<section class="panel">
  <h2>Resident memory</h2>
  <table class="memory">
    <thead><tr><th></th><th class="n">RSS</th><th class="n">anon</th><th class="n">file</th><th class="n">shmem</th></tr></thead>
    <tbody>
    {{- range .Memory}}
      <tr><td>{{.Label}}</td><td class="n"><b>{{.RSS}}</b></td><td class="n">{{.Anon}}</td><td class="n">{{.File}}</td><td class="n">{{.Shmem}}</td></tr>
    {{- end}}
    </tbody>
  </table>
  <dl class="kv">
  {{- range .Counters}}
    <dt>{{.Label}}{{if .Note}}<small>{{.Note}}</small>{{end}}</dt><dd>{{.Value}}</dd>
  {{- end}}
  </dl>
</section>
<section class="panel health">
  <h2>Tracer health</h2>
  {{if .HealthOK}}<span class="status ok">Complete: nothing lost, no table overflowed</span>{{else}}<span class="status warn">Some data was not kept: see the highlighted counts</span>{{end}}
  <dl class="kv">
  {{- range .Health}}
    <dt{{if .Bad}} class="bad"{{end}}>{{.Label}}{{if .Note}}<small>{{.Note}}</small>{{end}}</dt><dd{{if .Bad}} class="bad"{{end}}>{{.Value}}</dd>
  {{- end}}
  </dl>
</section>
</div>

{{- if .Processes}}
<section class="panel" style="margin-top: 16px">
  <h2>Processes</h2>
  <table class="processes">
    <thead><tr><th class="n">PID</th><th class="n">Parent</th><th>Comm</th><th>Exe</th><th>State</th><th class="n">RSS growth</th></tr></thead>
    <tbody>
    {{- range .Processes}}
      <tr><td class="n">{{.PID}}</td><td class="n">{{.Parent}}</td><td class="name">{{.Comm}}</td><td class="name dim">{{.Exe}}</td><td>{{.Status}}</td><td class="n">{{.RSS}}</td></tr>
    {{- end}}
    {{- if .MoreProcesses}}
      <tr><td colspan="6" class="dim">… and {{.MoreProcesses}} more in the JSON report</td></tr>
    {{- end}}
    </tbody>
  </table>
</section>
{{- end}}
<footer>Generated by {{.Tool}}. This page is self-contained and makes no network requests. MB and GB are binary (2<sup>20</sup> and 2<sup>30</sup> bytes); times are UTC.</footer>
</main>
</body>
</html>
`
