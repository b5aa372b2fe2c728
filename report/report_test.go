package report_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/memdiag/memdiag/attribution"
	"github.com/memdiag/memdiag/event"
	"github.com/memdiag/memdiag/internal/golden"
	"github.com/memdiag/memdiag/report"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

const mib = 1 << 20

func TestOpenLogFallsBack(t *testing.T) {
	tmp := t.TempDir()
	link := filepath.Join(tmp, "memdiag.log")
	if err := os.Symlink(filepath.Join(tmp, "victim"), link); err != nil {
		t.Fatal(err)
	}
	var console bytes.Buffer
	l, warn := report.OpenLog(link, &console)
	defer l.Close()
	if !strings.Contains(warn, link) || !strings.Contains(warn, "console") {
		t.Errorf("warning = %q, want it to name the path and the console", warn)
	}
	l.Printf("TAG", "hello")
	if !strings.HasSuffix(console.String(), " [TAG] hello\n") {
		t.Errorf("console got %q, want the line", console.String())
	}
	if _, err := os.Lstat(filepath.Join(tmp, "victim")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("symlink target was created: %v", err)
	}
}

func TestBytes(t *testing.T) {
	tests := []struct {
		bytes        int64
		plain, signd string
	}{
		{0, "0 B", "0 B"},
		{1, "1 B", "+1 B"},
		{-1, "-1 B", "-1 B"},
		{1023, "1023 B", "+1023 B"},
		{1024, "1.0 KiB", "+1.0 KiB"},
		{1536, "1.5 KiB", "+1.5 KiB"},
		{412 << 10, "412 KiB", "+412 KiB"},    // not +0MB, as the classic log said
		{-412 << 10, "-412 KiB", "-412 KiB"},  // memory given back
		{100<<10 - 40, "100 KiB", "+100 KiB"}, // 99.96 KiB: no "100.0"
		{mib - 1, "1.0 MiB", "+1.0 MiB"},      // 1023.999 KiB rounds up into the next unit
		{mib, "1.0 MiB", "+1.0 MiB"},
		{52 * mib, "52.0 MiB", "+52.0 MiB"}, // the classic [GROWTH] +52MB
		{52*mib + 400<<10, "52.4 MiB", "+52.4 MiB"},
		{-33 * mib, "-33.0 MiB", "-33.0 MiB"},
		{300 * mib, "300 MiB", "+300 MiB"},
		{4096 * mib, "4.0 GiB", "+4.0 GiB"},
		{2560 * mib, "2.5 GiB", "+2.5 GiB"},
		{3 << 40, "3.0 TiB", "+3.0 TiB"},
		{math.MaxInt64, "8.0 EiB", "+8.0 EiB"},
		{math.MinInt64 + 1, "-8.0 EiB", "-8.0 EiB"},
	}
	for _, tt := range tests {
		if got := report.Bytes(tt.bytes); got != tt.plain {
			t.Errorf("Bytes(%d) = %q, want %q", tt.bytes, got, tt.plain)
		}
		if got := report.SignedBytes(tt.bytes); got != tt.signd {
			t.Errorf("SignedBytes(%d) = %q, want %q", tt.bytes, got, tt.signd)
		}
		// The deprecated classic names say the same.
		if got := report.MB(tt.bytes, false); got != tt.plain {
			t.Errorf("MB(%d, false) = %q, want %q", tt.bytes, got, tt.plain)
		}
		if got := report.MB(tt.bytes, true); got != tt.signd {
			t.Errorf("MB(%d, true) = %q, want %q", tt.bytes, got, tt.signd)
		}
	}
}

func TestRate(t *testing.T) {
	tests := []struct {
		bytes int64
		d     time.Duration
		want  string
	}{
		{60 * mib, time.Minute, "+60.0 MiB/min"},
		{30 * mib, 30 * time.Second, "+60.0 MiB/min"},
		{mib, 2 * time.Minute, "+512 KiB/min"},
		{-mib, time.Minute, "-1.0 MiB/min"},
		{249*mib + 700<<10, time.Minute, "+250 MiB/min"},
		{0, time.Minute, "0 B/min"},
		{mib, 0, "0 B/min"},
		{mib, -time.Second, "0 B/min"},
	}
	for _, tt := range tests {
		if got := report.Rate(tt.bytes, tt.d); got != tt.want {
			t.Errorf("Rate(%d, %v) = %q, want %q", tt.bytes, tt.d, got, tt.want)
		}
		if got := report.BytesPerMinute(tt.bytes, tt.d); got != tt.want {
			t.Errorf("BytesPerMinute(%d, %v) = %q, want %q", tt.bytes, tt.d, got, tt.want)
		}
	}
}

