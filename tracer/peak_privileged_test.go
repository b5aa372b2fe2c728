//go:build privileged

package tracer

import (
	"bufio"
	"fmt"
	"os/exec"
	"testing"
)

// TestPeakOutlivesItsMM: when the kernel drops a traced mm's state — its
// id now names another process's mm (the kernel reuses a freed mm_struct,
// often before memdiag's next read), so the process's own charges stop —
// the process's peak stays readable. Losing it made `memdiag run` report
// peak.rss_bytes = 0, and the exact mode's live ArrayBuffers 0, for a
// target that exited between two reads.
//
// The test takes the drop path without waiting for a reuse: a process that
// is no longer a target changes its own mm, which is what the kernel sees
// when its mm id went to a process memdiag does not trace.
func TestPeakOutlivesItsMM(t *testing.T) {
	tr := openDrained(t)

	python, err := exec.LookPath("/usr/bin/python3") // the binary itself: a wrapper script would fork and exec
	if err != nil {
		t.Skipf("needs /usr/bin/python3: %v", err)
	}
	cmd := exec.Command(python, "-c", `import sys
sys.stdin.readline()
b = b'x' * (32 << 20)
print('grown', flush=True)
sys.stdin.readline()
c = b'y' * (4 << 20)
print('touched', flush=True)
sys.stdin.readline()`)
	in, stdout := startPiped(t, cmd)
	out := bufio.NewReader(stdout)
	step := func(want string) {
		t.Helper()
		fmt.Fprintln(in)
		if line, err := out.ReadString('\n'); err != nil || line != want+"\n" {
			t.Fatalf("the workload said %q, %v; want %q", line, err, want)
		}
	}
	pid := uint32(cmd.Process.Pid)
	if err := tr.AddTarget(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	step("grown")
	if !hasMMState(t, tr, pid) {
		t.Fatal("the target's growth made no mm state")
	}
	if err := tr.objs.Targets.Delete(&pid); err != nil {
		t.Fatal(err)
	}
	step("touched") // its own mm, no longer a target's: the state goes
	if hasMMState(t, tr, pid) {
		t.Fatal("the mm state of a process that is no longer traced is still there")
	}

	snap, err := tr.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var peak int64
	for _, p := range snap.Processes {
		if p.PID == pid {
			peak = p.Peak
		}
	}
	if peak < 32<<20 {
		t.Errorf("peak after the mm state went = %d, want at least the 32 MiB the process held", peak)
	}
	// Forgetting the process forgets its kept peak too.
	if err := tr.Forget(nil, []uint32{pid}); err != nil {
		t.Fatal(err)
	}
	if snap, err = tr.Snapshot(); err != nil {
		t.Fatal(err)
	}
	for _, p := range snap.Processes {
		if p.PID == pid {
			t.Errorf("forgotten process %d still in the snapshot: %+v", pid, p)
		}
	}
}

// hasMMState says whether the kernel's mm table has an entry of tgid.
func hasMMState(t *testing.T, tr *Tracer, tgid uint32) bool {
	t.Helper()
	var (
		id uint64
		st memdiagMmState
	)
	it := tr.objs.MmStates.Iterate()
	for it.Next(&id, &st) {
		if st.Tgid == tgid {
			return true
		}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return false
}
