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

// Chart geometry: the timeline and category charts as inline SVG, with
// their scales and ticks, in SVG user units.

type px float64

func (p px) String() string { return strconv.FormatFloat(math.Round(float64(p)*10)/10, 'f', -1, 64) }

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
	unit, name := float64(1<<10), "KiB"
	switch {
	case max(abs64(lo), abs64(hi)) >= 1<<30:
		unit, name = 1<<30, "GiB"
	case max(abs64(lo), abs64(hi)) >= 1<<20:
		unit, name = 1<<20, "MiB"
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