// fixedClock is 2024-01-02T03:04:05.123Z, given in another zone to check
// the log prints UTC.
func fixedClock() time.Time {
	return time.Date(2024, 1, 2, 4, 4, 5, 123_456_789, time.FixedZone("CET", 3600))
}

func TestLogPrintf(t *testing.T) {
	var buf bytes.Buffer
	l := report.NewLog(&buf, fixedClock)
	l.Printf("INIT", "Tracing pid %d", 42)
	l.Printf("PERIODIC", "no args")
	l.Printf("X", "%s", "100%")
	want := "2024-01-02T03:04:05.123Z [INIT] Tracing pid 42\n" +
		"2024-01-02T03:04:05.123Z [PERIODIC] no args\n" +
		"2024-01-02T03:04:05.123Z [X] 100%\n"
	if buf.String() != want {
		t.Errorf("log =\n%s\nwant\n%s", buf.String(), want)
	}
	if err := l.Close(); err != nil {
		t.Errorf("Close of a log without file: %v", err)
	}
}

func TestLogLines(t *testing.T) {
	var buf bytes.Buffer
	l := report.NewLog(&buf, fixedClock)
	l.Init(report.Target{PID: 42, Comm: "server", Mode: "attach"},
		report.Baseline{Memory: report.Memory{RSS: 52 * mib, Anon: 40 * mib, File: 12 * mib}, HWM: 80 * mib})
	l.Periodic(report.Memory{RSS: 60 * mib, Anon: 45 * mib, File: 14 * mib, Shmem: 1 * mib}, 8*mib, 6*mib, 2*mib, "estimated", 2*time.Minute)
	l.Lost(3, 10)
	const ts = "2024-01-02T03:04:05.123Z "
	want := []string{
		ts + "[INIT] Tracing pid 42 (server, attach). Baseline memory: RSS: 52.0 MiB (anon 40.0 MiB, file 12.0 MiB, shmem 0 B), peak before: 80.0 MiB",
		ts + "[PERIODIC] Current: RSS: 60.0 MiB (anon 45.0 MiB, file 14.0 MiB, shmem 1.0 MiB), External +8.0 MiB since start (estimated) | Growth rate: RSS +3.0 MiB/min, External +1.0 MiB/min",
		ts + "[LOST] 3 lifecycle events lost (ring buffer full; 10 in all). Byte totals are kept in the kernel and are unaffected",
	}
	if got := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n"); !reflect.DeepEqual(got, want) {
		t.Errorf("log =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestLogFinal(t *testing.T) {
	sum := &attribution.Summary{Start: t0, End: t0.Add(90 * time.Second), Main: &attribution.Process{PID: 42}}
	for i := range 12 {
		b := attribution.Bucket{Name: "thread:w", PID: uint32(100 + i)}
		b.RSS[event.RSSAnon] = int64(12-i) * mib
		sum.Buckets = append(sum.Buckets, b)
		sum.Growth.RSS[event.RSSAnon] += b.RSS[event.RSSAnon]
	}
	sum.Stats.LostEvents = 4
	r := report.Build(sum, report.Baseline{}, report.Target{PID: 42, Mode: "run"}, "memdiag test")
	var buf bytes.Buffer
	report.NewLog(&buf, fixedClock).Final(r, sum, "the target exited")
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("Final wrote %d lines, want 3:\n%s", len(lines), buf.String())
	}
	const ts = "2024-01-02T03:04:05.123Z "
	if want := ts + "[SUMMARY] Tracing ended (the target exited) after 90s. Growth: RSS +78.0 MiB (anon +78.0 MiB, file 0 B, shmem 0 B), peak 0 B, final 78.0 MiB"; lines[0] != want {
		t.Errorf("summary line =\n%s\nwant\n%s", lines[0], want)
	}
	if !strings.HasPrefix(lines[1], ts+"[SUMMARY] By bucket: thread:w[100] +12.0 MiB, thread:w[101] +11.0 MiB,") ||
		!strings.HasSuffix(lines[1], "thread:w[109] +3.0 MiB; 2 more in the report") {
		t.Errorf("bucket line = %s", lines[1])
	}
	if want := ts + "[LOST] 4 lifecycle events were lost in all; byte totals are unaffected"; lines[2] != want {
		t.Errorf("lost line =\n%s\nwant\n%s", lines[2], want)
	}
}

var t0 = time.Date(2024, 1, 2, 3, 0, 0, 0, time.UTC)

