package report

import (
	"fmt"
	"strings"
	"time"

	"github.com/memdiag/memdiag/attribution"
)

// memLine formats resident memory as the classic log does.
func memLine(m Memory) string {
	return fmt.Sprintf("RSS: %s (anon %s, file %s, shmem %s)", MB(m.RSS, false), MB(m.Anon, false), MB(m.File, false), MB(m.Shmem, false))
}

// Init logs the baseline.
func (l *Log) Init(target Target, base Baseline) {
	l.Printf("INIT", "Tracing pid %d (%s, %s). Baseline memory: %s, peak before: %s",
		target.PID, target.Comm, target.Mode, memLine(base.Memory), MB(base.HWM, false))
}

// Periodic logs current memory and the growth rate since the previous
// periodic line.
func (l *Log) Periodic(current Memory, external, delta, externalDelta int64, mode string, over time.Duration) {
	l.Printf("PERIODIC", "Current: %s, External %s since start (%s) | Growth rate: RSS %s, External %s",
		memLine(current), MB(external, true), mode, Rate(delta, over), Rate(externalDelta, over))
}

// Lost logs newly lost ring buffer records.
func (l *Log) Lost(n, total uint64) {
	l.Printf("LOST", "%d lifecycle events lost (ring buffer full; %d in all). Byte totals are kept in the kernel and are unaffected", n, total)
}

// Final logs the closing summary: growth, peak and each bucket.
func (l *Log) Final(r *Report, sum *attribution.Summary, why string) {
	l.Printf("SUMMARY", "Tracing ended (%s) after %.0fs. Growth: RSS %s (anon %s, file %s, shmem %s), peak %s, final %s",
		why, r.DurationSec, MB(r.Growth.RSS, true), MB(r.Growth.Anon, true), MB(r.Growth.File, true), MB(r.Growth.Shmem, true),
		MB(r.Peak.RSS, false), MB(r.Final.RSS, false))
	var b strings.Builder
	for i, bk := range r.Buckets {
		if i == 10 {
			fmt.Fprintf(&b, "; %d more in the report", len(r.Buckets)-i)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s[%d] %s", bk.Name, bk.PID, MB(bk.RSS, true))
	}
	if b.Len() > 0 {
		l.Printf("SUMMARY", "By bucket: %s", b.String())
	}
	if r.LostEvents > 0 {
		l.Printf("LOST", "%d lifecycle events were lost in all; byte totals are unaffected", r.LostEvents)
	}
	h := r.Health
	var full []string
	for _, c := range []struct {
		n    uint64
		what string
	}{
		{h.BucketOverflow, "charges found the bucket table full (--max-buckets)"},
		{h.MMOverflow, "address spaces found the mm table full"},
		{h.TargetOverflow, "tasks found the target table full"},
		{h.PendingOverflow, "syscalls found the pending table full"},
		{h.SocketOverflow, "sockets found the socket table full"},
		{h.ThreadOverflow, "threads found the thread table full"},
		{h.RegionOverflow, "mapping blocks found the region table full"},
		{h.OutstandingOverflow, "ArrayBuffers found the outstanding table full (--max-outstanding; not counted)"},
		{h.DecodeErrors, "ring buffer records did not decode (a memdiag bug: please report it; their bytes stay in the totals)"},
		{uint64(h.OpsEvicted), "open ops were ended early (op table full)"},
	} {
		if c.n > 0 {
			full = append(full, fmt.Sprintf("%d %s", c.n, c.what))
		}
	}
	if len(full) > 0 {
		l.Printf("HEALTH", "bounded tables overflowed: %s", strings.Join(full, "; "))
	}
}

// Growth logs an op (or cycle) that grew past the threshold.
func (l *Log) Growth(n attribution.Notice) {
	name := n.Name
	if n.Ops > 1 {
		name = fmt.Sprintf("%s cycle (%d calls)", n.Category, n.Ops)
	}
	detail := ""
	if n.Detail != "" {
		detail = " (" + n.Detail + ")"
	}
	ext := n.Counters.External
	if n.Exact {
		ext = int64(n.Counters.ABAlloc) - int64(n.Counters.ABFreed)
	}
	l.Printf("GROWTH", "%s%s: RSS %s, External %s [%s]", name, detail, MB(n.Counters.Resident(), true), MB(ext, true), n.Category)
}

// Summary logs the per-category block: ops, total, average per op, top 3,
// and the primary culprit.
func (l *Log) Summary(sum *attribution.Summary, why string) {
	exact := sum.ExternalMode == "exact"
	l.Printf("SUMMARY", "Memory by category (%s): growth RSS %s; external %s", why, MB(sum.Growth.Resident(), true), sum.ExternalMode)
	for _, c := range sum.Categories {
		if c.Resident() == 0 && c.Ops == 0 {
			continue
		}
		mark := ""
		if c.Name == sum.Culprit && sum.CulpritShare >= 0.5 {
			mark = fmt.Sprintf("  <-- PRIMARY CULPRIT (%.0f%% of operation %s)", sum.CulpritShare*100, map[string]string{"retained": "retained bytes", "rss": "growth"}[sum.CulpritBy])
		}
		if c.Kind == attribution.KindHTTP || c.Kind == attribution.KindOutbound || c.Kind == attribution.KindUnknown {
			var top []string
			for _, o := range c.Top {
				top = append(top, fmt.Sprintf("%s %s", o.Name, Size(o.Counters.Resident())))
			}
			l.Printf("SUMMARY", "  %s: %d ops, RSS %s, External %s, Retained %s, avg %s/op; top: %s%s", c.Name, c.Ops, MB(c.Resident(), true),
				MB(c.ExternalBytes(exact), true), MB(c.RetainedBytes(), true), Size(c.AvgResidentPerOp()), strings.Join(top, ", "), mark)
		} else {
			l.Printf("SUMMARY", "  %s (%s): RSS %s", c.Name, c.Kind, MB(c.Resident(), true))
		}
	}
}

// Size formats signed bytes in MB from 1 MB up, in KB below.
func Size(b int64) string {
	if b >= 1<<20 || b <= -(1<<20) {
		return fmt.Sprintf("%+.1fMB", float64(b)/(1<<20))
	}
	return KB(b)
}

// KB formats bytes as signed kibibytes, for per-op averages.
func KB(b int64) string {
	return fmt.Sprintf("%+.1fKB", float64(b)/1024)
}

// TLSHint says once that served requests were encrypted.
func (l *Log) TLSHint() {
	l.Printf("TLS", "a served socket carries TLS: its requests cannot be named from the syscalls and are charged to idle; run memdiag with --tls to name HTTPS requests (Node.js)")
}
