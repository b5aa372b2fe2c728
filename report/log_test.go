package report

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestLogTee: the console gets the ConsoleTags lines with the time of day,
// the log gets every line with the full timestamp.
func TestLogTee(t *testing.T) {
	at := time.Date(2026, 11, 29, 15, 4, 5, 0, time.UTC)
	var file, console strings.Builder
	l := NewLog(&file, func() time.Time { return at })
	l.Tee(&console)
	l.Printf("INIT", "tracing pid %d", 42)
	l.Printf("PERIODIC", "current")
	l.Printf("VERDICT", "api keeps it")
	wantFile := "2026-11-29T15:04:05.000Z [INIT] tracing pid 42\n" +
		"2026-11-29T15:04:05.000Z [PERIODIC] current\n" +
		"2026-11-29T15:04:05.000Z [VERDICT] api keeps it\n"
	if file.String() != wantFile {
		t.Errorf("log file:\n%s\nwant:\n%s", file.String(), wantFile)
	}
	clock := at.Local().Format("15:04:05")
	wantConsole := clock + " [INIT] tracing pid 42\n" + clock + " [VERDICT] api keeps it\n"
	if console.String() != wantConsole {
		t.Errorf("console:\n%s\nwant:\n%s", console.String(), wantConsole)
	}
}

// failing is a writer that refuses every write (a full disk).
type failing struct{}

func (failing) Write([]byte) (int, error) { return 0, errors.New("no space left on device") }

// TestLogTeeFallback: once the file fails, the console gets every line,
// and the tee'd ones once only.
func TestLogTeeFallback(t *testing.T) {
	var console strings.Builder
	l := &Log{w: failing{}, now: time.Now, fallback: &console, path: "x.log"}
	l.Tee(&console)
	l.Printf("INIT", "one")
	l.Printf("PERIODIC", "two")
	l.Printf("GROWTH", "three")
	got := console.String()
	for _, want := range []string{"[INIT] one", "[PERIODIC] two", "[GROWTH] three", "cannot write the log x.log any more"} {
		if strings.Count(got, want) != 1 {
			t.Errorf("console has %q %d times, want once:\n%s", want, strings.Count(got, want), got)
		}
	}
}

// TestLogTeeSameWriter: a log already on the console is not tee'd to it.
func TestLogTeeSameWriter(t *testing.T) {
	var console strings.Builder
	l := NewLog(&console, time.Now)
	l.Tee(&console)
	l.Printf("INIT", "one")
	if n := strings.Count(console.String(), "[INIT] one"); n != 1 {
		t.Errorf("line written %d times, want once: %q", n, console.String())
	}
}
