package accuracy

import (
	"fmt"
	"math"
	"sort"
	"strings"
)

// Expect is what a service's run must show, known from how it was written.
type Expect struct {
	// Sent is the number of requests the load sent per category, or the
	// ops the truth must show for categories the load drives indirectly
	// (outbound calls made by requests).
	Sent map[string]int64
	// Leaking lists the categories that retain memory; none for a
	// leak-free service.
	Leaking []string
	// OpsSlack allows categories driven by the service's own timers (sync
	// cycles) this many ops of difference between the truth and memdiag:
	// a cycle can run between attach and truth0, or between truth1 and
	// memdiag's stop, and neither is in the truth.
	OpsSlack map[string]int64
}

// Row is one category: the truth beside memdiag's account.
type Row struct {
	Category                     string
	TruthOps, MemdiagOps         int64
	TruthRetained, MemdiagRetain int64
	MemdiagRetainedPerOp         *float64
	Leaking, InReport, IsCulprit bool
}

// Table is one service's comparison.
type Table struct {
	Service        string
	Rows           []Row
	TruthCulprit   string // the leaking category holding the most, "" for none
	MemdiagCulprit string
	MemdiagSuspect string // what a mapping estimate alone points at (not a culprit)
	Statement      string // memdiag's verdict statement, when it has one
	SelfCheck      *SelfCheck
	TruthRetained  int64            // the sum of the truth's retained bytes
	Extra          []ReportCategory // memdiag's categories the truth does not name
	Notes          []string
}

// Compare joins a service's truth over the measured interval with memdiag's
// report.
func Compare(service string, truth *Truth, rep *Report, exp Expect) *Table {
	t := &Table{Service: service, MemdiagCulprit: rep.CulpritName(), SelfCheck: truth.SelfCheck, TruthRetained: truth.Retained()}
	if rep.Verdict != nil {
		t.Statement, t.MemdiagSuspect = rep.Verdict.Statement, rep.Verdict.Suspect
	}
	leaking := map[string]bool{}
	for _, n := range exp.Leaking {
		leaking[n] = true
	}
	var best int64
	for _, name := range truth.Names() {
		c := truth.Categories[name]
		row := Row{Category: name, TruthOps: c.Ops, TruthRetained: c.RetainedBytes, Leaking: leaking[name], IsCulprit: name == t.MemdiagCulprit}
		if mc, ok := rep.Category(name); ok {
			row.InReport = true
			row.MemdiagOps = mc.Ops
			row.MemdiagRetain = mc.RetainedBytes
			row.MemdiagRetainedPerOp = mc.RetainedPerOpBytes
		}
		if row.Leaking && c.RetainedBytes > best {
			best = c.RetainedBytes
			t.TruthCulprit = name
		}
		t.Rows = append(t.Rows, row)
	}
	for _, mc := range rep.Categories {
		if _, ok := truth.Categories[mc.Name]; !ok {
			t.Extra = append(t.Extra, mc)
		}
	}
	sort.Slice(t.Extra, func(i, j int) bool { return t.Extra[i].RetainedBytes > t.Extra[j].RetainedBytes })
	var health []string
	for _, k := range sortedKeys(rep.Health) {
		if rep.Health[k] != 0 {
			health = append(health, fmt.Sprintf("%s %d", k, rep.Health[k]))
		}
	}
	if rep.LostEvents > 0 {
		t.Notes = append(t.Notes, fmt.Sprintf("memdiag lost %d lifecycle events (ring buffer full): an op begin among them is an op it cannot count.", rep.LostEvents))
	}
	if len(health) > 0 {
		t.Notes = append(t.Notes, fmt.Sprintf("memdiag's health counters: %s.", strings.Join(health, ", ")))
	}
	return t
}

// smallestLeak is the truth's retained bytes of the leaking category that
// retains least: innocent categories are measured against it.
func (t *Table) smallestLeak() int64 {
	var m int64
	for _, r := range t.Rows {
		if r.Leaking && (m == 0 || r.TruthRetained < m) {
			m = r.TruthRetained
		}
	}
	return m
}

