//go:build privileged

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

const mib = 1 << 20

// TestAttachAccountsKnownSizes attaches to a running workload that maps
// and touches known sizes in every way memdiag distinguishes, and checks
// memdiag's numbers against the sizes and against the workload's own
// /proc/self/status.
func TestAttachAccountsKnownSizes(t *testing.T) {
	requireRoot(t)
	w := startWorkload(t)
	r := startMemdiag(t, nil, "attach", "--pid", fmt.Sprint(w.pid), "--interval", "1h")
	base := w.do("status")
	w.do("anon 64M")
	w.do("heap 32M")
	w.do("thread 16M")
	w.do("fork 8M")
	w.do("shm 8M")
	w.do("file 16M " + filepath.Join(r.dir, "mapped-file"))
	w.do("anon 24M")
	end := w.do("dontneed") // gives back the 24M region
	fmt.Fprintln(w.in, "exit 0")
	if code := r.wait(t); code != 0 {
		t.Fatalf("memdiag exit %d: %s", code, r.stderr.String())
	}
	rep := r.readReport(t)

	if !rep.Target.Exited || rep.Target.PID != uint32(w.pid) {
		t.Errorf("target = %+v, want pid %d exited", rep.Target, w.pid)
	}
	// Totals against the workload's own view.
	within(t, "growth.rss_bytes", rep.Growth.RSS, end.RSS-base.RSS, 0.01, end.RSS)
	within(t, "growth.rss_anon_bytes", rep.Growth.Anon, end.Anon-base.Anon, 0.01, end.Anon)
	within(t, "growth.rss_file_bytes", rep.Growth.File, end.File-base.File, 0.01, end.RSS)
	within(t, "growth.rss_shmem_bytes", rep.Growth.Shmem, 8*mib, 0.01, 8*mib)
	within(t, "baseline.rss_bytes", rep.Baseline.RSS, base.RSS, 0.01, base.RSS)
	within(t, "final.rss_bytes", rep.Final.RSS, end.RSS, 0.01, end.RSS)
	within(t, "peak.rss_bytes", rep.Peak.RSS, end.HWM, 0.02, end.HWM)

	// Conservation: the buckets explain all of it.
	conserved(t, rep)

	// Known sizes, bucket by bucket.
	thr, ok := bucket(rep, "thread:memwork-thr", uint32(w.pid))
	if !ok {
		t.Fatalf("no thread:memwork-thr bucket in %+v", rep.Buckets)
	}
	within(t, "thread bucket anon", thr.Anon, 16*mib, 0.01, 16*mib)
	var child *uint32
	for _, p := range rep.Processes {
		if p.Parent == uint32(w.pid) {
			pid := p.PID
			child = &pid
		}
	}
	if child == nil {
		t.Fatalf("forked child missing from processes %+v", rep.Processes)
	}
	cb, ok := bucket(rep, "thread:memwork", *child)
	if !ok {
		t.Fatalf("no bucket for the child %d", *child)
	}
	within(t, "child's own anon", cb.Anon, 8*mib, 0.01, 8*mib)
	main, _ := bucket(rep, "thread:memwork", uint32(w.pid))
	// Main thread: 64M + 32M + 24M - 24M anon, 8M shmem, 16M file.
	within(t, "main thread anon", main.Anon, 96*mib, 0.01, 96*mib)
	within(t, "main thread file", main.File, 16*mib, 0.01, 16*mib)

	if want := uint64(64+32+16+8+8+16+24) * mib; rep.MappedBytes < want {
		t.Errorf("mapped_bytes = %d, want at least %d", rep.MappedBytes, want)
	}
	if rep.AdvisedFreeBytes < 24*mib {
		t.Errorf("advised_free_bytes = %d, want at least %d", rep.AdvisedFreeBytes, 24*mib)
	}
	// One fault per anonymous page written (file pages fault around, 16
	// at a time, so they are left out).
	if want := uint64(64+32+16+8+8+24) * mib / 4096; rep.Faults < want {
		t.Errorf("faults = %d, want at least %d (one per anonymous page written)", rep.Faults, want)
	}
	if rep.LostEvents != 0 {
		t.Errorf("lost_events = %d", rep.LostEvents)
	}
}

