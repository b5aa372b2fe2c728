package report_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/memdiag/memdiag/attribution"
	"github.com/memdiag/memdiag/event"
	"github.com/memdiag/memdiag/report"
)

// TestHeapDiffsInReports: a heap diff carried by a timeline marker (as a
// recording holds it) becomes heap_diffs in the JSON, a line of the text
// report and a section of the HTML, never a plain marker; with a culprit,
// the verdict is put beside the diff's top group.
func TestHeapDiffsInReports(t *testing.T) {
	sum, base := attachSummary()
	sum.Categories = append(sum.Categories, attribution.CategorySummary{Name: "POST /login", Ops: 1000,
		Retention: attribution.Retention{Bytes: 20070400, PerOp: 20070.4, Significant: true}})
	sum.Verdict = attribution.Verdict{Culprit: "POST /login", Share: 1, Statement: "POST /login retains 19.1 MiB", Method: "mapping estimate"}
	d := report.HeapDiffJSON{
		Time: t0.Add(60 * time.Second), From: "/d/100-2GB-1", To: "/d/100-on-demand-2",
		ReachableFrom: 10 << 20, ReachableTo: 23 << 20, NewObjects: 4000,
		Groups: []report.HeapGroupJSON{
			{Name: "Map", GrewBytes: 12897485, RetainedDelta: 12897485, CountDelta: 0, New: 0, Path: "Map ← Cache.sessions ← app", Holder: "Cache.sessions ← app"},
			{Name: "(string)", GrewBytes: 0, RetainedDelta: 12 << 20, CountDelta: 1000, New: 1000, Path: "(string) ← Object.blob"},
		},
	}
	sum.Markers = []event.Marker{
		{Header: event.Header{Time: t0.Add(30 * time.Second)}, Kind: "dump", Label: "dump at 2GB"},
		{Header: event.Header{Time: d.Time}, Kind: report.HeapDiffMarker, Label: d.MarkerLabel()},
	}
	r := report.Build(sum, base, report.Target{PID: 100, Mode: "attach"}, "memdiag test")
	if len(r.Markers) != 1 || r.Markers[0].Kind != "dump" {
		t.Errorf("markers = %+v, want the dump only (the diff is in heap_diffs)", r.Markers)
	}
	if len(r.HeapDiffs) != 1 || r.HeapDiffs[0].Groups[0].Name != "Map" || r.HeapDiffs[0].Groups[0].GrewBytes != 12897485 {
		t.Fatalf("heap_diffs = %+v, want the diff with Map on top", r.HeapDiffs)
	}
	want := "POST /login retains ~19.6 KiB per op; between the dumps, `Map` retained by `Cache.sessions ← app` grew by 12.3 MiB"
	if got := r.HeapDiffs[0].Beside; got != want {
		t.Errorf("beside = %q\nwant     %q", got, want)
	}
	text := string(r.Text())
	if !strings.Contains(text, "what grew between dumps: 100-2GB-1 → 100-on-demand-2: Map grew by 12.3 MiB (4,000 new objects), via Map ← Cache.sessions ← app; "+want) {
		t.Errorf("text report lacks the diff line:\n%s", text)
	}
	html, err := r.HTML()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"What grew between dumps", "100-2GB-1 → 100-on-demand-2", "Map ← Cache.sessions ← app", "12.3 MiB", "data-heap-beside"} {
		if !bytes.Contains(html, []byte(s)) && !bytes.Contains(html, []byte(strings.ReplaceAll(s, "←", "&larr;"))) {
			t.Errorf("HTML lacks %q", s)
		}
	}

	// No culprit: no sentence beside; no diff: no section.
	sum.Verdict = attribution.Verdict{}
	if r := report.Build(sum, base, report.Target{PID: 100}, "t"); r.HeapDiffs[0].Beside != "" {
		t.Errorf("beside without a culprit = %q, want none", r.HeapDiffs[0].Beside)
	}
	sum.Markers = sum.Markers[:1]
	r = report.Build(sum, base, report.Target{PID: 100}, "t")
	if html, _ := r.HTML(); bytes.Contains(html, []byte("What grew between dumps")) || r.HeapDiffs == nil {
		t.Errorf("without diffs: section shown %v, heap_diffs %v (want none, and [] in the JSON)", bytes.Contains(html, []byte("What grew between dumps")), r.HeapDiffs)
	}
}
