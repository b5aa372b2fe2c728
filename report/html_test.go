package report_test

import (
	"fmt"
	"html"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/memdiag/memdiag/report"
)

// Hostile names: category and op names come from the network.
const (
	scriptName = `<script>alert("x")</script>`
	quoteName  = `POST /users/'o"neil' & co`
	urlName    = `GET https://api.example.com/v1/items`
)

// htmlTop8 are the eight categories with the largest |rss_bytes| of
// sampleHTMLReport: the charts draw them on their own.
var htmlTop8 = []string{"GET /api/records", "thread:cache", scriptName, quoteName, urlName, "inherited", "thread:parser", "POST /api/upload"}

// htmlRest are the categories beyond the top eight, summed as "other".
var htmlRest = []string{"released", "thread:reporter", "kernel"}

// sampleHTMLReport is a report built by hand: eleven categories (some with
// hostile names), a 50-point timeline and two markers.
func sampleHTMLReport() *report.Report {
	start := time.Date(2026, 3, 14, 9, 26, 0, 0, time.UTC)
	type cat struct {
		name, kind    string
		ops           int
		rss, ext, ret int64
	}
	cats := []cat{
		{"GET /api/records", "http", 1200, 96 * mib, 40 * mib, 64 * mib},
		{"thread:cache", "background", 0, 40 * mib, 0, 0},
		{scriptName, "http", 30, 18 * mib, 2 * mib, 6 * mib},
		{quoteName, "http", 12, 12 * mib, 0, 1 * mib},
		{urlName, "outbound", 300, 9 * mib, 3 * mib, 0},
		{"inherited", "process", 0, 6 * mib, 0, 0},
		{"thread:parser", "background", 0, -5 * mib, 0, 0},
		{"POST /api/upload", "http", 40, 4 * mib, 1 * mib, 2 * mib},
		{"released", "process", 0, -3 * mib, 0, 0},
		{"thread:reporter", "background", 0, 2 * mib, 0, 0},
		{"kernel", "process", 0, 512 << 10, 0, 0},
	}
	r := &report.Report{
		Version: report.ReportVersion, Tool: "memdiag test",
		Target:    report.Target{PID: 4242, Comm: "node", Exe: "/usr/bin/node", Mode: "attach"},
		StartedAt: start, EndedAt: start.Add(98 * time.Second), DurationSec: 98,
		Baseline: report.Baseline{Memory: report.Memory{RSS: 250 * mib, Anon: 200 * mib, File: 50 * mib}, HWM: 260 * mib},
	}
	var total, ext int64
	for _, c := range cats {
		cj := report.CategoryJSON{
			Name: c.name, Kind: c.kind, Ops: c.ops, RSSBytes: c.rss, RSSAnonBytes: c.rss,
			ExternalBytes: c.ext, RetainedBytes: c.ret, TopOps: []report.OpJSON{},
		}
		if c.ops > 0 {
			cj.AvgRSSBytesPerOp = c.rss / int64(c.ops)
			cj.TopOps = append(cj.TopOps,
				report.OpJSON{Name: c.name, Detail: "?limit=<b>1000</b>&x=\"y\"", PID: 4242, Ops: 1, Begin: start.Add(10 * time.Second), End: start.Add(10*time.Second + 340*time.Millisecond), RSSBytes: c.rss / 4, ExternalBytes: c.ext / 4},
				report.OpJSON{Name: c.name, Detail: "?limit=10", PID: 4242, Ops: 1, Begin: start.Add(40 * time.Second), End: start.Add(42 * time.Second), RSSBytes: c.rss / 8})
		}
		r.Categories = append(r.Categories, cj)
		total += c.rss
		ext += c.ext
	}
	r.Growth.Memory = report.Memory{RSS: total, Anon: total - 10*mib, File: 10 * mib}
	r.Final = r.Baseline.Memory.Add(r.Growth.Memory)
	r.Peak.RSS = r.Final.RSS + 12*mib
	r.Peak.GroupRSS = r.Peak.RSS + 4*mib
	culprit := "GET /api/records"
	r.Culprit, r.CulpritShare = &culprit, 0.69
	r.Processes = []report.ProcessJSON{
		{PID: 4242, Comm: "node", Exe: "/usr/bin/node", RSSBytes: total - 6*mib},
		{PID: 4250, Parent: 4242, Comm: "sh", Exe: "/bin/sh", Exited: true, RSSBytes: 6 * mib},
	}
	r.LostEvents = 3

	// Fifty points, two seconds apart: each category grows along its own
	// curve to its final value.
	const n = 50
	for i := range n {
		f := float64(i) / (n - 1)
		p := report.TimelineJSON{Time: start.Add(time.Duration(i) * 2 * time.Second), Categories: map[string]int64{}}
		for k, c := range cats {
			shape := f
			switch k % 3 {
			case 1:
				shape = f * f
			case 2:
				shape = min(1, 2*f)
			}
			v := int64(float64(c.rss) * shape)
			p.Categories[c.name] = v
			p.RSSBytes += v
		}
		p.ExternalBytes = int64(float64(ext) * f * (1 - 0.3*f) / 0.7)
		r.Timeline = append(r.Timeline, p)
	}
	r.Markers = []report.MarkerJSON{
		{Time: start.Add(40 * time.Second), Kind: "threshold", Label: "RSS crossed 300MB"},
		{Time: start.Add(70 * time.Second), Kind: "dump", Label: `dump <b>"x"</b> written`},
	}
	return r
}

