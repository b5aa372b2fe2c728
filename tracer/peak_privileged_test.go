//go:build privileged

package tracer

import (
	"bufio"
	"fmt"
	"os/exec"
	"testing"

	"github.com/cilium/ebpf"
)

// TestPeakOutlivesItsMM: when the kernel drops a traced mm's state — its
// id now names another process's mm (the kernel reuses a freed mm_struct,
// often before memdiag's next read), so the process's own charges stop —
// the process's peak stays readable. Losing it made `memdiag run` report
// peak.rss_bytes = 0, and the exact mode's live ArrayBuffers 0, for a
// target that exited between two reads.
//
// The test takes the drop path without waiting for a reuse: the state of
// the workload's mm is rewritten to name another process (former, its
// previous owner) and the workload stops being a target, so when it
// changes its mm the kernel sees what it sees when an exited target's mm
// id went to a process memdiag does not trace.
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
	mmID, ok := mmStateOf(t, tr, pid)
	if !ok {
		t.Fatal("the target's growth made no mm state")
	}
	const former = 4000000 // above any pid_max: no live process has it
	var st memdiagMmState
	if err := tr.objs.MmStates.Lookup(&mmID, &st); err != nil {
		t.Fatal(err)
	}
	st.Tgid = former
	if err := tr.objs.MmStates.Update(&mmID, &st, ebpf.UpdateExist); err != nil {
		t.Fatal(err)
	}
	if err := tr.objs.Targets.Delete(&pid); err != nil {
		t.Fatal(err)
	}
	step("touched") // an untraced process changes an mm whose state names another: the state goes
	if _, ok := mmStateOf(t, tr, former); ok {
		t.Fatal("the stale mm state is still there")
	}
	if _, ok := mmStateOf(t, tr, pid); ok {
		t.Fatal("a process that is not traced got an mm state")
	}

	snap, err := tr.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var peak int64
	for _, p := range snap.Processes {
		if p.PID == former {
			peak = p.Peak
		}
	}
	if peak < 32<<20 {
		t.Errorf("peak after the mm state went = %d, want at least the 32 MiB the process held", peak)
	}
	// Forgetting the process forgets its kept peak too.
	if err := tr.Forget(nil, []uint32{former}); err != nil {
		t.Fatal(err)
	}
	if snap, err = tr.Snapshot(); err != nil {
		t.Fatal(err)
	}
	for _, p := range snap.Processes {
		if p.PID == former {
			t.Errorf("forgotten process %d still in the snapshot: %+v", former, p)
		}
	}
}

// mmStateOf returns the id of the kernel's mm table entry of tgid, and
// whether there is one.
func mmStateOf(t *testing.T, tr *Tracer, tgid uint32) (uint64, bool) {
	t.Helper()
	var (
		id uint64
		st memdiagMmState
	)
	it := tr.objs.MmStates.Iterate()
	for it.Next(&id, &st) {
		if st.Tgid == tgid {
			return id, true
		}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return 0, false
}

// TestExecKeepsTheImageInTheMMState: an RSS change reads its process's
// image generation from the state of its mm (the class of a fault's
// mapping is looked up in that image's table), and the exec that makes
// the new mm changes the gen after the new mm's first changes (the image
// is loaded into it before sched_process_exec). The state must still end
// with the process's gen, or every fault after the exec would look its
// mapping up in the image before it.
func TestExecKeepsTheImageInTheMMState(t *testing.T) {
	tr := openDrained(t)

	python, err := exec.LookPath("/usr/bin/python3")
	if err != nil {
		t.Skipf("needs /usr/bin/python3: %v", err)
	}
	cmd := exec.Command(python, "-c", `import os, sys
sys.stdin.readline()
os.execv(sys.executable, [sys.executable, "-c", "import sys\nb = b'x' * (8 << 20)\nprint('grown', flush=True)\nsys.stdin.readline()"])`)
	in, stdout := startPiped(t, cmd)
	pid := uint32(cmd.Process.Pid)
	if err := tr.AddTarget(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(in)
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "grown\n" {
		t.Fatalf("the workload said %q, %v; want grown", line, err)
	}
	var target memdiagTarget
	if err := tr.objs.Targets.Lookup(&pid, &target); err != nil {
		t.Fatal(err)
	}
	if target.Gen == 0 {
		t.Fatal("the exec did not bump the target's gen")
	}
	var (
		id uint64
		st memdiagMmState
		n  int
	)
	it := tr.objs.MmStates.Iterate()
	for it.Next(&id, &st) {
		if st.Tgid != pid || st.Total <= 0 {
			continue // the mm the exec left, torn down to nothing
		}
		n++
		if st.Gen != target.Gen {
			t.Errorf("the new mm's state has gen %d, the process %d", st.Gen, target.Gen)
		}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("%d live mm states of the process after its exec, want 1", n)
	}
}
