package report

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/memdiag/memdiag/safefile"
)

// Log writes the live log, one line per event, timestamp first, in the
// classic [TAG] format. It is safe for concurrent use.
type Log struct {
	mu       sync.Mutex
	w        io.Writer
	c        io.Closer
	now      func() time.Time
	fallback io.Writer // where lines go once the file fails (a full disk)
	path     string
	console  io.Writer // where ConsoleTags lines are also written, or nil
}

// ConsoleTags are the tags a tee'd log also writes on the console: what a
// user watching a terminal needs (the baseline, growth, summaries, the
// verdict, and what went wrong), not the periodic lines.
var ConsoleTags = map[string]bool{
	"INIT": true, "GROWTH": true, "SUMMARY": true, "VERDICT": true, "SAMPLING": true, "LOST": true,
	"ERROR": true, "OOM": true, "THRESHOLD": true, "DUMP": true, "HEALTH": true, "TLS": true, "REPORT": true,
}

// Tee also writes the lines whose tag is in ConsoleTags to w (the
// terminal), with the time of day only. A log that already writes to w
// (it could not open its file) is left as it is.
func (l *Log) Tee(w io.Writer) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.w != w {
		l.console = w
	}
}

// OpenLog opens path for appending. When that fails it logs to fallback
// (the console) and returns a warning saying why, once.
func OpenLog(path string, fallback io.Writer) (*Log, string) {
	f, err := safefile.OpenAppend(path)
	if err != nil {
		return &Log{w: fallback, now: time.Now}, fmt.Sprintf("memdiag: warning: cannot write the log %s (%v); logging to the console", path, err)
	}
	return &Log{w: f, c: f, now: time.Now, fallback: fallback, path: path}, ""
}

// NewLog logs to w with the given clock (tests pass a fixed one).
func NewLog(w io.Writer, now func() time.Time) *Log { return &Log{w: w, now: now} }

// Printf writes one line: timestamp, [tag], message.
func (l *Log) Printf(tag, format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now, msg := l.now(), fmt.Sprintf(format, args...)
	line := fmt.Sprintf("%s [%s] %s\n", now.UTC().Format("2006-01-02T15:04:05.000Z"), tag, msg)
	// The console copy goes first, and never twice: once the file has
	// failed, the log itself writes to the console.
	if l.console != nil && l.console != l.w && ConsoleTags[tag] {
		fmt.Fprintf(l.console, "%s [%s] %s\n", now.Format("15:04:05"), tag, msg)
	}
	if _, err := io.WriteString(l.w, line); err != nil && l.fallback != nil {
		// The file stopped taking lines (a full disk): say so once and
		// go on on the console, so nothing more is lost.
		fmt.Fprintf(l.fallback, "memdiag: warning: cannot write the log %s any more (%v); logging to the console\n", l.path, err)
		l.w, l.fallback = l.fallback, nil
		if l.w != l.console || !ConsoleTags[tag] {
			io.WriteString(l.w, line)
		}
	}
}

// Close closes the log file, if any.
func (l *Log) Close() error {
	if l.c == nil {
		return nil
	}
	return l.c.Close()
}

// Stderr is the console fallback.
var Stderr io.Writer = os.Stderr

// MB formats bytes as Bytes does (SignedBytes when signed is set). The
// classic log rounded to whole megabytes, which reads +0MB on a small service;
// the log now uses the unit the value needs.
//
// Deprecated: use Bytes or SignedBytes.
func MB(b int64, signed bool) string {
	if signed {
		return SignedBytes(b)
	}
	return Bytes(b)
}

// Rate formats a growth rate per minute: see BytesPerMinute.
func Rate(bytes int64, d time.Duration) string { return BytesPerMinute(bytes, d) }