// element is one start tag of a page.
type element struct {
	name    string
	attrs   map[string]string // values unescaped
	parents []string          // enclosing elements, outermost first
	chart   string            // data-chart of the enclosing svg, if any
}

// htmlVoid are HTML's void elements: they have no end tag.
var htmlVoid = map[string]bool{"area": true, "base": true, "br": true, "col": true, "embed": true, "hr": true, "img": true, "input": true, "link": true, "meta": true, "source": true, "track": true, "wbr": true}

// parseHTML is a strict little tokenizer for the pages HTML() writes: every
// start tag closed in order (void elements aside), every attribute quoted,
// no stray '<' or '>' in text. It returns the elements and the text of
// <style> elements.
func parseHTML(t *testing.T, page string) (elems []element, styles []string) {
	t.Helper()
	var stack []string
	var charts []string
	s := page
	if !strings.HasPrefix(s, "<!DOCTYPE html>") {
		t.Fatalf("page does not start with <!DOCTYPE html>: %.40q", s)
	}
	s = s[len("<!DOCTYPE html>"):]
	line := func() int { return strings.Count(page[:len(page)-len(s)], "\n") + 1 }
	for len(s) > 0 {
		i := strings.IndexAny(s, "<>")
		if i < 0 {
			break
		}
		if s[i] == '>' {
			t.Fatalf("line %d: stray '>' in text: %.60q", line(), s[max(0, i-30):])
		}
		s = s[i:]
		switch {
		case strings.HasPrefix(s, "<!--"):
			end := strings.Index(s, "-->")
			if end < 0 {
				t.Fatalf("line %d: unterminated comment", line())
			}
			s = s[end+3:]
		case strings.HasPrefix(s, "</"):
			end := strings.IndexByte(s, '>')
			if end < 0 {
				t.Fatalf("line %d: unterminated end tag", line())
			}
			name := s[2:end]
			if len(stack) == 0 || stack[len(stack)-1] != name {
				t.Fatalf("line %d: </%s> closes %v", line(), name, stack)
			}
			stack = stack[:len(stack)-1]
			if name == "svg" {
				charts = charts[:len(charts)-1]
			}
			s = s[end+1:]
		default:
			s = s[1:]
			n := 0
			for n < len(s) && (s[n] >= 'a' && s[n] <= 'z' || s[n] >= '0' && s[n] <= '9' || s[n] == '-') {
				n++
			}
			name := s[:n]
			if name == "" {
				t.Fatalf("line %d: '<' that starts no tag: %.60q", line(), s)
			}
			s = s[n:]
			el := element{name: name, attrs: map[string]string{}, parents: slices.Clone(stack)}
			selfClosed := false
			for {
				s = strings.TrimLeft(s, " \n\t")
				if s == "" {
					t.Fatalf("line %d: unterminated <%s>", line(), name)
				}
				if s[0] == '>' {
					s = s[1:]
					break
				}
				if strings.HasPrefix(s, "/>") {
					selfClosed = true
					s = s[2:]
					break
				}
				a := strings.IndexAny(s, "= >")
				if a <= 0 {
					t.Fatalf("line %d: bad attribute in <%s>: %.40q", line(), name, s)
				}
				an := s[:a]
				s = s[a:]
				if s[0] != '=' {
					el.attrs[an] = ""
					continue
				}
				if len(s) < 2 || s[1] != '"' {
					t.Fatalf("line %d: unquoted attribute %s in <%s>", line(), an, name)
				}
				end := strings.IndexByte(s[2:], '"')
				if end < 0 {
					t.Fatalf("line %d: unterminated attribute %s in <%s>", line(), an, name)
				}
				raw := s[2 : 2+end]
				if strings.ContainsAny(raw, "<>") {
					t.Fatalf("line %d: unescaped < or > in attribute %s=%q", line(), an, raw)
				}
				if _, dup := el.attrs[an]; dup {
					t.Fatalf("line %d: duplicate attribute %s in <%s>", line(), an, name)
				}
				el.attrs[an] = html.UnescapeString(raw)
				s = s[2+end+1:]
			}
			if len(charts) > 0 {
				el.chart = charts[len(charts)-1]
			}
			elems = append(elems, el)
			if htmlVoid[name] || selfClosed {
				continue
			}
			if name == "style" || name == "script" || name == "title" {
				end := strings.Index(s, "</"+name+">")
				if end < 0 {
					t.Fatalf("line %d: unterminated <%s>", line(), name)
				}
				if name == "style" {
					styles = append(styles, s[:end])
				} else if strings.ContainsAny(s[:end], "<>") {
					t.Fatalf("line %d: unescaped < or > in <%s>: %q", line(), name, s[:end])
				}
				s = s[end+len(name)+3:]
				continue
			}
			stack = append(stack, name)
			if name == "svg" {
				charts = append(charts, el.attrs["data-chart"])
			}
		}
	}
	if len(stack) != 0 {
		t.Fatalf("elements left open at the end: %v", stack)
	}
	return elems, styles
}

