package heapsnap

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
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

// StderrProgress is TerminalProgress on standard error when it is a
// terminal; otherwise no progress (nil) and a clearLine that does nothing.
func StderrProgress(prefix string) (progress func(file int, done, total int64), clearLine func()) {
	if _, err := unix.IoctlGetTermios(int(os.Stderr.Fd()), unix.TCGETS); err != nil {
		return nil, func() {}
	}
	return TerminalProgress(os.Stderr, prefix)
}

// CheckFiles refuses, before any is read, a path that cannot be read or
// is not a regular file: the one-line errors of `memdiag diff`.
func CheckFiles(paths ...string) error {
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("cannot read heap snapshot: %w", err)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s is not a file: give two .heapsnapshot files", p)
		}
	}
	return nil
}
