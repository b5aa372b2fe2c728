package heapsnap

import (
	"fmt"
	"io"
)

// TerminalProgress is an Options.Progress that shows on a terminal w how
// far each file has been read ("reading A  42%"), redrawn in place when the
// percentage changes; clearLine erases the line once the diff is done.
func TerminalProgress(w io.Writer, prefix string) (progress func(file int, done, total int64), clearLine func()) {
	last := -1
	progress = func(file int, done, total int64) {
		if total <= 0 {
			return
		}
		pct := int(done * 100 / total)
		if pct == last {
			return
		}
		last = pct
		fmt.Fprintf(w, "\r%sreading %s %3d%%", prefix, [2]string{"A", "B"}[file], pct)
	}
	return progress, func() { fmt.Fprint(w, "\r\033[K") }
}