// checkOffline fails on anything that would make the browser fetch: a
// remote or relative src/href, url() or @import in CSS, script, iframes.
func checkOffline(t *testing.T, elems []element, styles []string) {
	t.Helper()
	for _, el := range elems {
		switch el.name {
		case "script", "iframe", "object", "embed", "img", "video", "audio", "source", "image", "use", "foreignobject", "base", "form":
			t.Errorf("page has a <%s> element: %v", el.name, el.attrs)
		}
		for name, val := range el.attrs {
			switch name {
			case "src", "href", "xlink:href", "srcset", "action", "poster", "data", "background":
				if !strings.HasPrefix(val, "data:") && !strings.HasPrefix(val, "#") {
					t.Errorf("<%s %s=%q> may fetch", el.name, name, val)
				}
			case "style":
				styles = append(styles, val)
			}
			if strings.HasPrefix(name, "on") {
				t.Errorf("<%s> has event handler %s=%q", el.name, name, val)
			}
		}
	}
	for _, css := range styles {
		for _, bad := range []string{"url(", "@import", "http:", "https:", "//fonts"} {
			if strings.Contains(strings.ToLower(css), bad) {
				t.Errorf("CSS contains %q", bad)
			}
		}
	}
}

// categoriesIn lists the data-category values inside the svg with the
// given data-chart, in order, without repeats.
func categoriesIn(elems []element, chart string) []string {
	var out []string
	for _, el := range elems {
		if c, ok := el.attrs["data-category"]; ok && el.chart == chart && !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

func hasChart(elems []element, chart string) bool {
	return slices.ContainsFunc(elems, func(el element) bool { return el.name == "svg" && el.attrs["data-chart"] == chart })
}

func TestHTMLReport(t *testing.T) {
	r := sampleHTMLReport()
	out, err := r.HTML()
	if err != nil {
		t.Fatalf("HTML: %v", err)
	}
	page := string(out)
	elems, styles := parseHTML(t, page)
	checkOffline(t, elems, styles)

	if !strings.Contains(page, `http-equiv="Content-Security-Policy" content="default-src &#39;none&#39;`) &&
		!strings.Contains(page, `http-equiv="Content-Security-Policy" content="default-src 'none'`) {
		t.Error("page has no Content-Security-Policy forbidding fetches")
	}
	// Hostile names are escaped everywhere: no raw markup survives.
	for _, raw := range []string{scriptName, `<b>1000</b>`, `<b>"x"</b>`, `'o"neil'`} {
		if strings.Contains(page, raw) {
			t.Errorf("page contains %q unescaped", raw)
		}
	}
	if !strings.Contains(page, "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;") {
		t.Error("the <script> category name is not in the page, HTML-escaped")
	}

	for _, chart := range []string{"timeline", "categories"} {
		if !hasChart(elems, chart) {
			t.Fatalf("no <svg data-chart=%q>", chart)
		}
		got := categoriesIn(elems, chart)
		want := append(slices.Clone(htmlTop8), "other")
		if !slices.Equal(got, want) {
			t.Errorf("%s chart: data-category = %q, want %q", chart, got, want)
		}
	}
	var markers []string
	for _, el := range elems {
		if k, ok := el.attrs["data-marker"]; ok && el.chart == "timeline" {
			markers = append(markers, k)
		}
	}
	if want := []string{"threshold", "dump"}; !slices.Equal(markers, want) {
		t.Errorf("timeline markers = %q, want %q", markers, want)
	}
	external := slices.ContainsFunc(elems, func(el element) bool { return el.chart == "timeline" && el.attrs["data-series"] == "external" })
	if !external {
		t.Error("timeline has no external growth line although external grew")
	}
	// Every category is in the table, the culprit marked.
	var rows []string
	for _, el := range elems {
		if c, ok := el.attrs["data-category"]; ok && el.name == "tr" {
			rows = append(rows, c)
			if el.attrs["class"] == "culprit" != (c == "GET /api/records") {
				t.Errorf("table row %q: class %q", c, el.attrs["class"])
			}
		}
	}
	if want := append(append([]string{}, htmlTop8[:6]...), htmlRest...); len(rows) != len(r.Categories) || !containsAll(rows, want) {
		t.Errorf("table rows = %q, want every category", rows)
	}
	if !slices.ContainsFunc(elems, func(el element) bool { return el.attrs["data-culprit"] == "GET /api/records" }) {
		t.Error("no culprit callout for GET /api/records")
	}
	for _, want := range []string{"pid 4242", "+180 MiB", "Primary culprit", "69%", "RSS crossed 300MB", "/usr/bin/node", "Lost lifecycle events"} {
		if !strings.Contains(html.UnescapeString(page), want) {
			t.Errorf("page lacks %q", want)
		}
	}
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

// TestHTMLReportDegenerate renders reports with nothing to chart: a
// message replaces each chart, and the page is still well formed.
func TestHTMLReportDegenerate(t *testing.T) {
	start := time.Date(2026, 3, 14, 9, 26, 0, 0, time.UTC)
	onePoint := sampleHTMLReport()
	onePoint.Timeline = onePoint.Timeline[:1]
	sameTime := sampleHTMLReport()
	for i := range sameTime.Timeline {
		sameTime.Timeline[i].Time = start
	}
	noGrowth := &report.Report{
		StartedAt: start, EndedAt: start.Add(time.Second),
		Categories: []report.CategoryJSON{{Name: "idle", Kind: "idle"}},
		Timeline: []report.TimelineJSON{
			{Time: start, Categories: map[string]int64{}},
			{Time: start.Add(time.Second), Categories: map[string]int64{}},
		},
	}
	shrinking := sampleHTMLReport()
	for i := range shrinking.Categories {
		shrinking.Categories[i].RSSBytes = -shrinking.Categories[i].RSSBytes
	}
	for i := range shrinking.Timeline {
		p := &shrinking.Timeline[i]
		p.RSSBytes = -p.RSSBytes
		for k, v := range p.Categories {
			p.Categories[k] = -v
		}
	}
	shrinking.Culprit = nil
	for _, tc := range []struct {
		name       string
		r          *report.Report
		timeline   bool
		categories bool
	}{
		{"empty", &report.Report{}, false, false},
		{"one point", onePoint, false, true},
		{"same time", sameTime, false, true},
		{"no growth", noGrowth, true, false},
		{"shrinking", shrinking, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := tc.r.HTML()
			if err != nil {
				t.Fatalf("HTML: %v", err)
			}
			elems, styles := parseHTML(t, string(out))
			checkOffline(t, elems, styles)
			for chart, want := range map[string]bool{"timeline": tc.timeline, "categories": tc.categories} {
				if got := hasChart(elems, chart); got != want {
					t.Errorf("svg data-chart=%q present = %v, want %v", chart, got, want)
				}
				empty := slices.ContainsFunc(elems, func(el element) bool { return el.attrs["data-chart-empty"] == chart })
				if empty == want {
					t.Errorf("message instead of the %s chart = %v, want %v", chart, empty, !want)
				}
			}
			if strings.Contains(string(out), "NaN") || strings.Contains(string(out), "Inf") {
				t.Errorf("page has NaN or Inf coordinates")
			}
		})
	}
}

func TestHTMLReportManyCategories(t *testing.T) {
	r := sampleHTMLReport()
	for i := range 100 {
		name := fmt.Sprintf("GET /r/%d", i)
		r.Categories = append(r.Categories, report.CategoryJSON{Name: name, Kind: "http", Ops: 1, RSSBytes: int64(i) << 10})
	}
	out, err := r.HTML()
	if err != nil {
		t.Fatalf("HTML: %v", err)
	}
	elems, _ := parseHTML(t, string(out))
	if got := categoriesIn(elems, "timeline"); len(got) != 9 {
		t.Errorf("timeline series = %q, want the top 8 and other", got)
	}
}

// TestHTMLCulpritShareOf checks the culprit banner says what its share is a
// share of, and that the processes table has an Exe column only when some
// process has an exe.
func TestHTMLCulpritShareOf(t *testing.T) {
	for _, tc := range []struct{ by, want string }{
		{"retained", "of the bytes operations still retained at the end"},
		{"rss", "of the RSS growth charged to operations"},
	} {
		r := sampleHTMLReport()
		r.CulpritBy = tc.by
		out, err := r.HTML()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), "<b>69%</b> "+tc.want) {
			t.Errorf("culprit by %s: banner lacks %q", tc.by, "69% "+tc.want)
		}
	}
	r := sampleHTMLReport()
	for i := range r.Processes {
		r.Processes[i].Exe = ""
	}
	out, err := r.HTML()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "<th>Exe</th>") {
		t.Errorf("processes table has an Exe column with no exe to show")
	}
	if !strings.Contains(string(out), "<th>Comm</th><th>State</th>") {
		t.Errorf("processes table lost its columns")
	}
}

