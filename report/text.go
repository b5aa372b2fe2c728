package report

import (
	"fmt"
	"strings"
	"text/tabwriter"
)

// Text renders the report for a terminal or a log: baseline, current,
// growth, the culprit, a table of categories, their top ops, and health.
func (r *Report) Text() []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "memdiag report: pid %d (%s, %s)", r.Target.PID, r.Target.Comm, r.Target.Mode)
	if r.Target.Exe != "" {
		fmt.Fprintf(&b, " %s", r.Target.Exe)
	}
	if cl := r.Target.CommandLine(); cl != "" {
		fmt.Fprintf(&b, "\ncommand: %s", cl)
	}
	fmt.Fprintf(&b, "\n%s -> %s (%.0fs)", r.StartedAt.UTC().Format("2006-01-02 15:04:05"), r.EndedAt.UTC().Format("15:04:05"), r.DurationSec)
	if r.Target.Exited {
		b.WriteString(", the target exited")
	}
	b.WriteString("\n\n")

	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "memory\tRSS\tanon\tfile\tshmem\t\n")
	fmt.Fprintf(tw, "baseline\t%s\t%s\t%s\t%s\t\n", Bytes(r.Baseline.RSS), Bytes(r.Baseline.Anon), Bytes(r.Baseline.File), Bytes(r.Baseline.Shmem))
	fmt.Fprintf(tw, "current\t%s\t%s\t%s\t%s\t\n", Bytes(r.Final.RSS), Bytes(r.Final.Anon), Bytes(r.Final.File), Bytes(r.Final.Shmem))
	fmt.Fprintf(tw, "growth\t%s\t%s\t%s\t%s\t\n", SignedBytes(r.Growth.RSS), SignedBytes(r.Growth.Anon), SignedBytes(r.Growth.File), SignedBytes(r.Growth.Shmem))
	fmt.Fprintf(tw, "peak\t%s\t\t\t\t\n", Bytes(r.Peak.RSS))
	tw.Flush()
	fmt.Fprintf(&b, "\nexternal (%s): %s growth; retained by operations: %s\n", r.External.Mode, SignedBytes(r.Growth.External), SignedBytes(r.Growth.Retained))

	if r.Culprit != nil {
		measure := map[string]string{"retained": "retained bytes", "rss": "growth"}[r.CulpritBy]
		label := "Largest grower"
		if r.CulpritShare >= 0.5 {
			label = "PRIMARY CULPRIT"
		}
		fmt.Fprintf(&b, "\n%s: %s (%.0f%% of operation %s)\n", label, *r.Culprit, r.CulpritShare*100, measure)
	} else if r.Verdict.Suspect != "" {
		fmt.Fprintf(&b, "\nNo culprit measured; suspect (an estimate): %s\n", r.Verdict.Suspect)
	} else {
		b.WriteString("\nNo culprit.\n")
	}
	if r.Verdict.Statement != "" {
		fmt.Fprintf(&b, "Verdict: %s (%s)\n", r.Verdict.Statement, r.Verdict.Method)
	}
	if r.GrewMost != nil && (r.Culprit == nil || *r.GrewMost != *r.Culprit) {
		fmt.Fprintf(&b, "Grew most: %s (%.0f%% of the operations' RSS growth: who allocated while the process grew, not who keeps memory)\n", *r.GrewMost, 100*r.GrewMostShare)
	}

	b.WriteString("\n")
	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "category\tkind\tops\tRSS\tavg/op\texternal\tretained\t\n")
	for _, c := range r.Categories {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t\n", oneLine(c.Name), c.Kind, c.Ops, SignedBytes(c.RSSBytes), SignedBytes(c.AvgRSSBytesPerOp), SignedBytes(c.ExternalBytes), SignedBytes(c.RetainedBytes))
	}
	tw.Flush()
	var negative []string
	for _, c := range r.Categories {
		if c.RSSBytes < 0 {
			negative = append(negative, oneLine(c.Name))
		}
	}
	if len(negative) > 0 {
		fmt.Fprintf(&b, "\nnegative RSS: %s %s.\n", strings.Join(negative, ", "), negativeNote)
	}

	top := false
	for _, c := range r.Categories {
		if len(c.TopOps) == 0 {
			continue
		}
		if !top {
			b.WriteString("\ntop ops\n")
			top = true
		}
		fmt.Fprintf(&b, "  %s:\n", oneLine(c.Name))
		for _, o := range c.TopOps {
			name := oneLine(o.Name)
			if o.Ops > 1 {
				name = fmt.Sprintf("cycle of %d calls, first %s", o.Ops, name)
			}
			fmt.Fprintf(&b, "    %s %s: RSS %s, external %s\n", name, oneLine(o.Detail), SignedBytes(o.RSSBytes), SignedBytes(o.ExternalBytes))
		}
	}

	h := r.Health
	fmt.Fprintf(&b, "\nhealth: %d lost events, %d unattributed bytes", r.LostEvents, r.UnattributedBytes)
	if n := h.BucketOverflow + h.MMOverflow + h.TargetOverflow + h.PendingOverflow + h.SocketOverflow + h.ThreadOverflow + h.RegionOverflow + h.OutstandingOverflow + h.DecodeErrors; n > 0 || h.OpsEvicted > 0 {
		fmt.Fprintf(&b, ", tables overflowed (see the JSON report's health)")
	}
	b.WriteString("\n")
	for _, m := range r.Markers {
		fmt.Fprintf(&b, "%s %s: %s\n", m.Time.UTC().Format("15:04:05"), m.Kind, oneLine(m.Label))
	}
	for _, d := range r.HeapDiffs {
		fmt.Fprintf(&b, "%s what grew between dumps: %s\n", d.Time.UTC().Format("15:04:05"), oneLine(HeapDiffLine(&d)))
	}
	return []byte(b.String())
}

// oneLine keeps names from the network on one line.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}
