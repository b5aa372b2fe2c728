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
func (l *Log) Periodic(current Memory, delta int64, over time.Duration) {
	l.Printf("PERIODIC", "Current: %s | Growth rate: RSS %s", memLine(current), Rate(delta, over))
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
}
