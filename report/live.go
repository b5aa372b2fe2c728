package report

import (
	"bytes"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"
)

// liveRows is how many categories the live view shows; liveTail how many
// of the latest log lines it keeps under the table.
const (
	liveRows = 15
	liveTail = 6
)

// LiveView is memdiag's --live: a per-category table of growth, retained
// and rate, redrawn on the terminal as the session reports (its Update is
// session.Config.Live),
// with the latest log lines under it. It is also the session's console:
// log lines scroll under the table until the next redraw, and the final
// lines stay after the last one.
type LiveView struct {
	mu    sync.Mutex
	w     io.Writer
	lines []string // the latest log lines, at most liveTail
}

// NewLiveView draws on w (a terminal).
func NewLiveView(w io.Writer) *LiveView { return &LiveView{w: w} }

// Write takes log lines (the session's console) and shows them at once.
func (v *LiveView) Write(p []byte) (int, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, l := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		v.lines = append(v.lines, l)
	}
	if n := len(v.lines); n > liveTail {
		v.lines = append(v.lines[:0], v.lines[n-liveTail:]...)
	}
	return v.w.Write(p)
}

// Update redraws the table from the current
func (v *LiveView) Update(r *Report) {
	v.mu.Lock()
	defer v.mu.Unlock()
	var b bytes.Buffer
	b.WriteString("\x1b[H\x1b[2J") // home, clear the screen
	renderLive(&b, r)
	for _, l := range v.lines {
		fmt.Fprintln(&b, l)
	}
	v.w.Write(b.Bytes())
}

// renderLive writes the live table of r.
func renderLive(w io.Writer, r *Report) {
	d := time.Duration(r.DurationSec * float64(time.Second))
	fmt.Fprintf(w, "memdiag  pid %d (%s)  %s  RSS %s (%s, %s)  external %s (%s)\n",
		r.Target.PID, r.Target.Comm, d.Round(time.Second), Bytes(r.Final.RSS),
		SignedBytes(r.Growth.RSS), BytesPerMinute(r.Growth.RSS, d),
		SignedBytes(r.Growth.External), r.External.Mode)
	if r.Verdict.Statement != "" {
		fmt.Fprintf(w, "verdict: %s\n", r.Verdict.Statement)
	}
	cats := append([]CategoryJSON(nil), r.Categories...)
	sort.SliceStable(cats, func(i, j int) bool { return cats[i].RetainedBytes > cats[j].RetainedBytes })
	fmt.Fprintf(w, "\n%-28s %-10s %8s %12s %12s %14s\n", "CATEGORY", "KIND", "OPS", "RSS", "RETAINED", "RATE")
	for i, c := range cats {
		if i == liveRows {
			fmt.Fprintf(w, "… %d more categories\n", len(cats)-i)
			break
		}
		mark := ""
		if c.Name == r.Verdict.Culprit {
			mark = "  <-- culprit"
		}
		fmt.Fprintf(w, "%-28s %-10s %8d %12s %12s %14s%s\n", clip(c.Name, 28), clip(c.Kind, 10), c.Ops,
			SignedBytes(c.RSSBytes), SignedBytes(c.RetainedBytes), BytesPerMinute(c.RSSBytes, d), mark)
	}
	fmt.Fprintln(w)
}

// clip shortens s to n runes.
func clip(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
