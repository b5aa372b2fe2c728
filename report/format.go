package report

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// bytesText formats bytes for people: B, KB, MB, GB (binary, as in the log).
func bytesText(b int64) string {
	a := abs64(b)
	sign := ""
	if b < 0 {
		sign = "-"
	}
	f := float64(a)
	switch {
	case a < 1<<10:
		return fmt.Sprintf("%s%d B", sign, a)
	case a < 1<<20:
		return sign + trim(f/(1<<10)) + " KB"
	case a < 1<<30:
		return sign + trim(f/(1<<20)) + " MB"
	}
	return sign + strconv.FormatFloat(f/(1<<30), 'f', 2, 64) + " GB"
}

// trim keeps three significant digits or so: 1.23, 12.3, 123.
func trim(f float64) string {
	if f >= 100 {
		return strconv.FormatFloat(f, 'f', 0, 64)
	}
	return strconv.FormatFloat(f, 'f', 1, 64)
}

// signed formats bytes with a sign: +12.3 MB, -4.0 KB, 0 B.
func signed(b int64) string {
	if b > 0 {
		return "+" + bytesText(b)
	}
	return bytesText(b)
}

func count[T int | uint64](n T) string {
	s := strconv.FormatUint(uint64(n), 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func clock(t time.Time) string {
	if t.IsZero() {
		return "–"
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

func clockMilli(t time.Time) string {
	if t.IsZero() {
		return "–"
	}
	return t.UTC().Format("15:04:05.000")
}

// duration formats an interval briefly: 340ms, 22s, 5m 03s, 2h 05m.
func duration(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < 10*time.Second:
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Round(time.Second).Seconds()))
	case d < time.Hour:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm %02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	}
	d = d.Round(time.Minute)
	return fmt.Sprintf("%dh %02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
}

// exitStatus describes a wait(2) status.
func exitStatus(code int) string {
	if sig := code & 0x7f; sig != 0 {
		names := map[int]string{1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 6: "SIGABRT", 9: "SIGKILL", 11: "SIGSEGV", 13: "SIGPIPE", 15: "SIGTERM"}
		if n, ok := names[sig]; ok {
			return fmt.Sprintf("killed by signal %d (%s)", sig, n)
		}
		return fmt.Sprintf("killed by signal %d", sig)
	}
	return fmt.Sprintf("exited with status %d", code>>8&0xff)
}

func truncate(s string, n int) string {
	rs := []rune(s)
	if len(rs) <= n {
		return s
	}
	return string(rs[:n-1]) + "…"
}

func abs64(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}