// counters is anon, file, shmem and swap bytes.
func counters(anon, file, shmem, swap int64) event.Counters {
	var c event.Counters
	c.RSS[event.RSSAnon], c.RSS[event.RSSFile], c.RSS[event.RSSShmem], c.RSS[event.RSSSwap] = anon, file, shmem, swap
	return c
}

// attachSummary is a traced server (pid 100) with one child (200) that
// exited, 90 seconds after attach.
func attachSummary() (*attribution.Summary, report.Baseline) {
	main := attribution.Process{PID: 100, Comm: "server", Exe: "/usr/bin/server", Peak: 70 * mib}
	bucket := func(name string, pid uint32, c event.Counters) attribution.Bucket {
		return attribution.Bucket{Name: name, PID: pid, Counters: c}
	}
	worker := counters(12*mib, 0, 0, 1*mib)
	worker.Faults, worker.Mapped, worker.Unmapped = 3072, 64*mib, 16*mib
	sum := &attribution.Summary{
		Start: t0,
		End:   t0.Add(90 * time.Second),
		Main:  &main,
		Processes: []attribution.Process{
			main,
			{PID: 200, Parent: 100, Comm: "helper", Exe: "/bin/helper", Exited: true, ExitCode: 0, Peak: 9 * mib},
		},
		Baseline: counters(40*mib, 10*mib, 0, 0),
		Buckets: []attribution.Bucket{
			bucket("thread:worker", 100, worker),
			bucket("thread:server", 100, counters(6*mib, 2*mib, 1*mib, 0)),
			bucket("inherited", 200, counters(3*mib, 0, 0, 0)),
			bucket("kernel", 100, counters(-1*mib, 0, 0, 0)),
			bucket("released", 200, counters(-3*mib, 0, 0, 0)),
		},
		Current:   (40+10+12+6+2+1+3-1-3)*mib + 5*4096, // 5 pages raced the snapshot
		GroupPeak: 75 * mib,
		Stats: event.Stats{
			LostEvents: 2, DecodeErrors: 1, BucketOverflow: 0,
			MMOverflow: 0, TargetOverflow: 0, PendingOverflow: 7,
		},
		Snapshots: 90,
	}
	for _, b := range sum.Buckets {
		for i := range sum.Growth.RSS {
			sum.Growth.RSS[i] += b.RSS[i]
		}
		sum.Growth.Faults += b.Faults
		sum.Growth.Mapped += b.Mapped
		sum.Growth.Unmapped += b.Unmapped
	}
	sum.Growth.MadeWritable, sum.Growth.AdvisedFree = 8*mib, 2*mib
	// /proc saw 2 MiB of file pages the kernel never reported changed.
	base := report.Baseline{Memory: report.Memory{RSS: 52 * mib, Anon: 40 * mib, File: 12 * mib}, HWM: 80 * mib}
	return sum, base
}

func TestBuild(t *testing.T) {
	sum, base := attachSummary()
	r := report.Build(sum, base, report.Target{PID: 100, Mode: "attach"}, "memdiag test")

	wantGrowth := report.Memory{RSS: 20 * mib, Anon: 17 * mib, File: 2 * mib, Shmem: 1 * mib}
	if r.Growth.Memory != wantGrowth || r.Growth.Swap != 1*mib {
		t.Errorf("growth = %+v swap %d, want %+v swap %d", r.Growth.Memory, r.Growth.Swap, wantGrowth, 1*mib)
	}
	if want := base.Memory.Add(wantGrowth); r.Final != want {
		t.Errorf("final = %+v, want baseline + growth = %+v", r.Final, want)
	}
	// The kernel's peak (70 MiB) misses the 2 MiB that never changed.
	if r.Peak.RSS != 72*mib || r.Peak.GroupRSS != 77*mib {
		t.Errorf("peak = %d, group %d; want %d, %d", r.Peak.RSS, r.Peak.GroupRSS, 72*mib, 77*mib)
	}
	if r.UnattributedBytes != 5*4096 {
		t.Errorf("unattributed = %d, want %d", r.UnattributedBytes, 5*4096)
	}
	if r.Target.Comm != "server" || r.Target.Exe != "/usr/bin/server" || r.Target.Exited || r.Target.ExitCode != nil {
		t.Errorf("target = %+v, want comm and exe from the summary, not exited", r.Target)
	}
	var names []string
	for _, b := range r.Buckets {
		names = append(names, b.Name)
	}
	if want := []string{"thread:worker", "thread:server", "inherited", "kernel", "released"}; !reflect.DeepEqual(names, want) {
		t.Errorf("buckets = %v, want the summary's order %v", names, want)
	}
	wantProcs := []report.ProcessJSON{
		{PID: 100, Comm: "server", Exe: "/usr/bin/server", RSSBytes: 20 * mib},
		{PID: 200, Parent: 100, Comm: "helper", Exe: "/bin/helper", Exited: true, RSSBytes: 0},
	}
	if !reflect.DeepEqual(r.Processes, wantProcs) {
		t.Errorf("processes = %+v, want %+v", r.Processes, wantProcs)
	}

	got, err := r.JSON()
	if err != nil {
		t.Fatal(err)
	}
	golden.Check(t, filepath.Join("testdata", "report_attach.golden.json"), got, *update, "go test ./report -update")

	// The JSON carries the fields under their documented names.
	var m map[string]any
	if err := json.Unmarshal(got, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"version", "tool", "target", "started_at", "ended_at", "duration_seconds", "baseline", "final",
		"peak", "growth", "faults", "mapped_bytes", "unmapped_bytes", "exit_release_bytes", "unattributed_bytes",
		"buckets", "processes", "lost_events", "health"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON lacks %q", k)
		}
	}
}

