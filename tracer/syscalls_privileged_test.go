//go:build privileged

package tracer

import (
	"bufio"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf/link"

	"github.com/memdiag/memdiag/event"
)

// pyStepper runs a Python script that waits for a line on stdin before
// each step and answers with one line.
type pyStepper struct {
	t   *testing.T
	cmd *exec.Cmd
	in  interface{ Write([]byte) (int, error) }
	out *bufio.Reader
}

func startPython(t *testing.T, script string) *pyStepper {
	t.Helper()
	python, err := exec.LookPath("/usr/bin/python3")
	if err != nil {
		t.Skipf("needs /usr/bin/python3: %v", err)
	}
	cmd := exec.Command(python, "-c", script)
	in, stdout := startPiped(t, cmd)
	return &pyStepper{t: t, cmd: cmd, in: in, out: bufio.NewReader(stdout)}
}

// step releases the script's next step and returns its answer.
func (p *pyStepper) step() string {
	p.t.Helper()
	fmt.Fprintln(p.in)
	line, err := p.out.ReadString('\n')
	if err != nil {
		p.t.Fatalf("the workload ended: %v", err)
	}
	return strings.TrimSpace(line)
}

// TestThreadRenameNamesItsBucket: a thread of a target that renames itself
// after its bucket exists gives the bucket its new name (task_rename, a BTF
// raw tracepoint since the syscall tracepoints became one raw pair).
func TestThreadRenameNamesItsBucket(t *testing.T) {
	tr := openDrained(t)
	p := startPython(t, `import sys, threading
def work():
    sys.stdin.readline()
    b = b'x' * (8 << 20)
    print(threading.get_native_id(), flush=True)
    sys.stdin.readline()
    with open('/proc/self/task/%d/comm' % threading.get_native_id(), 'w') as f:
        f.write('renamed-worker')
    print('renamed', flush=True)
    sys.stdin.readline()
w = threading.Thread(target=work)
w.start()
w.join()`)
	if err := tr.AddTarget(p.cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	tid, err := strconv.Atoi(p.step())
	if err != nil {
		t.Fatal(err)
	}
	if got := threadComm(t, tr, uint32(p.cmd.Process.Pid), uint32(tid)); got != "python3" {
		t.Fatalf("the worker's bucket is named %q before the rename, want python3", got)
	}
	if got := p.step(); got != "renamed" {
		t.Fatalf("the workload said %q, want renamed", got)
	}
	if got := threadComm(t, tr, uint32(p.cmd.Process.Pid), uint32(tid)); got != "renamed-worker" {
		t.Errorf("the worker's bucket is named %q after the rename, want renamed-worker", got)
	}
}

// threadComm returns the name of thread tid's own bucket in process pid.
func threadComm(t *testing.T, tr *Tracer, pid, tid uint32) string {
	t.Helper()
	snap, err := tr.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range snap.Buckets {
		if b.Key.PID == pid && b.Key.Kind == event.BucketThread && b.Key.ID == uint64(tid) {
			return b.Comm
		}
	}
	t.Fatalf("no bucket of thread %d in process %d: %+v", tid, pid, snap.Buckets)
	return ""
}

// TestEveryLinkIsRaw: every hook is attached as a BTF raw tracepoint. A
// perf-event tracepoint waits for RCU grace periods under the kernel's
// event_mutex when it detaches (50 ms to over a second each, one after the
// other): the ~40 syscall ones made memdiag take 2 s to exit after SIGTERM.
func TestEveryLinkIsRaw(t *testing.T) {
	tr := openDrained(t)
	if len(tr.links) != len(attachments) {
		t.Fatalf("%d links for %d attachments", len(tr.links), len(attachments))
	}
	for i, c := range tr.links {
		l, ok := c.(link.Link)
		if !ok {
			t.Fatalf("link %d (%s) is a %T", i, attachments[i].Tracepoint, c)
		}
		info, err := l.Info()
		if err != nil {
			t.Fatalf("link %d (%s): %v", i, attachments[i].Tracepoint, err)
		}
		if info.Type != link.RawTracepointType {
			t.Errorf("%s is attached as a %v link, want a BTF raw tracepoint (raw_tracepoint)", attachments[i].Tracepoint, info.Type)
		}
	}
}