// CheckTruth lists what is wrong with the truth itself: a service that
// did not count the load it got, a leaking category that kept nothing, an
// innocent one that kept something, or a self-check that disagrees with the
// truth by more than selfCheckTol (a fraction of the truth's retained
// bytes, or of minSelfCheckBytes when that is larger).
func (t *Table) CheckTruth(exp Expect, selfCheckTol float64, minSelfCheckBytes int64) []string {
	var bad []string
	for _, r := range t.Rows {
		if want, ok := exp.Sent[r.Category]; ok && r.TruthOps != want {
			bad = append(bad, fmt.Sprintf("truth: %s counted %d ops, the load sent %d", r.Category, r.TruthOps, want))
		}
		if r.Leaking && r.TruthRetained <= 0 {
			bad = append(bad, fmt.Sprintf("truth: leaking category %s retained %d bytes", r.Category, r.TruthRetained))
		}
		if !r.Leaking && r.TruthRetained != 0 {
			bad = append(bad, fmt.Sprintf("truth: innocent category %s retained %d bytes", r.Category, r.TruthRetained))
		}
	}
	for name := range exp.Sent {
		if _, ok := t.row(name); !ok {
			bad = append(bad, fmt.Sprintf("truth: no category %s", name))
		}
	}
	if t.SelfCheck == nil || t.SelfCheck.Error != "" {
		bad = append(bad, "truth: no self-check")
	} else {
		scale := max(t.TruthRetained, minSelfCheckBytes)
		if d := t.SelfCheck.Bytes - t.TruthRetained; math.Abs(float64(d)) > selfCheckTol*float64(scale) {
			bad = append(bad, fmt.Sprintf("truth: self-check (%s) grew %s, the truth says %s retained: off by more than %.0f%% of %s",
				t.SelfCheck.Method, Bytes(t.SelfCheck.Bytes), Bytes(t.TruthRetained), selfCheckTol*100, Bytes(scale)))
		}
	}
	return bad
}

// opsTolerance is the slack allowed on memdiag's op count of a category
// the load sent n requests to: 0.5%, the bar (the load is wholly
// inside the traced interval, so in practice counts are exact).
func opsTolerance(n int64) int64 {
	return int64(math.Floor(0.005 * float64(n)))
}

// CheckOps lists op counts memdiag got wrong.
func (t *Table) CheckOps(exp Expect) []string {
	var bad []string
	for _, r := range t.Rows {
		tol := opsTolerance(r.TruthOps) + exp.OpsSlack[r.Category]
		if !r.InReport && r.TruthOps > 0 {
			bad = append(bad, fmt.Sprintf("ops: memdiag has no category %s (truth %d ops)", r.Category, r.TruthOps))
			continue
		}
		if d := r.MemdiagOps - r.TruthOps; d > tol || d < -tol {
			bad = append(bad, fmt.Sprintf("ops: %s: memdiag %d, truth %d (tolerance ±%d)", r.Category, r.MemdiagOps, r.TruthOps, tol))
		}
	}
	return bad
}

// CheckVerdict lists what memdiag's verdict gets wrong, per the issue: the
// culprit is the leaking category (none for a leak-free service); each
// leaking category's retained bytes within 25% of the truth; every innocent
// category retains less than 10% of the smallest leak.
func (t *Table) CheckVerdict() []string {
	var bad []string
	if t.MemdiagCulprit != t.TruthCulprit {
		bad = append(bad, fmt.Sprintf("verdict: culprit %s, truth %s", orNone(t.MemdiagCulprit), orNone(t.TruthCulprit)))
	}
	leak := t.smallestLeak()
	for _, r := range t.Rows {
		if r.Leaking {
			if e := r.perOpErr(); math.Abs(e) > 0.25 {
				bad = append(bad, fmt.Sprintf("verdict: %s retained %s over %d ops, truth %s over %d (per op %+.0f%%, want within 25%%)", r.Category, Bytes(r.MemdiagRetain), r.MemdiagOps, Bytes(r.TruthRetained), r.TruthOps, e*100))
			}
		} else if leak > 0 && r.MemdiagRetain*10 >= leak {
			bad = append(bad, fmt.Sprintf("verdict: innocent %s retained %s, ≥ 10%% of the leak's %s", r.Category, Bytes(r.MemdiagRetain), Bytes(leak)))
		}
	}
	// memdiag's own accounts the truth has no row for (idle, thread:…,
	// outbound calls counted apart) hold none of the truth's bytes either.
	for _, c := range t.Extra {
		if leak > 0 && c.RetainedBytes*10 >= leak {
			bad = append(bad, fmt.Sprintf("verdict: %s (%s, not in the truth) retained %s, ≥ 10%% of the leak's %s", c.Name, c.Kind, Bytes(c.RetainedBytes), Bytes(leak)))
		}
	}
	return bad
}

func (t *Table) row(name string) (Row, bool) {
	for _, r := range t.Rows {
		if r.Category == name {
			return r, true
		}
	}
	return Row{}, false
}

