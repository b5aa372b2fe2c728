//go:build privileged

package metrics_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/memdiag/memdiag/report"
)

// promDeadline bounds every wait on memdiag, the workload or Prometheus.
const promDeadline = 60 * time.Second

// TestPrometheusScrapesMemdiag runs the distribution's Prometheus against a
// real memdiag: memdiag attaches to memwork (testdata/workload) with
// --metrics-addr on loopback, the workload maps 64 MiB in its main thread and
// 16 MiB in a thread named memwork-thr, and a Prometheus started with a
// generated config scrapes memdiag every second. The test queries
// Prometheus's HTTP API until the series show the workload's growth (with a
// deadline), stops memdiag, and checks that what Prometheus stored agrees
// with memdiag's final JSON report.
func TestPrometheusScrapesMemdiag(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("privileged test: run as root (sudo make test); memdiag loads BPF")
	}
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("no prometheus binary in PATH: apt-get install prometheus")
	}
	dir := t.TempDir()
	memdiagBin, memworkBin := filepath.Join(dir, "memdiag"), filepath.Join(dir, "memwork")
	for _, c := range [][]string{
		{"env", "CGO_ENABLED=0", "go", "build", "-tags", "urfave_cli_no_docs", "-o", memdiagBin, "../cmd/memdiag"}, // as make build
		{"gcc", "-O2", "-Wall", "-pthread", "-o", memworkBin, "../testdata/workload/memwork.c"},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(c, " "), err, out)
		}
	}

	// The workload, idle until told what to do.
	work := exec.Command(memworkBin)
	stdin, err := work.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := work.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := work.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { work.Process.Kill(); work.Wait() })
	lines := bufio.NewScanner(stdout)
	line := func() string {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("memwork ended early: %v", lines.Err())
		}
		return lines.Text()
	}
	var pid int
	if _, err := fmt.Sscanf(line(), "ready %d", &pid); err != nil {
		t.Fatalf("memwork: want a ready line: %v", err)
	}
	do := func(cmd string) {
		t.Helper()
		fmt.Fprintln(stdin, cmd)
		if l := line(); !strings.HasPrefix(l, "ok ") {
			t.Fatalf("memwork %q: %s", cmd, l)
		}
	}

	// memdiag, serving metrics on a free loopback port.
	metricsAddr := freeAddr(t)
	ready, reportPath := filepath.Join(dir, "ready"), filepath.Join(dir, "report.json")
	md := exec.Command(memdiagBin, "attach", "--pid", strconv.Itoa(pid), "--metrics-addr", metricsAddr,
		"--ready-file", ready, "--report-json", reportPath, "--log", filepath.Join(dir, "memdiag.log"),
		"--interval", "1h", "--no-dumps")
	var mdErr strings.Builder
	md.Stderr = &mdErr
	if err := md.Start(); err != nil {
		t.Fatal(err)
	}
	mdDone := make(chan error, 1)
	go func() { mdDone <- md.Wait() }()
	t.Cleanup(func() {
		md.Process.Kill()
		<-mdDone
	})
	waitFor(t, "memdiag's --ready-file", func() (bool, error) {
		select {
		case err := <-mdDone:
			return false, fmt.Errorf("memdiag exited (%v) before it was ready: %s", err, mdErr.String())
		default:
		}
		_, err := os.Stat(ready)
		return err == nil, nil
	})

	// Prometheus, scraping memdiag every second.
	promAddr := freeAddr(t)
	config := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: memdiag
    static_configs:
      - targets: [%q]
