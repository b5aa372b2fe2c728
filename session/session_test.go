package session

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/memdiag/memdiag/config"
	"github.com/memdiag/memdiag/event"
	"github.com/memdiag/memdiag/internal/eventtest"
	"github.com/memdiag/memdiag/internal/golden"
	"github.com/memdiag/memdiag/report"
)

const mib = 1 << 20

var (
	t0     = eventtest.T0
	at     = eventtest.At
	bucket = eventtest.Anon // a bucket whose resident change is all anonymous memory
)

// snapAt is a snapshot at second i; total is the group's resident memory
// (the buckets' sum plus what ended ops took out of the kernel).
func snapAt(i int, total int64, procs []event.ProcessMemory, buckets ...event.Bucket) *event.Snapshot {
	return &event.Snapshot{Time: at(i), Buckets: buckets, Processes: procs, Total: total, Peak: total}
}

func hdr(i int, pid, tid uint32) event.Header { return event.Header{Time: at(i), PID: pid, TID: tid} }

// scenario is a session's life: main process P (the test's own pid, so a
// dump has a /proc to read) serves one request that grows RSS by 60 MiB,
// forks and execs child C, which grows 12 MiB and exits; P's RSS passes
// the 100 MiB dump threshold; then P exits (drained at Stop).
type scenario struct {
	p, c  uint32
	steps []step
	rest  []event.Event
	final *event.Snapshot
}

func newScenario() scenario {
	p, c := uint32(os.Getpid()), uint32(4000001)
	base := bucket(p, event.BucketBaseline, 0, 50*mib, "")
	mainT := bucket(p, event.BucketThread, uint64(p), 1*mib, "main")
	procs := func(peak int64) []event.ProcessMemory {
		return []event.ProcessMemory{{PID: p, Current: peak, Peak: peak}}
	}
	var final event.Counters
	final.RSS[event.RSSAnon] = 60 * mib
	child := []event.Bucket{bucket(c, event.BucketThread, uint64(c), 10*mib, "child"), bucket(c, event.BucketStart, 0, 2*mib, "")}
	late := append([]event.Bucket{base, mainT}, child...)
	return scenario{
		p: p, c: c,
		steps: []step{
			{snap: snapAt(1, 51*mib, procs(51*mib), base, mainT)},
			{ev: &event.OpBegin{Header: hdr(2, p, p), OpID: 7, Kind: event.OpHTTPServer, FD: 5, HTTP: true, Request: event.Request{Method: "GET", Path: "/api/records/42", Query: "limit=…"}}},
			{snap: snapAt(3, 81*mib, procs(81*mib), base, mainT, bucket(p, event.BucketOp, 7, 30*mib, ""))},
			{ev: &event.OpEnd{Header: hdr(4, p, p), OpID: 7, FD: 5, Reason: event.EndNext, HasFinal: true, Final: final}},
			{ev: &event.Fork{Header: hdr(5, p, p), Child: c, Comm: "main"}},
			{ev: &event.Exec{Header: hdr(5, c, c), Filename: "/bin/child"}},
			{snap: snapAt(60, 123*mib, procs(111*mib), late...)},
			{periodic: true},
			{reportNow: true},
			{ev: &event.Exit{Header: hdr(61, c, c), GroupDead: true, Comm: "child"}},
			{snap: snapAt(62, 123*mib, procs(111*mib), late...)},
			{snap: snapAt(63, 123*mib, procs(111*mib), late...)},
		},
		rest:  []event.Event{&event.Exit{Header: hdr(64, p, p), GroupDead: true, ExitCode: 3 << 8, Comm: "main"}},
		final: snapAt(64, 123*mib, procs(111*mib), base, mainT),
	}
}

// testConfig is a session's settings with every output in dir.
func testConfig(dir string) Config {
	return Config{
		LogPath:        filepath.Join(dir, "memdiag.log"),
		Interval:       time.Hour,
		ReportJSON:     filepath.Join(dir, "report.json"),
		ReportHTML:     filepath.Join(dir, "report.html"),
		RecordPath:     filepath.Join(dir, "trace.rec"),
		ReportsDir:     filepath.Join(dir, "reports"),
		ReadyFile:      filepath.Join(dir, "ready"),
		GrowthRSS:      50 * mib,
		GrowthExternal: 10 * mib,
		SummaryRSSRate: 50 * mib,
		SummaryExtRate: 50 * mib,
		KeepOps:        100,
		DumpAt:         []Threshold{{bytes: 100 * mib, label: "100MB"}, {bytes: 1 << 40, label: "1TB"}},
		DumpsDir:       filepath.Join(dir, "dumps"),
		Version:        "test",
	}
}

