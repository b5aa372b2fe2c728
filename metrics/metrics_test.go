package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/memdiag/memdiag/metrics"
	"github.com/memdiag/memdiag/report"
)

const (
	testContainer = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
	testPod       = "1b2c3d4e-5f60-7890-abcd-ef1234567890"
)

var t0 = time.Date(2026, 11, 27, 23, 0, 0, 0, time.UTC)

// sampleReport is a report as report.Build makes it, by hand.
func sampleReport() *report.Report {
	culprit := "api_records"
	r := &report.Report{
		Version:     report.ReportVersion,
		Tool:        "memdiag test",
		Target:      report.Target{PID: 4242, Comm: "node", Mode: "attach"},
		StartedAt:   t0,
		EndedAt:     t0.Add(2 * time.Minute),
		DurationSec: 120,
		Baseline:    report.Baseline{Memory: report.Memory{RSS: 250 << 20}},
		Final:       report.Memory{RSS: 250<<20 + 90<<20},
		Culprit:     &culprit,
		LostEvents:  7,
		Categories: []report.CategoryJSON{
			{Name: "gun_sync", Kind: "outbound", Ops: 12, RSSBytes: 20 << 20, ExternalBytes: 3 << 20, RetainedBytes: 1 << 20},
			{Name: "api_records", Kind: "http", Ops: 1500, RSSBytes: 80 << 20, ExternalBytes: 40 << 20, RetainedBytes: 35 << 20},
			{Name: "node", Kind: "background", Ops: 0, RSSBytes: -10 << 20},
		},
	}
	r.Growth.RSS = 90 << 20
	return r
}

func newExporter() *metrics.Exporter {
	return metrics.New(metrics.Labels{ContainerID: testContainer, PodUID: testPod, Version: "v1.2.3"})
}

// server is what serves metrics: an Exporter or a Fleet.
type server interface {
	ServeListener(ctx context.Context, ln net.Listener) error
}

// serveURL serves s on a loopback port until the test ends and returns
// the URL of its metrics.
func serveURL(t *testing.T, s server) string {
	t.Helper()
	ln, err := metrics.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeListener(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeListener: %v", err)
		}
	})
	return "http://" + ln.Addr().String() + "/metrics"
}

// scrape serves s's metrics, fetches them over HTTP and parses the text
// format.
func scrape(t *testing.T, s server) map[string]*dto.MetricFamily {
	t.Helper()
	return scrapeURL(t, serveURL(t, s))
}

func scrapeURL(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scraping: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scraping: status %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing the scrape: %v", err)
	}
	return fams
}

func labelsOf(m *dto.Metric) map[string]string {
	l := map[string]string{}
	for _, p := range m.GetLabel() {
		l[p.GetName()] = p.GetValue()
	}
	return l
}

// series returns the value of the series of family name whose labels
// include want, failing unless exactly one matches.
func series(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("%s: not exported", name)
	}
	var found []float64
next:
	for _, m := range f.GetMetric() {
		l := labelsOf(m)
		for k, v := range want {
			if l[k] != v {
				continue next
			}
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			found = append(found, m.GetCounter().GetValue())
		case dto.MetricType_GAUGE:
			found = append(found, m.GetGauge().GetValue())
		default:
			found = append(found, m.GetUntyped().GetValue())
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s%v: %d series match, want 1", name, want, len(found))
	}
	return found[0]
}

func cat(name, kind string) map[string]string {
	return map[string]string{"category": name, "kind": kind}
}