func TestBuildRunExited(t *testing.T) {
	main := attribution.Process{PID: 300, Comm: "memwork", Exe: "/tmp/memwork", Exited: true, ExitCode: 2 << 8, Peak: 30 * mib}
	sum := &attribution.Summary{
		Start:       t0,
		End:         t0.Add(-time.Second), // a clock step: the duration stays at 0
		Main:        &main,
		Processes:   []attribution.Process{main},
		Growth:      counters(24*mib, 1*mib, 0, 0),
		ExitRelease: counters(-24*mib, -1*mib, 0, 0),
		GroupPeak:   30 * mib,
	}
	r := report.Build(sum, report.Baseline{}, report.Target{PID: 300, Comm: "given", Mode: "run"}, "memdiag test")
	if r.DurationSec != 0 {
		t.Errorf("duration = %v, want 0", r.DurationSec)
	}
	if !r.Target.Exited || r.Target.ExitCode == nil || *r.Target.ExitCode != 2<<8 {
		t.Errorf("target = %+v, want exited with status %d", r.Target, 2<<8)
	}
	if r.Target.Comm != "given" || r.Target.Exe != "/tmp/memwork" {
		t.Errorf("target comm, exe = %q, %q; want the given comm and the exec'd file", r.Target.Comm, r.Target.Exe)
	}
	if r.ExitReleaseBytes != -25*mib || r.UnattributedBytes != 0 {
		t.Errorf("exit release, unattributed = %d, %d; want %d, 0", r.ExitReleaseBytes, r.UnattributedBytes, -25*mib)
	}
	if r.Final.RSS != 25*mib || r.Peak.RSS != 30*mib || r.Peak.GroupRSS != 30*mib {
		t.Errorf("final %d, peak %d, group peak %d; want %d, %d, %d", r.Final.RSS, r.Peak.RSS, r.Peak.GroupRSS, 25*mib, 30*mib, 30*mib)
	}
	if r.Buckets == nil || len(r.Buckets) != 0 {
		t.Errorf("buckets = %#v, want an empty, non-nil list", r.Buckets)
	}
	data, err := r.JSON()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte(`"buckets": []`)) || !bytes.Contains(data, []byte(`"exit_code": 512`)) {
		t.Errorf("JSON =\n%s\nwant an empty bucket list and exit_code 512", data)
	}
	if !bytes.HasSuffix(data, []byte("}\n")) {
		t.Errorf("JSON does not end with a newline")
	}
}