// TestHTMLVerdict: the page says the verdict in its own words — under the
// culprit, or, with no culprit measured, beside the suspect a mapping
// estimate points at, marked as not measured.
func TestHTMLVerdict(t *testing.T) {
	r := sampleHTMLReport()
	r.Verdict = report.VerdictJSON{Culprit: *r.Culprit, Statement: "GET /leak retains 40.0 MiB", Method: "runtime heap sampled (go, every 512.0 KiB)"}
	out, err := r.HTML()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `<div class="why" data-verdict>Verdict: GET /leak retains 40.0 MiB <span class="method">(runtime heap sampled (go, every 512.0 KiB))</span>`) {
		t.Errorf("the culprit's banner lacks the verdict's sentence")
	}
	if !strings.Contains(string(out), "<p class=\"hint\" data-verdict-help>How to read the verdict:") {
		t.Errorf("the page does not explain the verdict")
	}

	r.Culprit, r.Verdict = nil, report.VerdictJSON{Suspect: "GET /churn", SuspectKind: "native", Statement: "no operation is measured to retain memory; the native heap grew 80.0 MiB during GET /churn's ops", Method: "mapping estimate (no runtime sampler)"}
	out, err = r.HTML()
	if err != nil {
		t.Fatal(err)
	}
	page := string(out)
	for _, want := range []string{`data-suspect="GET /churn"`, "Suspect, not measured", "<code>GET /churn</code>", "Verdict: no operation is measured to retain memory; the native heap grew 80.0 MiB"} {
		if !strings.Contains(page, want) {
			t.Errorf("no culprit, a suspect: the page lacks %q", want)
		}
	}
	if strings.Contains(page, "Primary culprit") {
		t.Errorf("a suspect is shown as the culprit")
	}
}
