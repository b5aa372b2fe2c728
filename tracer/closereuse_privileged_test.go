//go:build privileged

package tracer

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"testing"
	"time"

	"github.com/memdiag/memdiag/event"
)

// TestClosedOpEndsBeforeReusedFD: an op whose connection its own thread
// closes ends when the thread moves on; when the thread moves on to a
// request on a new connection that got the same fd (no poll in between),
// that op's end must reach userspace before the new op's begin, whose
// connection's naming state the end of the fd's previous connection
// drops. testdata/workload/closereuse.c closes each connection from its
// request's op and accepts the next on the same fd.
func TestClosedOpEndsBeforeReusedFD(t *testing.T) {
	tr := openTracer(t)
	bin := buildC(t, "../testdata/workload/closereuse.c")
	stdin, stdout := startPiped(t, exec.Command(bin))
	sc := bufio.NewScanner(stdout)
	pid, port := readyPort(t, sc)
	if err := tr.AddTarget(pid); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(stdin, "go")
	var fds [2]string
	for i, path := range []string{"/first", "/second"} {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", path)
		if !sc.Scan() {
			t.Fatalf("closereuse served no request %d: %v", i+1, sc.Err())
		}
		fds[i] = sc.Text()
		c.Close()
	}
	if fds[0] != fds[1] {
		// accept returns the lowest free fd: the one just closed.
		t.Fatalf("the second connection did not reuse the first's fd (%s, %s)", fds[0], fds[1])
	}

	// The events in ring order: the first op's end (END_CLOSE) must come
	// before the second op's begin. The deadline turns a hang into a
	// failure.
	var firstID uint64
	deadline := time.After(30 * time.Second)
	events := unbatched(t, tr.Events())
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("the tracer's events ended")
			}
			switch ev := ev.(type) {
			case *event.OpBegin:
				if ev.PID != uint32(pid) {
					continue
				}
				if ev.Path == "/first" {
					firstID = ev.OpID
				} else if ev.Path == "/second" {
					t.Fatalf("the second connection's op began before the first's end (op %d)", firstID)
				}
			case *event.OpEnd:
				if ev.PID == uint32(pid) && firstID != 0 && ev.OpID == firstID {
					if ev.Reason != event.EndClose {
						t.Errorf("the first op ended by %v, want its close", ev.Reason)
					}
					return
				}
			}
		case <-deadline:
			t.Fatalf("no end of the first op within 30 s (op %d)", firstID)
		}
	}
}