// TestLogGrowthAndSummaryUnits checks the [GROWTH] and [SUMMARY] lines speak
// in the unit each value needs (a small op is +412 KiB, not +0MB) and that a
// negative category gets a line saying what it means.
func TestLogGrowthAndSummaryUnits(t *testing.T) {
	var buf bytes.Buffer
	l := report.NewLog(&buf, fixedClock)
	l.Growth(attribution.Notice{Category: "GET /api/records", OpRecord: attribution.OpRecord{
		Name: "GET /api/records", Detail: "?limit=…", Ops: 1, Counters: counters(52*mib, 0, 0, 0)}})
	small := counters(412<<10, 0, 0, 0)
	small.External = 25 << 10
	l.Growth(attribution.Notice{Category: "GET /health", OpRecord: attribution.OpRecord{Name: "GET /health", Ops: 1, Counters: small}})
	sum := &attribution.Summary{Growth: counters(19*mib, 0, 0, 0), ExternalMode: "estimated", Categories: []attribution.CategorySummary{
		{Name: "GET /api/records", Kind: attribution.KindHTTP, Ops: 4, Counters: counters(52*mib, 0, 0, 0)},
		{Name: "thread:parser", Kind: "background", Counters: counters(-33*mib, 0, 0, 0)},
	}}
	l.Summary(sum, "final")
	const ts = "2024-01-02T03:04:05.123Z "
	want := []string{
		ts + "[GROWTH] GET /api/records (?limit=…): RSS +52.0 MiB, External 0 B [GET /api/records]",
		ts + "[GROWTH] GET /health: RSS +412 KiB, External +25.0 KiB [GET /health]",
		ts + "[SUMMARY] Memory by category (final): growth RSS +19.0 MiB; external estimated",
		ts + "[SUMMARY]   GET /api/records: 4 ops, RSS +52.0 MiB, External 0 B, Retained 0 B, avg RSS +13.0 MiB/op; top: ",
		ts + "[SUMMARY]   thread:parser (background): RSS -33.0 MiB, Retained 0 B",
		ts + "[SUMMARY]   negative: thread:parser gave memory back: it released more resident memory than it took " +
			"(e.g. a thread that freed what other threads allocated), which offsets growth charged elsewhere",
	}
	if got := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n"); !reflect.DeepEqual(got, want) {
		t.Errorf("log =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestTextNegativeNote checks the text report explains a negative category,
// and says nothing when none is negative.
func TestTextNegativeNote(t *testing.T) {
	r := &report.Report{Categories: []report.CategoryJSON{
		{Name: "GET /a", Kind: "http", Ops: 1, RSSBytes: 412 << 10},
		{Name: "thread:parser", Kind: "background", RSSBytes: -33 * mib},
	}}
	text := string(r.Text())
	if !strings.Contains(text, "negative RSS: thread:parser gave memory back") {
		t.Errorf("text report lacks the negative note:\n%s", text)
	}
	if !strings.Contains(text, "+412 KiB") || !strings.Contains(text, "-33.0 MiB") {
		t.Errorf("text report lacks human units:\n%s", text)
	}
	r.Categories = r.Categories[:1]
	if text := string(r.Text()); strings.Contains(text, "gave memory back") {
		t.Errorf("text report explains a negative category it does not have:\n%s", text)
	}
}

// TestBuildInheritsExe checks that a process whose exec was not seen shows
// the executable it runs: the target's from /proc, or its parent's when it
// was forked without exec, while one that exec'd keeps its own.
func TestBuildInheritsExe(t *testing.T) {
	sum := &attribution.Summary{Start: t0, End: t0.Add(time.Second), Main: &attribution.Process{PID: 100}, Processes: []attribution.Process{
		{PID: 100, Comm: "server"},
		{PID: 300, Parent: 200, Comm: "grandchild"}, // listed before its parent
		{PID: 200, Parent: 100, Comm: "worker"},
		{PID: 400, Parent: 100, Comm: "sh", Exe: "/bin/sh"},
		{PID: 500, Parent: 400, Comm: "sh"},
		{PID: 600, Parent: 999, Comm: "orphan"},
	}}
	r := report.Build(sum, report.Baseline{}, report.Target{PID: 100, Exe: "/usr/bin/server", Cmdline: []string{"server", "-c", "a b.conf"}, Mode: "attach"}, "memdiag test")
	want := map[uint32]string{100: "/usr/bin/server", 200: "/usr/bin/server", 300: "/usr/bin/server", 400: "/bin/sh", 500: "/bin/sh", 600: ""}
	for _, p := range r.Processes {
		if p.Exe != want[p.PID] {
			t.Errorf("process %d (%s): exe %q, want %q", p.PID, p.Comm, p.Exe, want[p.PID])
		}
	}
	if got, want := r.Target.CommandLine(), "server -c 'a b.conf'"; got != want {
		t.Errorf("CommandLine() = %q, want %q", got, want)
	}
	data, err := r.JSON()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"cmdline": [`) {
		t.Errorf("JSON report lacks target.cmdline:\n%s", data)
	}
	if text := string(r.Text()); !strings.Contains(text, "\ncommand: server -c 'a b.conf'\n") {
		t.Errorf("text report lacks the command line:\n%s", text)
	}
}

func TestCommandLine(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, ""},
		{[]string{"python3", "-m", "http.server"}, "python3 -m http.server"},
		{[]string{"sh", "-c", "echo 'hi' $HOME"}, `sh -c 'echo '\''hi'\'' $HOME'`},
		{[]string{"x", ""}, "x ''"},
		{[]string{"evil\x1b[2J"}, "evil?[2J"},
	} {
		if got := (report.Target{Cmdline: tt.args}).CommandLine(); got != tt.want {
			t.Errorf("CommandLine(%q) = %q, want %q", tt.args, got, tt.want)
		}
	}
}