// live runs a scenario through a live session and returns the tracer.
func live(t *testing.T, cfg Config, sc scenario, target report.Target) *sliceTracer {
	t.Helper()
	return liveWith(t, cfg, sc, target, nil)
}

// liveWith is live with setup run on the session before it starts.
func liveWith(t *testing.T, cfg Config, sc scenario, target report.Target, setup func(*Session)) *sliceTracer {
	t.Helper()
	tr := newSliceTracer()
	tr.rest, tr.final = sc.rest, sc.final
	base := report.Baseline{Memory: report.Memory{RSS: 50 * mib, Anon: 50 * mib}, HWM: 60 * mib}
	s := New(tr, cfg, target, base, t0)
	if setup != nil {
		setup(s)
	}
	d := newDriver(s, tr)
	if err := CheckOutputs(cfg); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	go d.play(t, sc.steps)
	why := s.Loop(context.Background(), d.done, d.reportNow, d.dumpNow)
	if why != "the target exited" {
		t.Fatalf("Loop ended with %q, want the target's exit", why)
	}
	if err := s.Finish(why); err != nil {
		t.Fatal(err)
	}
	if !tr.closed {
		t.Error("Finish did not close the tracer")
	}
	return tr
}

func readJSON(t *testing.T, path string) report.Report {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r report.Report
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return r
}

