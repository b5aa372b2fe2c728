//go:build privileged

package tracer

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/memdiag/memdiag/event"
)

// unbatched passes on the events of batches one at a time, as the tests
// read them; once the test ends it drops them, so the tracer's reader
// never waits on a test that stopped reading.
func unbatched(t *testing.T, batches <-chan *event.Batch) <-chan event.Event {
	out := make(chan event.Event)
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	go func() {
		defer close(out)
		for b := range batches {
			for _, ev := range b.Events {
				select {
				case out <- ev:
				case <-stop:
				}
			}
			b.Release()
		}
	}()
	return out
}

// openTracer opens a tracer with the default configuration, skipping the
// test without root, and closes it when the test ends.
func openTracer(t *testing.T) *Tracer {
	t.Helper()
	return openTracerWith(t, Config{})
}

// openTracerWith is openTracer with configuration cfg.
func openTracerWith(t *testing.T, cfg Config) *Tracer {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads and attaches the BPF program")
	}
	tr, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// openDrained opens a tracer (openTracer) for a test that reads the
// kernel's maps, not the events, and keeps its ring buffer moving.
func openDrained(t *testing.T) *Tracer {
	t.Helper()
	tr := openTracer(t)
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

// buildC compiles the C workload at src (relative to this package) into
// the test's temporary directory and returns the binary; without gcc the
// test is skipped, saying so.
func buildC(t *testing.T, src string) string {
	t.Helper()
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skipf("needs gcc to build %s", src)
	}
	bin := filepath.Join(t.TempDir(), strings.TrimSuffix(filepath.Base(src), ".c"))
	if out, err := exec.Command(gcc, "-O2", "-Wall", "-pthread", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", src, err, out)
	}
	return bin
}

// readyPort reads a server workload's first line, "ready <pid> port=<port>".
func readyPort(t *testing.T, sc *bufio.Scanner) (pid, port int) {
	t.Helper()
	if !sc.Scan() {
		t.Fatalf("the workload did not get ready: %v", sc.Err())
	}
	if _, err := fmt.Sscanf(sc.Text(), "ready %d port=%d", &pid, &port); err != nil {
		t.Fatalf("the workload said %q: %v", sc.Text(), err)
	}
	return pid, port
}
