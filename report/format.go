package report

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// byteUnits are the binary units Bytes picks from, each 1024 times the one
// before it.
var byteUnits = []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}

// Bytes formats a byte count for people, in the binary unit the value
// needs: 412 B, 412 KiB, 52.0 MiB, 1.5 GiB. Below 100 units it keeps one
// decimal, from 100 on none, so every value shows three significant digits
// or so; a value that would round to 1024 of a unit is shown in the next.
func Bytes(b int64) string {
	sign := ""
	if b < 0 {
		sign = "-"
	}
	a := abs64(b)
	if a < 1<<10 {
		return sign + strconv.FormatInt(a, 10) + " B"
	}
	f := float64(a)
	for i := 1; i < len(byteUnits); i++ {
		f /= 1024
		text := trim(f)
		if v, _ := strconv.ParseFloat(text, 64); v < 1024 || i == len(byteUnits)-1 {
			return sign + text + " " + byteUnits[i]
		}
	}
	panic("unreachable")
}

// SignedBytes is Bytes with a sign for changes: +52.0 MiB, -412 KiB, 0 B.
func SignedBytes(b int64) string {
	if b > 0 {
		return "+" + Bytes(b)
	}
	return Bytes(b)
}

// BytesPerMinute formats a rate of change: bytes changed over d, per
// minute, with a sign (+3.0 MiB/min); 0 B/min when d is not positive.
func BytesPerMinute(bytes int64, d time.Duration) string {
	if d <= 0 {
		return "0 B/min"
	}
	return SignedBytes(int64(math.Round(float64(bytes)/d.Minutes()))) + "/min"
}

// bytesText formats bytes for people; see Bytes.
func bytesText(b int64) string { return Bytes(b) }

// signed formats bytes with a sign; see SignedBytes.
func signed(b int64) string { return SignedBytes(b) }

// trim keeps three significant digits or so: 1.2, 12.3, 123.
func trim(f float64) string {
	if f >= 99.95 {
		return strconv.FormatFloat(f, 'f', 0, 64)
	}
	return strconv.FormatFloat(f, 'f', 1, 64)
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