func TestUpdateMatchesReport(t *testing.T) {
	e := newExporter()
	r := sampleReport()
	e.Update(r, 3)
	fams := scrape(t, e)

	type check struct {
		name   string
		labels map[string]string
		want   float64
		typ    dto.MetricType
	}
	checks := []check{
		{"memdiag_target_rss_bytes", map[string]string{"pid": "4242"}, float64(r.Final.RSS), dto.MetricType_GAUGE},
		{"memdiag_target_growth_rss_bytes", nil, float64(r.Growth.RSS), dto.MetricType_GAUGE},
		{"memdiag_growth_rate_rss_bytes_per_minute", nil, float64(r.Growth.RSS) / 2, dto.MetricType_GAUGE}, // over 2 minutes
		{"memdiag_lost_events_total", nil, 7, dto.MetricType_COUNTER},
		{"memdiag_dumps_total", nil, 3, dto.MetricType_COUNTER},
		{"memdiag_culprit_info", map[string]string{"category": "api_records"}, 1, dto.MetricType_GAUGE},
		{"memdiag_build_info", map[string]string{"version": "v1.2.3"}, 1, dto.MetricType_GAUGE},
	}
	for _, c := range r.Categories {
		checks = append(checks,
			check{"memdiag_category_rss_bytes", cat(c.Name, c.Kind), float64(c.RSSBytes), dto.MetricType_GAUGE},
			check{"memdiag_category_external_bytes", cat(c.Name, c.Kind), float64(c.ExternalBytes), dto.MetricType_GAUGE},
			check{"memdiag_category_retained_bytes", cat(c.Name, c.Kind), float64(c.RetainedBytes), dto.MetricType_GAUGE},
			check{"memdiag_category_ops_total", cat(c.Name, c.Kind), float64(c.Ops), dto.MetricType_COUNTER},
		)
	}
	for _, c := range checks {
		if got := series(t, fams, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
		if typ := fams[c.name].GetType(); typ != c.typ {
			t.Errorf("%s: type %v, want %v", c.name, typ, c.typ)
		}
	}
	for _, name := range []string{"memdiag_category_rss_bytes", "memdiag_category_ops_total"} {
		if n := len(fams[name].GetMetric()); n != len(r.Categories) {
			t.Errorf("%s: %d series, want %d (no \"other\" below the bound)", name, n, len(r.Categories))
		}
	}

	// Every series, the Go and process collectors' too, names the target.
	var sawGo bool
	for name, f := range fams {
		sawGo = sawGo || strings.HasPrefix(name, "go_")
		for _, m := range f.GetMetric() {
			l := labelsOf(m)
			if l["container_id"] != testContainer || l["pod_uid"] != testPod {
				t.Errorf("%s%v: constant labels missing", name, l)
			}
		}
	}
	if !sawGo {
		t.Error("the Go collector's series are missing")
	}
}

func TestBeforeUpdate(t *testing.T) {
	e := newExporter()
	fams := scrape(t, e)
	if got := series(t, fams, "memdiag_build_info", map[string]string{"version": "v1.2.3"}); got != 1 {
		t.Errorf("memdiag_build_info = %v, want 1", got)
	}
	for name := range fams {
		if strings.HasPrefix(name, "memdiag_") && name != "memdiag_build_info" {
			t.Errorf("%s exported before the first Update", name)
		}
	}
	e.Update(nil, 1) // ignored
	if _, ok := scrape(t, e)["memdiag_dumps_total"]; ok {
		t.Error("Update(nil) exported a snapshot")
	}
}

func TestEmptyLabels(t *testing.T) {
	e := metrics.New(metrics.Labels{})
	e.Update(sampleReport(), 0)
	fams := scrape(t, e)
	if got := series(t, fams, "memdiag_target_growth_rss_bytes", map[string]string{"container_id": "", "pod_uid": ""}); got != 90<<20 {
		t.Errorf("growth = %v", got)
	}
	if got := series(t, fams, "memdiag_build_info", map[string]string{"version": ""}); got != 1 {
		t.Errorf("memdiag_build_info = %v, want 1", got)
	}
}

func TestNoCulprit(t *testing.T) {
	e := newExporter()
	r := sampleReport()
	r.Culprit = nil
	e.Update(r, 0)
	if f, ok := scrape(t, e)["memdiag_culprit_info"]; ok {
		t.Errorf("memdiag_culprit_info exported without a culprit: %v", f)
	}
	if f, ok := scrape(t, e)["memdiag_suspect_info"]; ok {
		t.Errorf("memdiag_suspect_info exported without a suspect: %v", f)
	}
	// A suspect (a mapping estimate) is its own series, never the culprit's.
	r.Verdict.Suspect, r.Verdict.SuspectKind = "api_records", "native"
	e.Update(r, 0)
	fams := scrape(t, e)
	if got := series(t, fams, "memdiag_suspect_info", map[string]string{"category": "api_records", "heap": "native"}); got != 1 {
		t.Errorf("memdiag_suspect_info = %v, want 1", got)
	}
	if f, ok := fams["memdiag_culprit_info"]; ok {
		t.Errorf("memdiag_culprit_info exported for a suspect: %v", f)
	}
}

func TestGrowthRate(t *testing.T) {
	e := newExporter()
	r := sampleReport()
	rate := func() float64 {
		return series(t, scrape(t, e), "memdiag_growth_rate_rss_bytes_per_minute", nil)
	}
	steps := []struct {
		at     time.Duration // EndedAt - StartedAt
		growth int64
		want   float64
	}{
		{30 * time.Second, 10 << 20, 20 << 20},                        // younger than a minute: since the start
		{45 * time.Second, 16 << 20, float64(16<<20) / 0.75},          // since the start
		{90 * time.Second, 40 << 20, 30 << 20},                        // since 30s, the latest Update a minute old
		{150 * time.Second, 100 << 20, 60 << 20},                      // since 90s
		{211 * time.Second, 70 << 20, -float64(30<<20) / (61.0 / 60)}, // since 150s; shrinking
	}
	for _, s := range steps {
		r.EndedAt = t0.Add(s.at)
		r.DurationSec = s.at.Seconds()
		r.Growth.RSS = s.growth
		e.Update(r, 0)
		if got := rate(); fmt.Sprintf("%.6g", got) != fmt.Sprintf("%.6g", s.want) {
			t.Errorf("at %s: rate %v, want %v", s.at, got, s.want)
		}
	}

	// A new session measures from its own start.
	r2 := sampleReport()
	r2.StartedAt = t0.Add(time.Hour)
	r2.EndedAt = r2.StartedAt.Add(time.Minute)
	r2.Growth.RSS = 5 << 20
	e.Update(r2, 0)
	if got := rate(); got != 5<<20 {
		t.Errorf("new session: rate %v, want %v", got, 5<<20)
	}
}

// manyCategories returns n categories whose |rss| is distinct: category i
// has rss (i+1) MiB, negative for odd i.
func manyCategories(n int) []report.CategoryJSON {
	cs := make([]report.CategoryJSON, n)
	for i := range cs {
		rss := int64(i+1) << 20
		if i%2 == 1 {
			rss = -rss
		}
		cs[i] = report.CategoryJSON{Name: fmt.Sprintf("GET /r%d", i), Kind: "http", Ops: i + 1, RSSBytes: rss, ExternalBytes: int64(i), RetainedBytes: 2 * int64(i)}
	}
	return cs
}

func TestCardinalityBound(t *testing.T) {
	const n = metrics.MaxCategories + 57
	e := newExporter()
	r := sampleReport()
	r.Categories = manyCategories(n)
	e.Update(r, 0)
	fams := scrape(t, e)

	// The largest |rss| are the last MaxCategories; the first 57 are summed.
	var other report.CategoryJSON
	for i, c := range r.Categories {
		if i >= n-metrics.MaxCategories {
			if got := series(t, fams, "memdiag_category_rss_bytes", cat(c.Name, c.Kind)); got != float64(c.RSSBytes) {
				t.Errorf("%s: rss %v, want %v", c.Name, got, c.RSSBytes)
			}
			continue
		}
		other.RSSBytes += c.RSSBytes
		other.ExternalBytes += c.ExternalBytes
		other.RetainedBytes += c.RetainedBytes
		other.Ops += c.Ops
	}
	for _, name := range []string{"memdiag_category_rss_bytes", "memdiag_category_external_bytes", "memdiag_category_retained_bytes", "memdiag_category_ops_total"} {
		if got := len(fams[name].GetMetric()); got != metrics.MaxCategories+1 {
			t.Errorf("%s: %d series, want %d", name, got, metrics.MaxCategories+1)
		}
	}
	o := cat(metrics.OtherCategory, metrics.OtherKind)
	for name, want := range map[string]int64{
		"memdiag_category_rss_bytes":      other.RSSBytes,
		"memdiag_category_external_bytes": other.ExternalBytes,
		"memdiag_category_retained_bytes": other.RetainedBytes,
		"memdiag_category_ops_total":      int64(other.Ops),
	} {
		if got := series(t, fams, name, o); got != float64(want) {
			t.Errorf("%s%v = %v, want %v", name, o, got, want)
		}
	}
}

func TestOpsCounterNeverGoesDown(t *testing.T) {
	const n = metrics.MaxCategories + 1
	e := newExporter()
	r := sampleReport()
	r.Categories = manyCategories(n)
	small := &r.Categories[0] // the smallest |rss|: summed in "other"
	small.Ops = 10
	e.Update(r, 0)
	o := cat(metrics.OtherCategory, metrics.OtherKind)
	if got := series(t, scrape(t, e), "memdiag_category_ops_total", o); got != 10 {
		t.Fatalf("other ops = %v, want 10", got)
	}

	// It grows past every other category: it gets its own series, which
	// counts from then on; "other" keeps what it counted.
	small.Ops = 15
	small.RSSBytes = 1 << 40
	e.Update(r, 0)
	fams := scrape(t, e)
	if got := series(t, fams, "memdiag_category_ops_total", cat(small.Name, small.Kind)); got != 5 {
		t.Errorf("moved category ops = %v, want 5 (the ops since it left \"other\")", got)
	}
	// The category it displaced (index 1, rss -2 MiB, 2 ops) joins
	// "other": its own series goes, "other" counts its ops from now on.
	displaced := r.Categories[1]
	for _, m := range fams["memdiag_category_ops_total"].GetMetric() {
		if labelsOf(m)["category"] == displaced.Name {
			t.Errorf("%s is still exported on its own", displaced.Name)
		}
	}
	if got := series(t, fams, "memdiag_category_ops_total", o); got != 10 {
		t.Errorf("other ops = %v, want 10", got)
	}

	// A new session counts from zero: the counters keep going up.
	r.StartedAt = t0.Add(time.Hour)
	r.EndedAt = r.StartedAt.Add(time.Minute)
	for i := range r.Categories {
		r.Categories[i].Ops = 1
	}
	e.Update(r, 0)
	fams = scrape(t, e)
	if got := series(t, fams, "memdiag_category_ops_total", cat(small.Name, small.Kind)); got != 6 {
		t.Errorf("after a new session: ops = %v, want 6", got)
	}
	if got := series(t, fams, "memdiag_category_ops_total", o); got != 11 {
		t.Errorf("after a new session: other ops = %v, want 11 (+1 from %s)", got, displaced.Name)
	}
}

func TestServe(t *testing.T) {
	e := newExporter()
	e.Update(sampleReport(), 1)

	// Listen + ServeListener, scraped over the network.
	ln, err := metrics.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.ServeListener(ctx, ln) }()
	base := "http://" + ln.Addr().String()
	fams := scrapeURL(t, base+"/metrics")
	if got := series(t, fams, "memdiag_dumps_total", nil); got != 1 {
		t.Errorf("memdiag_dumps_total = %v, want 1", got)
	}
	resp, err := http.Get(base + "/nothing")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("/nothing: status %d, want 404", resp.StatusCode)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("ServeListener after cancel: %v", err)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Error("still listening after shutdown")
	}
}

func TestServeAddressInUse(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := taken.Addr().String()

	_, err = metrics.Listen(addr)
	if err == nil {
		t.Fatal("Listen on a taken address succeeded")
	}
	if !strings.Contains(err.Error(), addr+" is already in use") || !strings.Contains(err.Error(), "--metrics-addr") {
		t.Errorf("error does not say the address is taken and what to do: %v", err)
	}
	if _, err := metrics.Listen(addr); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("Listen on a taken address: %v, want EADDRINUSE wrapped", err)
	}
}