`, metricsAddr)), 0o600); err != nil {
		t.Fatal(err)
	}
	prom := exec.Command(promBin, "--config.file="+config, "--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		"--web.listen-address="+promAddr, "--log.level=warn")
	var promLog strings.Builder
	prom.Stdout, prom.Stderr = &promLog, &promLog
	prom.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	promDone := make(chan error, 1)
	go func() { promDone <- prom.Wait() }()
	t.Cleanup(func() {
		syscall.Kill(-prom.Process.Pid, syscall.SIGKILL)
		<-promDone
		if t.Failed() {
			t.Logf("prometheus output:\n%s", promLog.String())
		}
	})
	api := "http://" + promAddr
	waitFor(t, "Prometheus to be ready", func() (bool, error) {
		select {
		case err := <-promDone:
			return false, fmt.Errorf("prometheus exited (%v): %s", err, promLog.String())
		default:
		}
		resp, err := http.Get(api + "/-/ready")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})

	do("anon 64M")
	do("thread 16M")

	// Until Prometheus has scraped memdiag after it saw all of it.
	const mib = 1 << 20
	waitFor(t, "Prometheus to store the workload's growth", func() (bool, error) {
		g, err := query(api, `memdiag_target_growth_rss_bytes{job="memdiag"}`)
		if err != nil || len(g) != 1 {
			return false, err
		}
		th, err := query(api, `memdiag_category_rss_bytes{job="memdiag", category="thread:memwork-thr"}`)
		if err != nil || len(th) != 1 {
			return false, err
		}
		return g[0].Value >= 78*mib && th[0].Value >= 15*mib, nil
	})
	stored := map[string][]sample{}
	for _, name := range []string{"up", "memdiag_target_rss_bytes", "memdiag_target_growth_rss_bytes", "memdiag_category_rss_bytes",
		"memdiag_category_retained_bytes", "memdiag_category_ops_total", "memdiag_lost_events_total", "memdiag_build_info"} {
		s, err := query(api, name+`{job="memdiag"}`)
		if err != nil {
			t.Fatalf("querying %s: %v", name, err)
		}
		if len(s) == 0 {
			t.Fatalf("Prometheus has no %s from memdiag", name)
		}
		stored[name] = s
	}

	// Stop memdiag: it writes its final report.
	md.Process.Signal(syscall.SIGINT)
	select {
	case err := <-mdDone:
		if err != nil {
			t.Fatalf("memdiag: %v\n%s", err, mdErr.String())
		}
		mdDone <- nil // for the cleanup
	case <-time.After(promDeadline):
		t.Fatalf("memdiag did not exit within %s of SIGINT", promDeadline)
	}
	data, err := os.ReadFile(reportPath)
	if err != nil {
		t.Fatal(err)
	}
	var rep report.Report
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatal(err)
	}

	if v := stored["up"][0].Value; v != 1 {
		t.Errorf("up = %v, want 1", v)
	}
	if got := stored["memdiag_target_rss_bytes"][0].Labels["pid"]; got != strconv.Itoa(pid) {
		t.Errorf("memdiag_target_rss_bytes{pid=%q}, want the workload's pid %d", got, pid)
	}
	if got := stored["memdiag_build_info"][0].Labels["version"]; got == "" {
		t.Errorf("memdiag_build_info has no version label")
	}
	// The workload was idle from the scrape to the report: they agree to
	// within a few pages of memdiag's own bookkeeping.
	agree := func(what string, got float64, want int64) {
		t.Helper()
		if math.Abs(got-float64(want)) > 1*mib {
			t.Errorf("%s: Prometheus has %s, memdiag's report %s", what, report.Bytes(int64(got)), report.Bytes(want))
		}
	}
	agree("target RSS", stored["memdiag_target_rss_bytes"][0].Value, rep.Final.RSS)
	agree("RSS growth", stored["memdiag_target_growth_rss_bytes"][0].Value, rep.Growth.RSS)
	byCat := func(name string) map[string]float64 {
		m := map[string]float64{}
		for _, s := range stored[name] {
			m[s.Labels["category"]+"/"+s.Labels["kind"]] = s.Value
		}
		return m
	}
	rss, retained, ops := byCat("memdiag_category_rss_bytes"), byCat("memdiag_category_retained_bytes"), byCat("memdiag_category_ops_total")
	found := false
	for _, c := range rep.Categories {
		k := c.Name + "/" + c.Kind
		got, ok := rss[k]
		if !ok {
			t.Errorf("category %s: in the report, not in Prometheus", k)
			continue
		}
		found = found || c.Name == "thread:memwork-thr"
		agree("category "+k+" RSS", got, c.RSSBytes)
		agree("category "+k+" retained", retained[k], c.RetainedBytes)
		if ops[k] != float64(c.Ops) {
			t.Errorf("category %s: Prometheus has %v ops, memdiag's report %d", k, ops[k], c.Ops)
		}
	}
	if !found {
		t.Errorf("memdiag's report has no thread:memwork-thr category: %+v", rep.Categories)
	}
	if v := stored["memdiag_lost_events_total"][0].Value; v > float64(rep.LostEvents) {
		t.Errorf("Prometheus has %v lost events, more than the report's final %d", v, rep.LostEvents)
	}
	t.Logf("Prometheus stored growth %s (report %s), target RSS %s (report %s), %d categories",
		report.Bytes(int64(stored["memdiag_target_growth_rss_bytes"][0].Value)), report.Bytes(rep.Growth.RSS),
		report.Bytes(int64(stored["memdiag_target_rss_bytes"][0].Value)), report.Bytes(rep.Final.RSS), len(rss))
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitFor calls cond until it says done, fails, or promDeadline passes,
// pausing briefly between calls.
func waitFor(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	end := time.Now().Add(promDeadline)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		done, err := cond()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if done {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("waiting for %s: not within %s", what, promDeadline)
		}
		<-tick.C
	}
}

// sample is one series of an instant query's answer.
type sample struct {
	Labels map[string]string
	Value  float64
}

// query runs an instant query through Prometheus's HTTP API.
func query(api, expr string) ([]sample, error) {
	resp, err := http.Get(api + "/api/v1/query?query=" + url.QueryEscape(expr))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var ans struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		return nil, fmt.Errorf("query %s: %v: %s", expr, err, body)
	}
	if ans.Status != "success" || ans.Data.ResultType != "vector" {
		return nil, fmt.Errorf("query %s: %s %s (%s)", expr, ans.Status, ans.Error, ans.Data.ResultType)
	}
	var out []sample
	for _, r := range ans.Data.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("query %s: value %v: %v", expr, r.Value[1], err)
		}
		out = append(out, sample{Labels: r.Metric, Value: v})
	}
	return out, nil
}