func sortedKeys(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// perOpErr is the relative error of memdiag's retained bytes per op
// against the truth's, as the issue measures it: a timer-driven category
// (a sync cycle) may run a cycle more or less outside the truth's window.
// Without ops on both sides it is the error of the totals.
func (r Row) perOpErr() float64 {
	if r.MemdiagOps <= 0 || r.TruthOps <= 0 {
		return relErr(r.MemdiagRetain, r.TruthRetained)
	}
	got := float64(r.MemdiagRetain) / float64(r.MemdiagOps)
	want := float64(r.TruthRetained) / float64(r.TruthOps)
	if want == 0 {
		return relErr(r.MemdiagRetain, r.TruthRetained)
	}
	return (got - want) / want
}

func relErr(got, want int64) float64 {
	if want == 0 {
		if got == 0 {
			return 0
		}
		return math.Inf(1)
	}
	return float64(got-want) / float64(want)
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// Bytes formats a byte count for the tables: exact below 1 KiB, else KiB or
// MiB with one decimal.
func Bytes(n int64) string {
	a := n
	if a < 0 {
		a = -a
	}
	switch {
	case a < 1024:
		return fmt.Sprintf("%d B", n)
	case a < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/1024)
	default:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
}

// Markdown renders the table, its verdict line and its notes.
func (t *Table) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "### %s\n\n", t.Service)
	b.WriteString("| category | ops (truth / memdiag) | retained (truth / memdiag) | error | culprit right? |\n")
	b.WriteString("|---|---|---|---|---|\n")
	leak := t.smallestLeak()
	for _, r := range t.Rows {
		name := r.Category
		if r.Leaking {
			name += " (leaks)"
		}
		mops, mret := "—", "—"
		if r.InReport {
			mops = fmt.Sprint(r.MemdiagOps)
			mret = Bytes(r.MemdiagRetain)
			if r.MemdiagRetainedPerOp != nil {
				mret += fmt.Sprintf(" (%s/op)", Bytes(int64(math.Round(*r.MemdiagRetainedPerOp))))
			}
		}
		var errCol string
		switch {
		case r.TruthRetained != 0:
			errCol = fmt.Sprintf("%+.0f%% per op", r.perOpErr()*100)
		case leak > 0:
			errCol = fmt.Sprintf("%.1f%% of the leak", float64(r.MemdiagRetain)/float64(leak)*100)
		case r.MemdiagRetain == 0:
			errCol = "0"
		default:
			errCol = "+" + Bytes(r.MemdiagRetain)
		}
		var culprit string
		switch {
		case r.Category == t.TruthCulprit && r.IsCulprit:
			culprit = "yes (named)"
		case r.Category == t.TruthCulprit:
			culprit = "no (not named)"
		case r.IsCulprit:
			culprit = "no (named, innocent)"
		default:
			culprit = "yes (not named)"
		}
		fmt.Fprintf(&b, "| %s | %d / %s | %s / %s | %s | %s |\n", name, r.TruthOps, mops, Bytes(r.TruthRetained), mret, errCol, culprit)
	}
	fmt.Fprintf(&b, "\nCulprit: truth %s, memdiag %s", orNone(t.TruthCulprit), orNone(t.MemdiagCulprit))
	if t.MemdiagSuspect != "" {
		fmt.Fprintf(&b, " (suspect, an estimate: %s)", t.MemdiagSuspect)
	}
	if t.MemdiagCulprit == t.TruthCulprit {
		b.WriteString(" — right.\n")
	} else {
		b.WriteString(" — wrong.\n")
	}
	if t.Statement != "" {
		fmt.Fprintf(&b, "memdiag's verdict: %q\n", t.Statement)
	}
	b.WriteString("\nNotes:\n")
	if sc := t.SelfCheck; sc != nil && sc.Error == "" {
		fmt.Fprintf(&b, "- self-check (%s) grew %s over the load; the truth says %s retained.\n", sc.Method, Bytes(sc.Bytes), Bytes(t.TruthRetained))
	} else {
		b.WriteString("- no self-check.\n")
	}
	if len(t.Extra) > 0 {
		var parts []string
		for _, c := range t.Extra {
			parts = append(parts, fmt.Sprintf("%s (%s, %d ops, RSS %s, retained %s)", c.Name, c.Kind, c.Ops, Bytes(c.RSSBytes), Bytes(c.RetainedBytes)))
		}
		fmt.Fprintf(&b, "- memdiag's other accounts: %s.\n", strings.Join(parts, "; "))
	}
	for _, n := range t.Notes {
		fmt.Fprintf(&b, "- %s\n", n)
	}
	return b.String()
}
