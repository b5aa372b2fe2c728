//go:build privileged

package tracer

import (
	"io"
	"os"
	"os/exec"
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

// startPiped starts a workload the test drives through its stdin and
// reads through its stdout; at the test's end its stdin is closed (the
// workloads exit at EOF), it is killed if it has not, and waited for.
func startPiped(t *testing.T, cmd *exec.Cmd) (in io.Writer, out io.Reader) {
	t.Helper()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	return stdin, stdout
}
