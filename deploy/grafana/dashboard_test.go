package grafana

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/memdiag/memdiag/metrics"
	"github.com/memdiag/memdiag/report"
)

// dashboard is the part of Grafana's dashboard model the test reads.
type dashboard struct {
	Title      string  `json:"title"`
	UID        string  `json:"uid"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Type       string `json:"type"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos *struct{ X, Y, W, H int } `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a row's panels
}

// exported scrapes a real exporter fed a report with every kind of series
// (categories, a culprit, dumps, lost events) and returns the metric names.
func exported(t *testing.T) []string {
	t.Helper()
	culprit := "api_records"
	r := &report.Report{
		Target: report.Target{PID: 42, Comm: "node"}, StartedAt: time.Unix(0, 0), EndedAt: time.Unix(120, 0), DurationSec: 120,
		Culprit: &culprit, LostEvents: 1,
		Categories: []report.CategoryJSON{{Name: "api_records", Kind: "http", Ops: 3, RSSBytes: 1 << 20, ExternalBytes: 1 << 10, RetainedBytes: 1 << 10}},
	}
	e := metrics.New(metrics.Labels{Version: "test"})
	e.Update(r, 1)
	ln, err := metrics.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.ServeListener(ctx, ln)
	resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (\S+) `).FindAllStringSubmatch(string(body), -1) {
		names = append(names, m[1])
	}
	if !slices.Contains(names, "memdiag_category_rss_bytes") {
		t.Fatalf("the exporter's scrape lacks memdiag_category_rss_bytes:\n%s", body)
	}
	return names
}

// recorded returns the names the recording rules in deploy/prometheus define.
func recorded(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("../prometheus/memdiag.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Record string `yaml:"record"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(data, &rules); err != nil {
		t.Fatalf("memdiag.rules.yml: %v", err)
	}
	var names []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				names = append(names, r.Record)
			}
		}
	}
	return names
}

var (
	// quoted and braced parts of PromQL: strings and label matchers name
	// no metric.
	quotedOrBraced = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|\{[^}]*\}`)
	identifier     = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
)

// memdiagNames returns the names in a PromQL expression that look like
// memdiag's (memdiag_… or memdiag:…).
func memdiagNames(expr string) []string {
	var out []string
	for _, id := range identifier.FindAllString(quotedOrBraced.ReplaceAllString(expr, " "), -1) {
		if strings.HasPrefix(id, "memdiag_") || strings.HasPrefix(id, "memdiag:") {
			out = append(out, id)
		}
	}
	return out
}

func TestMemdiagNames(t *testing.T) {
	got := memdiagNames(`sum by (category) (rate(memdiag_category_ops_total{instance=~"memdiag_x", a="}"}[5m])) / memdiag:x:y`)
	if want := []string{"memdiag_category_ops_total", "memdiag:x:y"}; !slices.Equal(got, want) {
		t.Errorf("memdiagNames = %q, want %q", got, want)
	}
}

func TestDashboard(t *testing.T) {
	data, err := os.ReadFile("memdiag.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(data)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("memdiag.json does not parse: %v", err)
	}
	if d.Title == "" || d.UID == "" {
		t.Errorf("dashboard title %q, uid %q: want both", d.Title, d.UID)
	}
	known := append(exported(t), recorded(t)...)
	used := map[string]bool{}
	check := func(where, expr string) {
		names := memdiagNames(expr)
		if len(names) == 0 {
			t.Errorf("%s: %q queries no memdiag metric", where, expr)
		}
		for _, n := range names {
			used[n] = true
			if !slices.Contains(known, n) {
				t.Errorf("%s: %q: memdiag exports no %s and no recording rule defines it", where, expr, n)
			}
		}
	}
	ids := map[int]bool{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			where := "panel " + p.Title
			if ids[p.ID] {
				t.Errorf("%s: id %d used twice", where, p.ID)
			}
			ids[p.ID] = true
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			if p.GridPos == nil || p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
				t.Errorf("%s: bad gridPos %+v", where, p.GridPos)
			}
			if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != "${datasource}" {
				t.Errorf("%s: datasource %+v, want the prometheus ${datasource} variable", where, p.Datasource)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: no query", where)
			}
			for _, q := range p.Targets {
				if q.RefID == "" {
					t.Errorf("%s: a query without refId", where)
				}
				check(where, q.Expr)
			}
		}
	}
	walk(d.Panels)
	if len(ids) < 8 {
		t.Errorf("dashboard has %d panels, want the 8 or more memdiag's series need", len(ids))
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			check("variable "+v.Name, v.Definition)
		}
	}
	// Every series memdiag exports has a place on the dashboard.
	var missing []string
	for _, n := range known {
		if strings.HasPrefix(n, "memdiag_") && !used[n] {
			missing = append(missing, n)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("no panel shows %q", missing)
	}
}
