//go:build privileged

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/memdiag/memdiag/report"

	"github.com/memdiag/memdiag/internal/proctest"
)

// Most tests here call t.Parallel (make test runs them -parallel 3): each
// memdiag spends ~2.7 s of CPU in the kernel's verifier at attach and ~2 s
// waiting to detach, so three at a time keep two cores busy. Serial, run
// first: the container, fleet and DaemonSet tests (their fake containers
// are cgroups under the host's system.slice, which fleet mode scans; run
// in parallel, TestContainer once saw its late process with no parent),
// and TestAttachAccountsKnownSizes (it asserts that no event was lost with
// the default ring; the tests that count the ops of a loaded service take
// bigRing for that).

// bigRing is the --ringbuf-size (4 MiB, the accuracy harness's) of the
// tests that count every op of a loaded service: the tests run in
// parallel on two shared cores, where memdiag's reader can be starved long
// enough for the default 256 KiB ring to fill (whole batches of ops lost
// in one run). The ring's overflow has its own test (TestRingbufOverflow).
const bigRing = "4194304"

// Built once by TestMain.
var (
	memdiagBin string
	memworkBin string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "memdiag-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755) // the not-root test runs memdiag as nobody
	memdiagBin = filepath.Join(dir, "memdiag")
	memworkBin = filepath.Join(dir, "memwork")
	build := func(name string, args ...string) {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s %v: %v\n%s", name, args, err, out)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	build("env", "CGO_ENABLED=0", "go", "build", "-tags", "urfave_cli_no_docs", "-o", memdiagBin, ".") // as make build
	// Frame pointers: dumps' profiles walk user stacks with them.
	build("gcc", "-O2", "-fno-omit-frame-pointer", "-fno-inline", "-Wall", "-pthread", "-o", memworkBin, "../../testdata/workload/memwork.c")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: run `sudo make test`")
	}
}

// status is one answer line of memwork: its own /proc/self/status values.
type status struct {
	RSS, Anon, File, Shmem, HWM int64
}

// workload is a running memwork.
type workload struct {
	t   *testing.T
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
	// outFile is the pipe out reads, for its read deadline.
	outFile io.Reader
	pid     int
	first   status
}

func parseStatus(t *testing.T, line string) status {
	t.Helper()
	var st status
	for _, f := range strings.Fields(line)[2:] {
		k, v, _ := strings.Cut(f, "=")
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("bad status line %q", line)
		}
		switch k {
		case "rss":
			st.RSS = n
		case "anon":
			st.Anon = n
		case "file":
			st.File = n
		case "shmem":
			st.Shmem = n
		case "hwm":
			st.HWM = n
		}
	}
	return st
}

// newWorkload wires memwork's stdin and stdout to the test; start is
// called by the caller (directly, or through memdiag run).
func newWorkload(t *testing.T, cmd *exec.Cmd) *workload {
	t.Helper()
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	return &workload{t: t, cmd: cmd, in: in, out: bufio.NewScanner(out), outFile: out}
}

// pipeDeadline bounds every read of a child's output pipe: a child that
// hangs fails the test instead of blocking it.
const pipeDeadline = 2 * time.Minute

// noDeadline clears the read deadline readWithin set.
func noDeadline(r io.Reader) {
	if f, ok := r.(interface{ SetReadDeadline(time.Time) error }); ok {
		f.SetReadDeadline(time.Time{})
	}
}

// readWithin sets a read deadline on r when it is a pipe (*os.File from
// exec.Cmd), so the next read of it returns an error instead of blocking
// past d.
func readWithin(t *testing.T, r io.Reader, d time.Duration) {
	t.Helper()
	if f, ok := r.(interface{ SetReadDeadline(time.Time) error }); ok {
		if err := f.SetReadDeadline(time.Now().Add(d)); err != nil {
			t.Fatalf("setting a read deadline: %v", err)
		}
	}
}

// ready reads memwork's "ready <pid>" line.
func (w *workload) ready() {
	w.t.Helper()
	line := w.line()
	if _, err := fmt.Sscanf(line, "ready %d", &w.pid); err != nil {
		w.t.Fatalf("want a ready line, got %q", line)
	}
}

func (w *workload) line() string {
	w.t.Helper()
	readWithin(w.t, w.outFile, pipeDeadline)
	if !w.out.Scan() {
		w.t.Fatalf("workload ended early or did not answer within %s: %v", pipeDeadline, w.out.Err())
	}
	return w.out.Text()
}

