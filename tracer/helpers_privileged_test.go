//go:build privileged

package tracer

import (
	"os"
	"testing"
)

// openDrained opens a tracer for a test that reads the kernel's maps, not
// the events: it skips without root, keeps the ring buffer moving, and
// closes the tracer when the test ends.
func openDrained(t *testing.T) *Tracer {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads and attaches the BPF program")
	}
	tr, err := Open(Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	go func() {
		for range tr.Events() {
		}
	}()
	return tr
}
