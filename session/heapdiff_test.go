package session

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/memdiag/memdiag/heapsnap"
	"github.com/memdiag/memdiag/report"

	"github.com/memdiag/memdiag/internal/golden"
	"github.com/memdiag/memdiag/safefile"
)

// asMemdiag makes this test binary answer as `memdiag diff --format json
// --top N A B` when a session under test runs it as its DiffExe: the same
// heapsnap code in a child process, as memdiag's own subcommand runs it.
const asMemdiag = "MEMDIAG_SESSION_TEST_AS_MEMDIAG"

func TestMain(m *testing.M) {
	if os.Getenv(asMemdiag) == "1" {
		os.Exit(fakeMemdiagDiff(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func fakeMemdiagDiff(args []string) int {
	if len(args) != 7 || args[0] != "diff" || args[1] != "--format" || args[2] != "json" || args[3] != "--top" {
		fmt.Fprintf(os.Stderr, "memdiag: unexpected arguments %q\n", args)
		return 2
	}
	var top int
	fmt.Sscan(args[4], &top)
	d, err := heapsnap.DiffFiles(context.Background(), args[5], args[6], heapsnap.Options{Top: top})
	if err != nil {
		fmt.Fprintf(os.Stderr, "memdiag: %v\n", err)
		return 2
	}
	out, err := d.JSON()
	if err != nil {
		return 1
	}
	os.Stdout.Write(out)
	return 0
}

// TestHeapDiffBetweenDumps: a threshold dump and dumps on demand (SIGUSR2)
// that get heap snapshots (two real snapshots of heapsnap's
// testdata/leaky.js, which leaks 300 sessions of 16 KiB into a Map, then
// the second again) give heapdiff.json and heapdiff.txt in each later dump, a [DIFF] line naming
// the Map and its holder, and the "What grew between dumps" section of
// the reports, which a replay of the recording rebuilds byte for byte.
func TestHeapDiffBetweenDumps(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("needs node (Node.js) on PATH to write the heap snapshots")
	}
	snaps := t.TempDir()
	out, err := exec.Command(node, filepath.Join("..", "heapsnap", "testdata", "leaky.js"), snaps, "map", "300").Output()
	if err != nil {
		t.Fatalf("leaky.js: %v", err)
	}
	t.Logf("leaky.js: %s", bytes.TrimSpace(out))

	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.DiffExe = os.Args[0]
	t.Setenv(asMemdiag, "1")
	sc := newScenario()
	i := slices.IndexFunc(sc.steps, func(st step) bool { return st.periodic })
	// The threshold's dump is held until two dumps on demand are asked
	// for: they make one, taken after it. The second on demand is asked
	// for while that one is being written: taken after it, in its own
	// directory even within the same second. Snapshots: a, b, b.
	gates := []chan struct{}{make(chan struct{}), make(chan struct{}), nil}
	started := []chan struct{}{make(chan struct{}), make(chan struct{}), make(chan struct{})}
	sc.steps = slices.Insert(sc.steps, i,
		step{dumpNow: true}, step{dumpNow: true},
		step{fn: func() { close(gates[0]); <-started[1] }},
		step{dumpNow: true},
		step{fn: func() { close(gates[1]) }})
	var taken []string
	target := report.Target{PID: sc.p, Comm: "main", Exe: "/bin/main", Mode: "attach"}
	liveWith(t, cfg, sc, target, func(s *Session) {
		s.heapSnapshot = func(path string, pid int) []string {
			n := len(taken)
			taken = append(taken, path)
			close(started[n])
			if gates[n] != nil {
				<-gates[n]
			}
			src := filepath.Join(snaps, []string{"a", "b", "b"}[n]+".heapsnapshot")
			data, err := os.ReadFile(src)
			if err == nil {
				err = safefile.WriteNew(path, data)
			}
			if err != nil {
				return []string{err.Error()}
			}
			return []string{"heap snapshot copied from " + src}
		}
	})

	if len(taken) != 3 || filepath.Dir(taken[1]) == filepath.Dir(taken[2]) {
		t.Fatalf("heap snapshots taken: %q, want three in three dumps (the threshold's, and two on demand for three asked)", taken)
	}
	later := filepath.Dir(taken[1])
	if !strings.Contains(filepath.Base(later), "-on-demand-") {
		t.Errorf("the second dump is %s, want a dump on demand", later)
	}
	for _, f := range []string{heapDiffJSON, heapDiffText} {
		if fi, err := os.Stat(filepath.Join(later, f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s in the later dump: %v, want a 0600 file", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(taken[0]), heapDiffJSON)); err == nil {
		t.Errorf("the first dump has a heap diff: it has nothing to compare with")
	}
	txt, _ := os.ReadFile(filepath.Join(later, heapDiffText))
	if !bytes.Contains(txt, []byte("Cache.sessions")) {
		t.Errorf("heapdiff.txt does not name Cache.sessions:\n%s", txt)
	}

	log, _ := os.ReadFile(cfg.LogPath)
	var diffLines []string
	for _, l := range strings.Split(string(log), "\n") {
		if strings.Contains(l, "[DIFF]") {
			diffLines = append(diffLines, l)
		}
	}
	t.Logf("%s", strings.Join(diffLines, "\n"))
	if len(diffLines) != 4 || !strings.Contains(diffLines[0], ": Map grew by ") || !strings.Contains(diffLines[0], "Map.table ← Cache.sessions") {
		t.Errorf("[DIFF] lines = %q, want one naming the Map, its growth and its path, then where it was written, then the same for the second pair", diffLines)
	}
	for _, want := range []string{"[DUMP] dump on demand", "[DUMP] written to " + later} {
		if !strings.Contains(string(log), want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}

	r := readJSON(t, cfg.ReportJSON)
	if len(r.HeapDiffs) != 2 || r.HeapDiffs[1].From != later || r.HeapDiffs[1].To != filepath.Dir(taken[2]) {
		t.Fatalf("heap_diffs = %+v, want two: the threshold's dump to the first on demand, that one to the second", r.HeapDiffs)
	}
	if g := r.HeapDiffs[1].Groups; len(g) > 0 && g[0].GrewBytes > 0 {
		t.Errorf("the same snapshot twice: %+v grew, want nothing", g[0])
	}
	d := r.HeapDiffs[0]
	const kept = 300 * 16 << 10
	if g := d.Groups[0]; g.Name != "Map" || g.Holder != "Cache.sessions ← Object.cache" || g.GrewBytes < kept*9/10 || g.GrewBytes > kept*3/2 {
		t.Errorf("top group %+v, want the Map held by Cache.sessions, grown by about %d bytes (payload plus keys and records)", g, kept)
	}
	if d.From != filepath.Dir(taken[0]) || d.To != later {
		t.Errorf("diff from %s to %s, want %s to %s", d.From, d.To, filepath.Dir(taken[0]), later)
	}
	if (r.Verdict.Culprit != "") != (d.Beside != "") {
		t.Errorf("culprit %q but beside %q", r.Verdict.Culprit, d.Beside)
	}
	var kinds []string
	for _, m := range r.Markers {
		kinds = append(kinds, m.Kind+": "+m.Label)
	}
	slices.Sort(kinds)
	want := []string{"demand: a dump asked for (SIGUSR2)", "demand: a dump asked for (SIGUSR2)", "demand: a dump asked for (SIGUSR2)", "dump: dump at 100MB", "dump: dump on demand", "dump: dump on demand", "threshold: RSS crossed 100MB"}
	if !slices.Equal(kinds, want) {
		t.Errorf("markers = %q, want %q", kinds, want)
	}
	html, _ := os.ReadFile(cfg.ReportHTML)
	if !bytes.Contains(html, []byte("What grew between dumps")) {
		t.Errorf("the HTML report has no heap diff section")
	}

	rp, err := Replay(cfg.RecordPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct{ path, format string }{{cfg.ReportJSON, "json"}, {cfg.ReportHTML, "html"}} {
		want, _ := os.ReadFile(f.path)
		got, err := Render(rp.Report(), f.format)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("replayed %s report differs from the live one:\n%s", f.format, golden.FirstDiff(got, want))
		}
	}
}