// TestRunMissesNothing starts the workload under `memdiag run`: growth
// counts from its exec, so it equals the workload's whole RSS, and memdiag
// exits with the workload's status.
func TestRunMissesNothing(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	var w *workload
	r := startMemdiag(t, func(c *exec.Cmd) { w = newWorkload(t, c) }, "run", "--interval", "1h", "--", memworkBin)
	w.ready()
	w.do("anon 32M")
	end := w.do("heap 16M")
	fmt.Fprintln(w.in, "exit 7")
	if code := r.wait(t); code != 7 {
		t.Fatalf("memdiag run exit = %d, want the command's 7; stderr: %s", code, r.stderr.String())
	}
	rep := r.readReport(t)
	if rep.Baseline.RSS != 0 {
		t.Errorf("baseline = %d, want 0 for run", rep.Baseline.RSS)
	}
	within(t, "growth.rss_bytes (everything since exec)", rep.Growth.RSS, end.RSS, 0.01, end.RSS)
	within(t, "growth.rss_file_bytes (the binary and libc)", rep.Growth.File, end.File, 0.01, end.RSS)
	within(t, "peak.rss_bytes", rep.Peak.RSS, end.HWM, 0.02, end.HWM)
	conserved(t, rep)
	if rep.Target.ExitCode == nil || *rep.Target.ExitCode>>8 != 7 {
		t.Errorf("target exit code = %v, want status 7", rep.Target.ExitCode)
	}
}

// TestSIGTERMDetachesDrainsReports: SIGTERM ends tracing with a complete
// report and exit 0, and the target keeps running.
func TestSIGTERMDetachesDrainsReports(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	w := startWorkload(t)
	r := startMemdiag(t, nil, "attach", "--pid", fmt.Sprint(w.pid), "--interval", "1h")
	ours := programsOf(t, r)
	w.do("anon 16M")
	r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.wait(t); code != 0 {
		t.Fatalf("exit %d after SIGTERM: %s", code, r.stderr.String())
	}
	rep := r.readReport(t)
	within(t, "growth.rss_anon_bytes", rep.Growth.Anon, 16*mib, 0.01, 16*mib)
	if rep.Target.Exited {
		t.Error("report says the target exited; it did not")
	}
	w.do("anon 1M") // still serving
	log, _ := os.ReadFile(r.log)
	for _, tag := range []string{"[INIT]", "[SUMMARY] Tracing ended (signal)"} {
		if !strings.Contains(string(log), tag) {
			t.Errorf("log lacks %s:\n%s", tag, log)
		}
	}
	assertProgramsGone(t, ours)
}

// TestSIGKILLLeavesNothing: memdiag killed outright leaves no BPF program
// or link behind, and the target runs on.
func TestSIGKILLLeavesNothing(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	w := startWorkload(t)
	r := startMemdiag(t, nil, "attach", "--pid", fmt.Sprint(w.pid))
	ours := programsOf(t, r)
	w.do("anon 4M")
	r.cmd.Process.Kill()
	r.wait(t)
	w.do("anon 4M")
	assertProgramsGone(t, ours)
}

// programsOf returns the ids of the BPF programs memdiag process r holds
// (its program and link fds, from /proc/PID/fdinfo): its own, never those
// of another memdiag running on the machine at the same time.
func programsOf(t *testing.T, r *tracerRun) map[ebpf.ProgramID]bool {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fdinfo", r.cmd.Process.Pid)
	fds, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	ours := map[ebpf.ProgramID]bool{}
	for _, fd := range fds {
		info, _ := os.ReadFile(filepath.Join(dir, fd.Name()))
		if m := regexp.MustCompile(`(?m)^prog_id:\s+(\d+)$`).FindSubmatch(info); m != nil {
			id, _ := strconv.ParseUint(string(m[1]), 10, 32)
			ours[ebpf.ProgramID(id)] = true
		}
	}
	if len(ours) == 0 {
		t.Fatal("memdiag holds no BPF program: the check after it exits would prove nothing")
	}
	return ours
}

// assertProgramsGone waits (bounded) for the kernel to free the given
// programs: their release after the last fd closes is asynchronous.
func assertProgramsGone(t *testing.T, ours map[ebpf.ProgramID]bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := 0
		for id := range ours {
			// An id is never reused while the kernel has ids left.
			if p, err := ebpf.NewProgramFromID(id); err == nil {
				p.Close()
				left++
			}
		}
		if left == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of memdiag's BPF programs are still loaded after it exited", left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestConcurrentFaults: threads of one process faulting at the same time
// on both CPUs: the kernel's counter deltas still telescope, so memdiag's
// growth matches the process's own /proc/self/status.
func TestConcurrentFaults(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	w := startWorkload(t)
	r := startMemdiag(t, nil, "attach", "--pid", fmt.Sprint(w.pid), "--interval", "1h")
	base := w.do("status")
	var end status
	for i := 0; i < 4; i++ {
		end = w.do("threads 64M 8") // 512 MiB a round, 8 threads at once
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.wait(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	rep := r.readReport(t)
	within(t, "growth under concurrent faults vs /proc", rep.Growth.RSS, end.RSS-base.RSS, 0.01, end.RSS-base.RSS)
	within(t, "anon growth vs /proc", rep.Growth.Anon, end.Anon-base.Anon, 0.01, end.Anon-base.Anon)
}
