//go:build privileged

package tracer

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
)

// TestRSSMatchesPageTablesAcrossCPUs: the kernel's RSS counters are per-CPU
// (a shared count and a part per CPU), and the program reads only the
// changing CPU's part on machines of up to PART_CPUS CPUs, every part
// beyond. Either way what it charges must add up to the process's resident
// memory exactly — here four threads that hop between the CPUs (so changes
// and their tracepoints meet migrations and folds) map, touch and unmap
// 1 MiB blocks, then rest: the process's total must equal its page tables'
// count (smaps_rollup), to the byte.
func TestRSSMatchesPageTablesAcrossCPUs(t *testing.T) {
	real, err := possibleCPUs()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cpus int
	}{
		{"own CPU's part", real},
		{"every part (more CPUs than PART_CPUS)", 65},
	} {
		t.Run(tc.name, func(t *testing.T) {
			possibleCPUs = func() (int, error) { return tc.cpus, nil }
			defer func() { possibleCPUs = ebpf.PossibleCPU }()
			rssMatchesPageTables(t)
		})
	}
}

func rssMatchesPageTables(t *testing.T) {
	tr := openDrained(t)
	python, err := exec.LookPath("/usr/bin/python3")
	if err != nil {
		t.Skipf("needs /usr/bin/python3: %v", err)
	}
	cmd := exec.Command(python, "-c", `
import os, sys, threading
sys.stdin.readline()
cpus = sorted(os.sched_getaffinity(0))
def work(k):
    keep = []
    for i in range(300):
        os.sched_setaffinity(0, {cpus[(i + k) % len(cpus)]})
        b = b'x' * (1 << 20)   # mapped and touched
        if i % 7 == 0:
            keep.append(b)     # some stay
        del b                  # the rest unmapped
    held.append(keep)
held = []
ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
for th in ts: th.start()
for th in ts: th.join()
print('rest', flush=True)
sys.stdin.readline()`)
	in, stdout := startPiped(t, cmd)
	out := bufio.NewReader(stdout)
	pid := uint32(cmd.Process.Pid)
	if err := tr.AddTarget(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(in)
	if line, err := out.ReadString('\n'); err != nil || line != "rest\n" {
		t.Fatalf("the workload said %q, %v; want rest", line, err)
	}
	// The process now waits on its stdin: nothing of its memory moves.
	snap, err := tr.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var got int64 = -1
	for _, p := range snap.Processes {
		if p.PID == pid {
			got = p.Current
		}
	}
	want := smapsRSS(t, int(pid))
	if got != want {
		t.Errorf("memdiag's resident total = %d bytes, the page tables' = %d (off by %d)", got, want, got-want)
	}
}

// smapsRSS reads the Rss line of /proc/PID/smaps_rollup: the page tables'
// count (the status file's VmRSS leaves out the counters' per-CPU parts).
func smapsRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Rss:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no Rss line in smaps_rollup of %d", pid)
	return 0
}
