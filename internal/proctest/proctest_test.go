package proctest

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestStartAndWaitFile: a file the process creates is waited for; a
// process that exits without creating it ends the wait with an error
// saying so, long before the deadline.
func TestStartAndWaitFile(t *testing.T) {
	dir := t.TempDir()
	ready := filepath.Join(dir, "ready")
	var waitErr error
	done := Start(t, exec.Command("sh", "-c", "touch "+ready), &waitErr)
	if err := WaitFile(ready, time.Minute, nil); err != nil {
		t.Fatal(err)
	}
	<-done
	if waitErr != nil {
		t.Fatal(waitErr)
	}
	done = Start(t, exec.Command("true"), &waitErr)
	if err := WaitFile(filepath.Join(dir, "never"), time.Hour, done); err == nil || !strings.Contains(err.Error(), "exited before") {
		t.Fatalf("got %v, want the exit noticed", err)
	}
}
