package heapsnap

import (
	"bytes"
	"testing"
)

// TestTerminalProgress: a line per new percentage of a file, none for a
// repeated one or an unknown size, and a clear at the end.
func TestTerminalProgress(t *testing.T) {
	var b bytes.Buffer
	progress, clearLine := TerminalProgress(&b, "memdiag: ")
	progress(0, 0, 0)
	progress(0, 1, 200)
	progress(0, 1, 200)
	progress(1, 200, 200)
	clearLine()
	if want := "\rmemdiag: reading A   0%\rmemdiag: reading B 100%\r\033[K"; b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}
