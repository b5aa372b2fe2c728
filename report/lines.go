package report

import (
	"fmt"
	"strings"
	"time"

	"github.com/memdiag/memdiag/attribution"
	"github.com/memdiag/memdiag/event"
)

// memLine formats resident memory as the classic log does.
func memLine(m Memory) string {
	return fmt.Sprintf("RSS: %s (anon %s, file %s, shmem %s)", Bytes(m.RSS), Bytes(m.Anon), Bytes(m.File), Bytes(m.Shmem))
}

// Init logs the baseline.
func (l *Log) Init(target Target, base Baseline) {
	l.Printf("INIT", "Tracing pid %d (%s, %s). Baseline memory: %s, peak before: %s",
		target.PID, target.Comm, target.Mode, memLine(base.Memory), Bytes(base.HWM))
}

// Periodic logs current memory and the growth rate since the previous
// periodic line.
func (l *Log) Periodic(current Memory, external, delta, externalDelta int64, mode string, over time.Duration) {
	l.Printf("PERIODIC", "Current: %s, External %s since start (%s) | Growth rate: RSS %s, External %s",
		memLine(current), SignedBytes(external), mode, Rate(delta, over), Rate(externalDelta, over))
}

// Lost logs newly lost ring buffer records.
func (l *Log) Lost(n, total uint64) {
	l.Printf("LOST", "%d lifecycle events lost (ring buffer full; %d in all). Byte totals are kept in the kernel and are unaffected", n, total)
}

// Final logs the closing summary: growth, peak and each bucket.
func (l *Log) Final(r *Report, sum *attribution.Summary, why string) {
	l.Printf("SUMMARY", "Tracing ended (%s) after %.0fs. Growth: RSS %s (anon %s, file %s, shmem %s), peak %s, final %s",
		why, r.DurationSec, SignedBytes(r.Growth.RSS), SignedBytes(r.Growth.Anon), SignedBytes(r.Growth.File), SignedBytes(r.Growth.Shmem),
		Bytes(r.Peak.RSS), Bytes(r.Final.RSS))
	var b strings.Builder
	for i, bk := range r.Buckets {
		if i == 10 {
			fmt.Fprintf(&b, "; %d more in the report", len(r.Buckets)-i)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s[%d] %s", bk.Name, bk.PID, SignedBytes(bk.RSS))
	}
	if b.Len() > 0 {
		l.Printf("SUMMARY", "By bucket: %s", b.String())
	}
	var negative []string
	for _, bk := range r.Buckets {
		if bk.RSS < 0 {
			negative = append(negative, fmt.Sprintf("%s[%d]", bk.Name, bk.PID))
		}
	}
	if len(negative) > 0 {
		l.Printf("SUMMARY", "Negative buckets: %s gave memory back (released more than they took)", strings.Join(negative, ", "))
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
		{h.RegionOverflow, "mappings found the region table full"},
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
	if h.FramesLost > 0 {
		l.Printf("HEALTH", "%d HTTP/2 or WebSocket connections lost their frame boundaries (a frame header split across reads): their later streams or messages are not ops", h.FramesLost)
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
	l.Printf("GROWTH", "%s%s: RSS %s, External %s [%s]", name, detail, SignedBytes(n.Counters.Resident()), SignedBytes(ext), n.Category)
}

// Summary logs the per-category block: ops, total, average per op, top 3,
// and the primary culprit.
func (l *Log) Summary(sum *attribution.Summary, why string) {
	exact := sum.ExternalMode == "exact"
	l.Printf("SUMMARY", "Memory by category (%s): growth RSS %s; external %s", why, SignedBytes(sum.Growth.Resident()), sum.ExternalMode)
	for _, c := range sum.Categories {
		if c.Resident() == 0 && c.Ops == 0 {
			continue
		}
		mark := ""
		if c.Name == sum.Verdict.Culprit {
			mark = fmt.Sprintf("  <-- PRIMARY CULPRIT (keeps %.0f%% of what retaining categories keep)", sum.Verdict.Share*100)
		}
		retained := fmt.Sprintf("Retained %s", SignedBytes(c.Retention.Bytes))
		if c.Retention.StdErr > 0 {
			retained += fmt.Sprintf(" ±%s", Bytes(2*c.Retention.StdErr))
		}
		if c.Ops > 0 && c.Retention.Significant {
			retained += fmt.Sprintf(" (%s/op)", SignedBytes(int64(c.Retention.PerOp)))
		}
		if hw := c.Retention.HighWater; hw > 0 {
			retained += fmt.Sprintf(" (+%s committed, not growing with its work)", Bytes(hw))
		}
		if c.Kind == attribution.KindHTTP || c.Kind == attribution.KindOutbound || c.Kind == attribution.KindUnknown {
			var top []string
			for _, o := range c.Top {
				top = append(top, fmt.Sprintf("%s %s", o.Name, SignedBytes(o.Counters.Resident())))
			}
			l.Printf("SUMMARY", "  %s: %d ops, RSS %s, External %s, %s, avg RSS %s/op; top: %s%s", c.Name, c.Ops, SignedBytes(c.Resident()),
				SignedBytes(c.ExternalBytes(exact)), retained, SignedBytes(c.AvgResidentPerOp()), strings.Join(top, ", "), mark)
		} else {
			l.Printf("SUMMARY", "  %s (%s): RSS %s, %s%s", c.Name, c.Kind, SignedBytes(c.Resident()), retained, mark)
		}
	}
	var negative []string
	for _, c := range sum.Categories {
		if c.Resident() < 0 {
			negative = append(negative, c.Name)
		}
	}
	if len(negative) > 0 {
		l.Printf("SUMMARY", "  negative: %s %s", strings.Join(negative, ", "), negativeNote)
	}
	if sum.Verdict.Statement != "" {
		l.Printf("VERDICT", "%s [%s]", sum.Verdict.Statement, sum.Verdict.Method)
	}
	if sum.GrewMost != "" && sum.GrewMost != sum.Verdict.Culprit {
		l.Printf("VERDICT", "RSS grew most during %s (%.0f%% of operation growth): who allocated while the heap grew, not who keeps memory", sum.GrewMost, 100*sum.GrewMostShare)
	}
}

// Sampling says which runtime sampler the verdict rests on.
func (l *Log) Sampling(st *event.Sampling) {
	if st.Active {
		l.Printf("SAMPLING", "runtime heap joined with operations: %s, one sample per %s on average", st.Reason, Bytes(int64(st.Interval)))
		return
	}
	l.Printf("SAMPLING", "%s", st.Reason)
}

// negativeNote says what a negative category or bucket means, after its
// names.
const negativeNote = "gave memory back: it released more resident memory than it took " +
	"(e.g. a thread that freed what other threads allocated), which offsets growth charged elsewhere"

// Size formats signed bytes: see SignedBytes.
//
// Deprecated: use SignedBytes.
func Size(b int64) string { return SignedBytes(b) }

// KB formats signed bytes: see SignedBytes.
//
// Deprecated: use SignedBytes.
func KB(b int64) string { return SignedBytes(b) }

// TLSHint says once that served requests were encrypted.
func (l *Log) TLSHint() {
	l.Printf("TLS", "a served socket carries TLS: its requests cannot be named from the syscalls and are charged to idle; run memdiag with --tls to name HTTPS requests (Node.js)")
}
