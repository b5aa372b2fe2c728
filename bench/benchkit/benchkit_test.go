package benchkit

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{7}, 7},
		{nil, 0},
	} {
		if got := Median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

// TestKilledBySignal: a process killed by a signal is told from one that
// exited with a status.
func TestKilledBySignal(t *testing.T) {
	if err := exec.Command("sh", "-c", "kill -KILL $$").Run(); !KilledBySignal(err) {
		t.Errorf("SIGKILL: %v", err)
	}
	if err := exec.Command("sh", "-c", "exit 3").Run(); KilledBySignal(err) {
		t.Errorf("exit 3: %v", err)
	}
}

// TestDirWatch: a file created in the directory is seen, once.
func TestDirWatch(t *testing.T) {
	dir := t.TempDir()
	w, err := NewDirWatch(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := os.WriteFile(filepath.Join(dir, "ready"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if created, err := w.Wait(time.Minute); !created || err != nil {
		t.Fatalf("creation not seen: %v", err)
	}
	if created, err := w.Wait(0); created || err != nil {
		t.Fatalf("events not drained: %v", err)
	}
}
