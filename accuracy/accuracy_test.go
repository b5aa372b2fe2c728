package accuracy

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func truthOf(t *testing.T, doc string) *Truth {
	t.Helper()
	p := filepath.Join(t.TempDir(), "truth.json")
	if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	tr, err := ReadTruth(p)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func reportOf(t *testing.T, doc string) *Report {
	t.Helper()
	var r Report
	if err := json.Unmarshal([]byte(doc), &r); err != nil {
		t.Fatal(err)
	}
	return &r
}

func TestReadTruthRejectsEmpty(t *testing.T) {
	p := filepath.Join(t.TempDir(), "truth.json")
	os.WriteFile(p, []byte(`{"categories":{}}`), 0o600)
	if _, err := ReadTruth(p); err == nil {
		t.Fatal("a truth with no category was accepted")
	}
}

func TestCulpritName(t *testing.T) {
	for _, c := range []struct {
		doc, want string
	}{
		{`{"culprit":"a"}`, "a"},
		{`{"culprit":null}`, ""},
		{`{"culprit":"a","verdict":{"culprit":""}}`, ""},
		{`{"culprit":"a","verdict":{"culprit":null}}`, ""},
		{`{"culprit":"a","verdict":{"culprit":"b"}}`, "b"},
	} {
		if got := reportOf(t, c.doc).CulpritName(); got != c.want {
			t.Errorf("%s: culprit %q, want %q", c.doc, got, c.want)
		}
	}
}

const (
	truth0 = `{"categories":{"leak":{"ops":10,"retained_bytes":1000},"churn":{"ops":5,"retained_bytes":0}},"self_check":{"method":"m","bytes":5000}}`
	truth1 = `{"categories":{"leak":{"ops":110,"retained_bytes":101000},"churn":{"ops":205,"retained_bytes":0}},"self_check":{"method":"m","bytes":106000}}`
)

func TestCompareRight(t *testing.T) {
	tr := truthOf(t, truth1).Sub(truthOf(t, truth0))
	if c := tr.Categories["leak"]; c.Ops != 100 || c.RetainedBytes != 100000 {
		t.Fatalf("leak after Sub = %+v", c)
	}
	rep := reportOf(t, `{"categories":[{"name":"leak","ops":100,"retained_bytes":110000},{"name":"churn","ops":199,"retained_bytes":9000},
		{"name":"idle","kind":"idle","retained_bytes":0}],"culprit":"leak"}`)
	exp := Expect{Sent: map[string]int64{"leak": 100, "churn": 200}, Leaking: []string{"leak"}}
	tab := Compare("svc", tr, rep, exp)
	if p := tab.CheckTruth(exp, 0.2, 0); len(p) != 0 {
		t.Errorf("truth problems: %v", p)
	}
	if p := tab.CheckOps(exp); len(p) != 0 { // 199 of 200 is within 0.5%
		t.Errorf("ops problems: %v", p)
	}
	if p := tab.CheckVerdict(); len(p) != 0 {
		t.Errorf("verdict problems: %v", p)
	}
	md := tab.Markdown()
	for _, want := range []string{"| leak (leaks) | 100 / 100 | 97.7 KiB / 107.4 KiB | +10% per op | yes (named) |", "| churn | 200 / 199 |", "9.0% of the leak", "— right."} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

func TestCompareWrong(t *testing.T) {
	tr := truthOf(t, truth1).Sub(truthOf(t, truth0))
	rep := reportOf(t, `{"categories":[{"name":"leak","ops":90,"retained_bytes":0},{"name":"churn","ops":200,"retained_bytes":50000},
		{"name":"thread:node","kind":"background","retained_bytes":20000}],"culprit":"churn"}`)
	exp := Expect{Sent: map[string]int64{"leak": 101, "churn": 200}, Leaking: []string{"leak"}}
	tab := Compare("svc", tr, rep, exp)
	joined := func(p []string) string { return strings.Join(p, "\n") }
	if p := joined(tab.CheckTruth(exp, 0.2, 0)); !strings.Contains(p, "leak counted 100 ops, the load sent 101") {
		t.Errorf("truth problems: %s", p)
	}
	if p := joined(tab.CheckOps(exp)); !strings.Contains(p, "leak: memdiag 90, truth 100") {
		t.Errorf("ops problems: %s", p)
	}
	p := joined(tab.CheckVerdict())
	for _, want := range []string{"culprit churn, truth leak", "leak retained 0 B", "innocent churn", "thread:node (background, not in the truth)"} {
		if !strings.Contains(p, want) {
			t.Errorf("verdict problems lack %q:\n%s", want, p)
		}
	}
}

func TestSelfCheckDisagreeing(t *testing.T) {
	tr := truthOf(t, truth1).Sub(truthOf(t, truth0))
	tr.SelfCheck.Bytes = 200000 // twice the truth
	tab := Compare("svc", tr, reportOf(t, `{"categories":[]}`), Expect{Leaking: []string{"leak"}})
	if p := tab.CheckTruth(Expect{Leaking: []string{"leak"}}, 0.2, 0); len(p) != 1 || !strings.Contains(p[0], "self-check") {
		t.Errorf("want one self-check problem, got %v", p)
	}
}

func TestLeakFree(t *testing.T) {
	tr := truthOf(t, `{"categories":{"a":{"ops":3,"retained_bytes":0}},"self_check":{"method":"m","bytes":0}}`)
	exp := Expect{Sent: map[string]int64{"a": 3}}
	if p := Compare("svc", tr, reportOf(t, `{"categories":[{"name":"a","ops":3}],"verdict":{"culprit":""}}`), exp).CheckVerdict(); len(p) != 0 {
		t.Errorf("nothing retains, nothing named: %v", p)
	}
	if p := Compare("svc", tr, reportOf(t, `{"categories":[{"name":"a","ops":3}],"culprit":"a"}`), exp).CheckVerdict(); len(p) != 1 {
		t.Errorf("a culprit on a leak-free service must be wrong: %v", p)
	}
}

func TestSelect(t *testing.T) {
	all := Services()
	ci, err := Select(all, "")
	if err != nil || len(ci) == 0 || len(ci) == len(all) {
		t.Fatalf("CI subset: %d of %d, %v", len(ci), len(all), err)
	}
	if got, _ := Select(all, "all"); len(got) != len(all) {
		t.Errorf("all: %d services", len(got))
	}
	if got, err := Select(all, "go-churn, reference"); err != nil || len(got) != 2 {
		t.Errorf("two by name: %d, %v", len(got), err)
	}
	if _, err := Select(all, "nope"); err == nil || !strings.Contains(err.Error(), "node-session") {
		t.Errorf("an unknown name must list the known ones: %v", err)
	}
}

func TestLoadCountsExactly(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Method+" "+r.URL.Path]++
		mu.Unlock()
	}))
	defer srv.Close()
	jobs := []Job{
		{Route: Route{Category: "a", Path: Fixed("/a")}, Count: 57},
		{Route: Route{Category: "b", Method: "POST", Path: func(i int) string { return "/b" }, Body: []byte("{}")}, Count: 31},
	}
	got, err := Load(context.Background(), srv.URL, jobs, 3)
	if err != nil {
		t.Fatal(err)
	}
	if got["a"] != 57 || got["b"] != 31 || seen["GET /a"] != 57 || seen["POST /b"] != 31 {
		t.Errorf("sent %v, served %v", got, seen)
	}
}

func TestLoadFailsOnBadStatus(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	if _, err := Load(context.Background(), srv.URL, []Job{{Route: Route{Category: "a", Path: Fixed("/x")}, Count: 5}}, 2); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("a 404 must fail the load: %v", err)
	}
}

// TestPerOpErr checks a timer-driven leak is judged per op: a cycle more
// outside the truth's window is not an error, a wrong size per cycle is.
func TestPerOpErr(t *testing.T) {
	for _, c := range []struct {
		r    Row
		want float64
	}{
		{Row{TruthOps: 4, TruthRetained: 16 << 20, MemdiagOps: 6, MemdiagRetain: 24 << 20}, 0},
		{Row{TruthOps: 4, TruthRetained: 16 << 20, MemdiagOps: 4, MemdiagRetain: 20 << 20}, 0.25},
		{Row{TruthOps: 0, TruthRetained: 1 << 20, MemdiagOps: 0, MemdiagRetain: 1 << 19}, -0.5},
	} {
		if got := c.r.perOpErr(); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("%+v: perOpErr = %v, want %v", c.r, got, c.want)
		}
	}
}
