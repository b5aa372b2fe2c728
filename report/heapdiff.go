package report

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/memdiag/memdiag/event"
)

// HeapDiffMarker is the kind of the timeline marker that carries a heap
// diff through a recording: its label is the HeapDiffJSON, compact. Build
// moves such markers into Report.HeapDiffs, so a replay gives the same
// "What grew between dumps" section as the live run.
const HeapDiffMarker = "heapdiff"

// HeapDiffJSON is what grew between two consecutive heap snapshots of one
// run (the automatic `memdiag diff` of two dumps).
type HeapDiffJSON struct {
	Time time.Time `json:"time"` // when the diff was done
	// From and To are the dump directories of the earlier and the later
	// snapshot; heapdiff.json and heapdiff.txt are in To.
	From          string          `json:"from"`
	To            string          `json:"to"`
	ReachableFrom int64           `json:"reachable_from_bytes"` // reachable heap in the earlier snapshot
	ReachableTo   int64           `json:"reachable_to_bytes"`
	NewObjects    int64           `json:"new_objects"` // objects of the later snapshot absent from the earlier
	Groups        []HeapGroupJSON `json:"groups"`      // largest growth first
	// Beside puts the top group next to the verdict's culprit, when the
	// report has one: "POST /login retains ~19.6 KiB per op; between the
	// dumps, `Map` retained by `Cache.sessions ← app` grew by 12.3 MiB".
	Beside string `json:"beside,omitempty"`
}

// HeapGroupJSON is one group of objects (constructor, or "(string)", …)
// of a heap diff.
type HeapGroupJSON struct {
	Name          string `json:"name"`
	GrewBytes     int64  `json:"grew_bytes"` // new objects that the group's older objects alone keep
	RetainedDelta int64  `json:"retained_delta_bytes"`
	CountDelta    int64  `json:"count_delta"`
	New           int64  `json:"new"`
	// Path is a retainer path from the group's object to a GC root
	// ("Map ← Cache.sessions ← Object.cache ← …"); Holder its first
	// holders only ("Cache.sessions ← Object.cache").
	Path   string `json:"path"`
	Holder string `json:"holder"`
}

// MarkerLabel encodes the diff as a HeapDiffMarker label.
func (d *HeapDiffJSON) MarkerLabel() string {
	b, _ := json.Marshal(d) // plain values: cannot fail
	return string(b)
}

// heapDiffs takes the heap diffs out of a summary's markers, with the
// verdict beside each.
func heapDiffs(markers []event.Marker, r *Report) []HeapDiffJSON {
	out := []HeapDiffJSON{}
	for _, m := range markers {
		if m.Kind != HeapDiffMarker {
			continue
		}
		var d HeapDiffJSON
		if err := json.Unmarshal([]byte(m.Label), &d); err != nil {
			continue // not ours: a recording cannot hold one, but never fail a report on it
		}
		d.Beside = Beside(r.Verdict.Culprit, r.Categories, &d)
		out = append(out, d)
	}
	return out
}

// Beside says the verdict and the diff's top group in one sentence, or ""
// when there is no culprit or nothing grew.
func Beside(culprit string, cats []CategoryJSON, d *HeapDiffJSON) string {
	if culprit == "" || len(d.Groups) == 0 || d.Groups[0].GrewBytes <= 0 {
		return ""
	}
	perOp := ""
	for _, c := range cats {
		switch {
		case c.Name != culprit:
		case c.Ops > 0:
			perOp = fmt.Sprintf(" ~%s per op", Bytes(int64(c.RetainedPerOp)))
		default: // idle, a background thread: no ops to divide by
			perOp = " " + Bytes(c.RetainedBytes)
		}
	}
	g := d.Groups[0]
	by := ""
	if g.Holder != "" {
		by = fmt.Sprintf(" retained by `%s`", g.Holder)
	}
	return fmt.Sprintf("%s retains%s; between the dumps, `%s`%s grew by %s", oneLine(culprit), perOp, g.Name, by, Bytes(g.GrewBytes))
}

// HeapDiffLine is the diff in one line, for the log and the text report:
// the top group, its growth and its retainer path, and the verdict beside
// it when there is one.
func HeapDiffLine(d *HeapDiffJSON) string {
	if len(d.Groups) == 0 || d.Groups[0].GrewBytes <= 0 {
		return fmt.Sprintf("nothing grew between %s and %s", dirName(d.From), dirName(d.To))
	}
	g := d.Groups[0]
	line := fmt.Sprintf("%s → %s: %s grew by %s (%s new objects), via %s", dirName(d.From), dirName(d.To), g.Name, Bytes(g.GrewBytes), count(int(d.NewObjects)), g.Path)
	if d.Beside != "" {
		line += "; " + d.Beside
	}
	return line
}

// dirName is the last element of a dump directory.
func dirName(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}