// TestLiveSession drives the live loop through a whole trace and checks
// what it wrote: the final report, the log (growth rate, [GROWTH],
// threshold, dump), the dump, the kernel tables it trimmed.
func TestLiveSession(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	sc := newScenario()
	target := report.Target{PID: sc.p, Comm: "main", Exe: "/bin/main", Mode: "attach", Container: "3f2a9c1b0d4e", Cgroup: "/sys/fs/cgroup/x"}
	tr := live(t, cfg, sc, target)

	r := readJSON(t, cfg.ReportJSON)
	if r.Growth.RSS != 73*mib {
		t.Errorf("growth.rss_bytes = %d, want %d (main 1 MiB + request 60 MiB + child 12 MiB)", r.Growth.RSS, 73*mib)
	}
	var sum int64
	for _, b := range r.Buckets {
		sum += b.RSS
	}
	if sum != r.Growth.RSS || r.UnattributedBytes != 0 {
		t.Errorf("conservation: buckets sum to %d, growth %d, unattributed %d", sum, r.Growth.RSS, r.UnattributedBytes)
	}
	if r.Peak.RSS != 111*mib {
		t.Errorf("peak.rss_bytes = %d, want %d", r.Peak.RSS, 111*mib)
	}
	if !r.Target.Exited || r.Target.ExitCode == nil || *r.Target.ExitCode != 3<<8 {
		t.Errorf("target exit = %v %v, want exited with status 3 (drained at Stop)", r.Target.Exited, r.Target.ExitCode)
	}
	var cat *report.CategoryJSON
	for i := range r.Categories {
		if r.Categories[i].Name == "GET /api/records/:id" {
			cat = &r.Categories[i]
		}
	}
	if cat == nil || cat.Ops != 1 || cat.RSSBytes != 60*mib {
		t.Errorf("category of the request = %+v, want 1 op of 60 MiB", cat)
	}

	log, err := os.ReadFile(cfg.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"[INIT] Tracing pid",
		"[GROWTH] GET /api/records/42",
		"[THRESHOLD] RSS 111 MiB crossed 100 MiB (100MB)",
		"| Growth rate: RSS +73.0 MiB/min", // 73 MiB in the 60 s since the start
		"[SUMMARY] Memory by category (growth rate over --summary-rss-rate",
		"[REPORT] written to",
		"[DUMP] written to",
		"[SUMMARY] Tracing ended (the target exited) after 64s",
	} {
		if !strings.Contains(string(log), want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if n := strings.Count(string(log), "[THRESHOLD]"); n != 1 {
		t.Errorf("%d [THRESHOLD] lines, want 1 (the 1TB level is never crossed, 100MB once)", n)
	}

	dumps, _ := filepath.Glob(filepath.Join(cfg.DumpsDir, "*-100MB-*"))
	if len(dumps) != 1 {
		t.Fatalf("dumps = %v, want one for 100MB", dumps)
	}
	for _, f := range []string{"SECRETS-WARNING.txt", "attribution.json", "smaps"} {
		if fi, err := os.Stat(filepath.Join(dumps[0], f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("dump file %s: %v (mode %v), want a 0600 file", f, err, fi.Mode())
		}
	}
	if d := readJSON(t, filepath.Join(dumps[0], "attribution.json")); d.Growth.RSS != 73*mib {
		t.Errorf("the dump's attribution has growth %d, want the state at the threshold, %d", d.Growth.RSS, 73*mib)
	}
	reports, _ := filepath.Glob(filepath.Join(cfg.ReportsDir, "memdiag-*"))
	if len(reports) != 2 {
		t.Errorf("SIGUSR1 wrote %v, want a JSON and an HTML report", reports)
	}
	var markers []string
	for _, m := range r.Markers {
		markers = append(markers, m.Kind+": "+m.Label)
	}
	if want := []string{"threshold: RSS crossed 100MB", "dump: dump at 100MB"}; !reflect.DeepEqual(markers, want) {
		t.Errorf("markers = %q, want %q", markers, want)
	}

	if want := []uint32{sc.c}; !reflect.DeepEqual(tr.deadPIDs, want) {
		t.Errorf("kernel state forgotten for pids %v, want %v (the child, once folded)", tr.deadPIDs, want)
	}
	if want := []uint32{sc.c}; !reflect.DeepEqual(tr.oldImages, want) {
		t.Errorf("old images forgotten: %v, want %v (the child's exec)", tr.oldImages, want)
	}
	if len(tr.learned) == 0 || tr.learned[0] != int(sc.c) {
		t.Errorf("processes learned: %v, want the child after its exec", tr.learned)
	}
}

// TestReplayEqualsLive: the recording of a live session rebuilds its
// reports byte for byte, container and cgroup included.
func TestReplayEqualsLive(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.RulesName, cfg.RulesText = "rules.yaml", "categories:\n  - name: api_records\n    http: { path_prefix: /api/records }\n"
	sc := newScenario()
	target := report.Target{PID: sc.p, Comm: "main", Exe: "/bin/main", Mode: "attach", Container: "3f2a9c1b0d4e", Cgroup: "/sys/fs/cgroup/x"}
	var err error
	if cfg.Rules, err = config.Parse(cfg.RulesName, []byte(cfg.RulesText)); err != nil {
		t.Fatal(err)
	}
	live(t, cfg, sc, target)

	rp, err := Replay(cfg.RecordPath)
	if err != nil {
		t.Fatal(err)
	}
	if rp.Warn != nil {
		t.Fatalf("replay warns: %v", rp.Warn)
	}
	for _, f := range []struct{ path, format string }{{cfg.ReportJSON, "json"}, {cfg.ReportHTML, "html"}} {
		want, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Render(rp.Report(), f.format)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("replayed %s report differs from the live one:\n%s", f.format, golden.FirstDiff(got, want))
		}
	}
	r := readJSON(t, cfg.ReportJSON)
	if r.Target.Container != target.Container || r.Target.Cgroup != target.Cgroup {
		t.Errorf("target = %+v, want container and cgroup kept", r.Target)
	}
	found := false
	for _, c := range r.Categories {
		found = found || c.Name == "api_records" && c.RSSBytes == 60*mib
	}
	if !found {
		t.Errorf("the recorded rules were not applied: categories %+v", r.Categories)
	}
}

// TestLoopEnds: the loop says why it ended.
func TestLoopEnds(t *testing.T) {
	for _, tc := range []struct {
		name     string
		duration time.Duration
		cancel   bool
		want     string
	}{
		{"signal", 0, true, "signal"},
		{"duration", time.Nanosecond, false, "--duration 1ns reached"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := Config{LogPath: filepath.Join(dir, "log"), Interval: time.Hour, Duration: tc.duration, KeepOps: 1, Version: "test"}
			tr := newSliceTracer()
			tr.final = snapAt(1, 0, nil)
			s := New(tr, cfg, report.Target{PID: 1, Mode: "run"}, report.Baseline{}, t0)
			if err := s.Start(); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			if tc.cancel {
				cancel()
			}
			defer cancel()
			if why := s.Loop(ctx, nil, nil, nil); why != tc.want {
				t.Errorf("Loop = %q, want %q", why, tc.want)
			}
			if err := s.Finish(tc.want); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestCheckOutputs refuses an output that exists before anything runs.
func TestCheckOutputs(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	if err := CheckOutputs(cfg); err != nil {
		t.Fatalf("fresh paths refused: %v", err)
	}
	os.WriteFile(cfg.ReportHTML, nil, 0o600)
	if err := CheckOutputs(cfg); err == nil || !strings.Contains(err.Error(), "report.html") {
		t.Errorf("CheckOutputs with an existing report = %v, want an error naming it", err)
	}
}

// TestRate is the growth rate maths of [PERIODIC] and --summary-*-rate.
func TestRate(t *testing.T) {
	for _, tc := range []struct {
		bytes int64
		over  time.Duration
		want  float64
	}{
		{60 * mib, time.Minute, 60 * mib},
		{60 * mib, 30 * time.Second, 120 * mib},
		{-6 * mib, 2 * time.Minute, -3 * mib},
		{mib, 0, 0},
		{mib, -time.Second, 0},
	} {
		if got := Rate(tc.bytes, tc.over); got != tc.want {
			t.Errorf("Rate(%d, %s) = %v, want %v", tc.bytes, tc.over, got, tc.want)
		}
	}
}

// TestParseDumpAt: sizes and percentages, and one-line errors.
func TestParseDumpAt(t *testing.T) {
	got, err := ParseDumpAt(" 4GB, 80% ,,2GB")
	if err != nil {
		t.Fatal(err)
	}
	want := []Threshold{{bytes: 4 << 30, label: "4GB"}, {percent: 80, label: "80%"}, {bytes: 2 << 30, label: "2GB"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseDumpAt = %+v, want %+v", got, want)
	}
	for _, bad := range []string{"0", "-1GB", "lots", "101%", "0%", "x%"} {
		if _, err := ParseDumpAt(bad); err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseDumpAt(%q) = %v, want a one-line error", bad, err)
		}
	}
	levels, warn := resolveLevels(got, -1) // no such process: no cgroup limit
	if len(levels) != 2 || levels[0].bytes != 2<<30 || levels[1].bytes != 4<<30 || warn == "" {
		t.Errorf("resolveLevels without a limit = %+v, %q; want the two sizes, sorted, and a warning", levels, warn)
	}
}

var (
	update   = flag.Bool("update", false, "rewrite the golden reports of testdata/session.mdrec")
	rerecord = flag.Bool("rerecord", false, "record testdata/session.mdrec again (with -update: a change to the recording itself)")
)

// TestGoldenReplay: a committed recording (a live session's, made by this
// test with -rerecord) rebuilds the committed text, JSON and HTML reports —
// what `memdiag report` prints, without root, on any machine. A change to
// the recording format or the reports shows here.
func TestGoldenReplay(t *testing.T) {
	rec := filepath.Join("testdata", "session.mdrec")
	if *rerecord {
		dir := t.TempDir()
		cfg := testConfig(dir)
		sc := newScenario()
		live(t, cfg, sc, report.Target{PID: sc.p, Comm: "main", Exe: "/bin/main", Mode: "attach", Container: "3f2a9c1b0d4e", Cgroup: "/sys/fs/cgroup/x"})
		data, err := os.ReadFile(cfg.RecordPath)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(rec, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rp, err := Replay(rec)
	if err != nil {
		t.Fatal(err)
	}
	if rp.Warn != nil {
		t.Fatalf("the committed recording is damaged: %v", rp.Warn)
	}
	for _, format := range []string{"text", "json", "html"} {
		got, err := Render(rp.Report(), format)
		if err != nil {
			t.Fatal(err)
		}
		golden.Check(t, filepath.Join("testdata", "session."+format), got, *update, "go test ./session -update")
	}
	r := rp.Report()
	if r.Growth.RSS != 73*mib || r.Target.Container != "3f2a9c1b0d4e" {
		t.Errorf("the committed recording's report: growth %d, container %q; want 73 MiB and the container", r.Growth.RSS, r.Target.Container)
	}
}

// TestConfigValidate: each value a session cannot run with is refused by
// its flag's name; the defaults pass.
func TestConfigValidate(t *testing.T) {
	good := Config{KeepOps: 100, Interval: time.Minute, HeapSampling: "auto", HeapInterval: 64 << 10}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for flag, bad := range map[string]func(*Config){
		"--heap-sampling":        func(c *Config) { c.HeapSampling = "java" },
		"--heap-sample-interval": func(c *Config) { c.HeapInterval = 100 },
		"--keep-ops":             func(c *Config) { c.KeepOps = 0 },
		"--interval":             func(c *Config) { c.Interval = 0 },
		"--duration":             func(c *Config) { c.Duration = -time.Second },
	} {
		c := good
		bad(&c)
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), flag+" ") {
			t.Errorf("%s: %v", flag, err)
		}
	}
}
