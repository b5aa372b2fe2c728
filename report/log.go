package report

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
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
}

// OpenLog opens path for appending. When that fails it logs to fallback
// (the console) and returns a warning saying why, once.
func OpenLog(path string, fallback io.Writer) (*Log, string) {
	f, err := OpenAppend(path)
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
	line := fmt.Sprintf("%s [%s] %s\n", l.now().UTC().Format("2006-01-02T15:04:05.000Z"), tag, fmt.Sprintf(format, args...))
	if _, err := io.WriteString(l.w, line); err != nil && l.fallback != nil {
		// The file stopped taking lines (a full disk): say so once and
		// go on on the console, so nothing more is lost.
		fmt.Fprintf(l.fallback, "memdiag: warning: cannot write the log %s any more (%v); logging to the console\n", l.path, err)
		l.w, l.fallback = l.fallback, nil
		io.WriteString(l.w, line)
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