// do sends one command and returns the status after it.
func (w *workload) do(cmd string) status {
	w.t.Helper()
	if _, err := fmt.Fprintln(w.in, cmd); err != nil {
		w.t.Fatalf("sending %q: %v", cmd, err)
	}
	line := w.line()
	if !strings.HasPrefix(line, "ok ") {
		w.t.Fatalf("%q: %s", cmd, line)
	}
	return parseStatus(w.t, line)
}

// startWorkload starts memwork directly and waits for it to be ready.
func startWorkload(t *testing.T) *workload {
	t.Helper()
	w := newWorkload(t, exec.Command(memworkBin))
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		w.cmd.Process.Kill()
		w.cmd.Wait()
	})
	w.ready()
	w.first = w.do("status")
	return w
}

// tracerRun is a memdiag process under test.
type tracerRun struct {
	cmd     *exec.Cmd
	dir     string
	report  string
	log     string
	stderr  strings.Builder
	done    <-chan struct{}
	waitErr error
}

// startMemdiag starts memdiag with args plus --ready-file, --report-json
// and --log in a fresh directory, and waits until its probes are attached.
// stdin, when not nil, becomes memdiag's (and so `run`'s command's) stdin.
func startMemdiag(t *testing.T, setup func(*exec.Cmd), args ...string) *tracerRun {
	t.Helper()
	dir := t.TempDir()
	r := &tracerRun{dir: dir, report: filepath.Join(dir, "report.json"), log: filepath.Join(dir, "memdiag.log")}
	ready := filepath.Join(dir, "ready")
	full := []string{args[0], "--ready-file", ready, "--report-json", r.report, "--log", r.log}
	// Dumps (a 2 GB threshold is the default) and SIGUSR1 reports go to
	// the test's directory too, never into the source tree.
	for flag, sub := range map[string]string{"--dumps-dir": "dumps", "--reports-dir": "reports"} {
		if !slices.Contains(args, flag) {
			full = append(full, flag, filepath.Join(dir, sub))
		}
	}
	if args[0] == "attach" && !slices.Contains(args, "--heap-sampling") {
		// These tests check the tracer, ops, mappings and dumps: the
		// runtime sampler (which opens a Node target's inspector) is
		// tested by the accuracy corpus (package accuracy).
		full = append(full, "--heap-sampling", "off")
	}
	full = append(full, args[1:]...)
	r.cmd = exec.Command(memdiagBin, full...)
	r.cmd.Stderr = &r.stderr
	if setup != nil {
		setup(r.cmd)
	}
	r.done = proctest.Start(t, r.cmd, &r.waitErr)
	if err := proctest.WaitFile(ready, proctest.AttachDeadline, r.done); err != nil {
		t.Fatalf("%v; memdiag stderr: %s", err, r.stderr.String())
	}
	return r
}

// wait waits for memdiag to exit and returns its exit code.
func (r *tracerRun) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("memdiag did not exit; stderr: %s", r.stderr.String())
	}
	if r.waitErr == nil {
		return 0
	}
	if ee, ok := r.waitErr.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	t.Fatal(r.waitErr)
	return -1
}

// readReport parses the JSON report.
func (r *tracerRun) readReport(t *testing.T) *report.Report {
	t.Helper()
	data, err := os.ReadFile(r.report)
	if err != nil {
		log, _ := os.ReadFile(r.log)
		t.Fatalf("no report: %v\nstderr: %s\nlog: %s", err, r.stderr.String(), log)
	}
	var rep report.Report
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatalf("report does not parse: %v", err)
	}
	return &rep
}

// within fails unless got is within frac of want (relative to scale).
func within(t *testing.T, what string, got, want int64, frac float64, scale int64) {
	t.Helper()
	d := got - want
	if d < 0 {
		d = -d
	}
	if float64(d) > frac*float64(scale) {
		t.Errorf("%s = %d, want %d within %.1f%% of %d (off by %d)", what, got, want, frac*100, scale, d)
	}
}

// bucket finds a bucket by name and pid.
func bucket(rep *report.Report, name string, pid uint32) (report.BucketJSON, bool) {
	for _, b := range rep.Buckets {
		if b.Name == name && b.PID == pid {
			return b, true
		}
	}
	return report.BucketJSON{}, false
}
