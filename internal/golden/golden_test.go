package golden

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestCheck: an update writes the file, the same bytes pass, other bytes
// fail naming where they part.
func TestCheck(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.golden")
	Check(t, path, []byte("hello world"), true, "go test -update")
	Check(t, path, []byte("hello world"), false, "go test -update")
	ft := &testing.T{}
	done := make(chan struct{})
	go func() { defer close(done); Check(ft, path, []byte("hello there"), false, "go test -update") }()
	<-done
	if !ft.Failed() {
		t.Error("different bytes passed")
	}
	if d := FirstDiff([]byte("abcX"), []byte("abcY")); !strings.Contains(d, "got:  …abcX") || !strings.Contains(d, "want: …abcY") {
		t.Errorf("FirstDiff: %q", d)
	}
}
