//go:build privileged

package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestTargetKilled: the target killed mid-trace ends tracing with a final
// report and exit 0.
func TestTargetKilled(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	w := startWorkload(t)
	r := startMemdiag(t, nil, "attach", "--pid", fmt.Sprint(w.pid), "--interval", "1h")
	w.do("anon 16M")
	w.cmd.Process.Kill()
	if code := r.wait(t); code != 0 {
		t.Fatalf("exit %d: %s", code, r.stderr.String())
	}
	rep := r.readReport(t)
	if !rep.Target.Exited || rep.Target.ExitCode == nil || *rep.Target.ExitCode&0x7f != int(syscall.SIGKILL) {
		t.Errorf("target = %+v, want exited by SIGKILL", rep.Target)
	}
	within(t, "growth before the kill", rep.Growth.Anon, 16*mib, 0.02, 16*mib)
}

// TestTargetExecs: a target that execs another image is followed into it.
func TestTargetExecs(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	w := startWorkload(t)
	r := startMemdiag(t, nil, "attach", "--pid", fmt.Sprint(w.pid), "--interval", "1h")
	w.do("anon 16M")
	fmt.Fprintln(w.in, "exec")
	w.ready() // the new image
	end := w.do("anon 24M")
	r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.wait(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	rep := r.readReport(t)
	// The old image's memory went away at the exec; the new one counts from zero.
	within(t, "final RSS after the exec", rep.Final.RSS, end.RSS, 0.02, end.RSS)
	th, _ := bucket(rep, "thread:memwork", uint32(w.pid))
	if th.Anon < 24*mib {
		t.Errorf("the new image's 24 MiB are not charged: %+v", th)
	}
}

// loadUntil sends requests on conns connections until stop closes, and
// counts failures.
func loadUntil(t *testing.T, url string, conns int, stop <-chan struct{}) (ok, failed *atomic.Int64, wait func()) {
	ok, failed = &atomic.Int64{}, &atomic.Int64{}
	c := client(conns)
	var wg sync.WaitGroup
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Get(url)
				if err != nil {
					failed.Add(1)
					continue
				}
				resp.Body.Close()
				ok.Add(1)
			}
		}()
	}
	return ok, failed, wg.Wait
}

// TestSignalsUnderLoad: memdiag SIGKILLed under load leaves the service
// serving and no BPF program behind; SIGTERM under load detaches, drains
// and writes a complete report.
func TestSignalsUnderLoad(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	port := freePort(t)
	svc := startService(t, []string{fmt.Sprintf("PORT=%d", port), "SYNC_INTERVAL_MS=0"}, "node", filepath.Join(repoRoot, "examples", "leaky-service", "server.js"))
	url := fmt.Sprintf("http://127.0.0.1:%d/api/records", port)
	stop := make(chan struct{})
	ok, failed, wait := loadUntil(t, url, 8, stop)
	defer func() { close(stop); wait() }()

	r := startMemdiag(t, nil, "attach", "--pid", fmt.Sprint(svc.pid), "--interval", "1h")
	ours := programsOf(t, r)
	awaitRequests(t, ok, 500, "with memdiag attached")
	r.cmd.Process.Kill()
	r.wait(t)
	awaitRequests(t, ok, 500, "after memdiag's SIGKILL")
	if n := failed.Load(); n != 0 {
		t.Errorf("%d requests failed around memdiag's SIGKILL", n)
	}
	assertProgramsGone(t, ours)

	r = startMemdiag(t, nil, "attach", "--pid", fmt.Sprint(svc.pid), "--interval", "1h", "--config", filepath.Join(repoRoot, "examples", "classic-categories.yaml"))
	awaitRequests(t, ok, 500, "with memdiag attached again")
	r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.wait(t); code != 0 {
		t.Fatalf("exit %d after SIGTERM under load", code)
	}
	rep := r.readReport(t)
	rec, found := category(rep, "api_records")
	if !found || rec.Ops < 500 {
		t.Errorf("api_records = %+v, want at least the 500 requests seen", rec)
	}
	conserved(t, rep)
	if n := failed.Load(); n != 0 {
		t.Errorf("%d requests failed", n)
	}
}

// waitForLoad gives the load goroutines a moment while a test polls
// their counters for the progress it waits for (always under a deadline).
func waitForLoad() { time.Sleep(time.Millisecond) }

// loadDeadline bounds every wait for load to make progress.
const loadDeadline = 60 * time.Second

// awaitRequests waits until n more requests than now succeeded, failing the
// test when they do not within loadDeadline.
func awaitRequests(t *testing.T, ok *atomic.Int64, n int64, what string) {
	t.Helper()
	want := ok.Load() + n
	deadline := time.Now().Add(loadDeadline)
	for ok.Load() < want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d of %d requests in %s", what, ok.Load()-(want-n), n, loadDeadline)
		}
		waitForLoad()
	}
}

// TestRingbufOverflow: a tiny ring buffer overflows under load; lost
// events are counted and logged, and the bytes are still conserved.
func TestRingbufOverflow(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	port := freePort(t)
	svc := startService(t, []string{fmt.Sprintf("PORT=%d", port), "SYNC_INTERVAL_MS=0"}, "node", filepath.Join(repoRoot, "examples", "leaky-service", "server.js"))
	url := fmt.Sprintf("http://127.0.0.1:%d/api/voice/1", port)
	r := startMemdiag(t, nil, "attach", "--pid", fmt.Sprint(svc.pid), "--interval", "1h", "--ringbuf-size", "4096")
	stop := make(chan struct{})
	ok, _, wait := loadUntil(t, url, 32, stop)
	var lost bool
	deadline := time.Now().Add(loadDeadline)
	for !lost && time.Now().Before(deadline) {
		data, _ := os.ReadFile(r.log)
		lost = strings.Contains(string(data), "[LOST]")
		waitForLoad()
	}
	close(stop)
	wait()
	if !lost {
		t.Fatalf("no [LOST] line after %d requests with a 4 KiB ring buffer", ok.Load())
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	r.wait(t)
	rep := r.readReport(t)
	if rep.LostEvents == 0 {
		t.Error("lost_events is 0")
	}
	conserved(t, rep) // lost events lose no bytes
}

// TestManyConnections: 10,000 concurrent connections with small kernel
// tables: overflow is counted, nothing crashes, the service serves.
func TestManyConnections(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	// 10,000 connections need 10,000 fds on each side (and some spare).
	var lim syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	if lim.Max < 10500 {
		t.Skipf("the hard fd limit (%d) is below 10,500", lim.Max)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("raising the fd limit: %v", err)
	}
	port := freePort(t)
	svc := startService(t, []string{fmt.Sprintf("PORT=%d", port)}, "node", filepath.Join(repoRoot, "testdata", "services", "concurrency.js"))
	r := startMemdiag(t, nil, "attach", "--pid", fmt.Sprint(svc.pid), "--interval", "1h", "--max-buckets", "1024")
	const n = 10000
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	// One request on every connection, all open at once.
	for _, c := range conns {
		fmt.Fprintf(c, "GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
	}
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(60 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
			t.Fatalf("connection %d: %q, %v", i, line, err)
		}
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.wait(t); code != 0 {
		t.Fatalf("memdiag exit %d: %s", code, r.stderr.String())
	}
	rep := r.readReport(t)
	if rep.Health.BucketOverflow == 0 {
		t.Errorf("no bucket overflow counted with 10k ops and 1024 buckets: %+v", rep.Health)
	}
	log, _ := os.ReadFile(r.log)
	if !strings.Contains(string(log), "[HEALTH]") {
		t.Errorf("the log does not report the overflow")
	}
}

// TestHostileBytes: garbage, 64 KiB request lines and another protocol on
// a traced service's sockets: no crash, charged to "unknown" or to the
// (truncated) route, never misnamed.
func TestHostileBytes(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	port := freePort(t)
	svc := startService(t, []string{fmt.Sprintf("PORT=%d", port)}, "node", filepath.Join(repoRoot, "testdata", "services", "concurrency.js"))
	r := startMemdiag(t, nil, "attach", "--pid", fmt.Sprint(svc.pid), "--interval", "1h")
	send := func(payload []byte) {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(payload)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 4096)
		c.Read(buf) // node answers 400 or closes
	}
	garbage := make([]byte, 4096)
	for i := range garbage {
		garbage[i] = byte(i*7 + 3)
	}
	for i := 0; i < 5; i++ {
		send(garbage)
		send([]byte("\x00\x01SSH-2.0-OpenSSH_9.2\r\n"))
		send([]byte("GET /" + strings.Repeat("a", 64<<10) + " HTTP/1.1\r\nHost: x\r\n\r\n"))
	}
	c := client(1)
	get(t, c, "GET", fmt.Sprintf("http://127.0.0.1:%d/small", port), nil)
	r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.wait(t); code != 0 {
		t.Fatalf("memdiag exit %d: %s", code, r.stderr.String())
	}
	rep := r.readReport(t)
	unknown, ok := category(rep, "unknown")
	if !ok || unknown.Ops < 10 {
		t.Errorf("garbage and SSH bytes: unknown = %+v, want at least 10 ops", unknown)
	}
	for _, cat := range rep.Categories {
		if strings.ContainsAny(cat.Name, "\x00\x01") || len(cat.Name) > 200 {
			t.Errorf("a category is named from hostile bytes: %q", cat.Name)
		}
	}
	if _, ok := category(rep, "GET /small"); !ok {
		t.Error("the real request after the garbage is not named")
	}
}

// TestUnwritableLog: a log that cannot be written falls back to the
// console with one warning; nothing else changes.
func TestUnwritableLog(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	w := startWorkload(t)
	dir := t.TempDir()
	link := filepath.Join(dir, "log")
	victim := filepath.Join(dir, "victim")
	os.WriteFile(victim, []byte("untouched\n"), 0o644)
	os.Symlink(victim, link) // a planted symlink: never written through
	cmd := exec.Command(memdiagBin, "attach", "--pid", fmt.Sprint(w.pid), "--log", link, "--duration", "1s", "--report-json", filepath.Join(dir, "r.json"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if n := strings.Count(string(out), "warning: cannot write the log"); n != 1 {
		t.Errorf("want one warning, got %d:\n%s", n, out)
	}
	if !strings.Contains(string(out), "[INIT]") || !strings.Contains(string(out), "symlink") {
		t.Errorf("the log did not go to the console, or the warning does not say why:\n%s", out)
	}
	if data, _ := os.ReadFile(victim); string(data) != "untouched\n" {
		t.Errorf("memdiag wrote through the planted symlink: %q", data)
	}
}

// TestPlantedSymlinks: a symlink planted as the report, the recording or
// the dumps directory is refused; nothing is written through it.
func TestPlantedSymlinks(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	w := startWorkload(t)
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	os.WriteFile(victim, []byte("untouched\n"), 0o644)
	for _, flag := range []string{"--report-json", "--record", "--report-html"} {
		link := filepath.Join(dir, strings.TrimPrefix(flag, "--"))
		os.Symlink(victim, link)
		code, stderr := runOnce(t, nil, "attach", "--pid", fmt.Sprint(w.pid), flag, link, "--log", filepath.Join(dir, "log"))
		if code != 2 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "never overwrites") {
			t.Errorf("%s on a symlink: exit %d, %q", flag, code, stderr)
		}
	}
	dumps := filepath.Join(dir, "dumps")
	os.Symlink(dir, dumps)
	r := startMemdiag(t, nil, "attach", "--pid", fmt.Sprint(w.pid), "--interval", "1h", "--dump-at", "8MB", "--dumps-dir", dumps)
	w.do("anon 16M")
	log := waitLog(t, r.log, "[DUMP] refused", r.done)
	if !strings.Contains(log, "symlink") {
		t.Errorf("the refusal does not say why:\n%s", log)
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	r.wait(t)
	if data, _ := os.ReadFile(victim); string(data) != "untouched\n" {
		t.Errorf("memdiag wrote through a planted symlink: %q", data)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), "-8MB-") {
			t.Errorf("a dump was written through the symlinked dumps directory: %s", e.Name())
		}
	}
}

// soak turns on TestSoak (make soak).
var soak = flag.Bool("soak", false, "run TestSoak, the five-minute soak under load")

// TestSoak: five minutes at a high request rate; memdiag's own RSS stays
// flat (its windows and tables are really bounded). It proves its point
// only by running long, so `make test` leaves it out; `make soak` (root)
// runs it.
func TestSoak(t *testing.T) {
	if !*soak {
		t.Skip("the soak takes five minutes: run it with -soak (make soak)")
	}
	requireRoot(t)
	port := freePort(t)
	svc := startService(t, []string{fmt.Sprintf("PORT=%d", port), "SYNC_INTERVAL_MS=500", "SYNC_RETAIN_BYTES=0", "PEER_PORT=1"}, "node", filepath.Join(repoRoot, "examples", "leaky-service", "server.js"))
	r := startMemdiag(t, nil, "attach", "--pid", fmt.Sprint(svc.pid), "--interval", "10s", "--no-dumps")
	stop := make(chan struct{})
	ok, _, wait := loadUntil(t, fmt.Sprintf("http://127.0.0.1:%d/api/voice/7?x=1", port), 16, stop)
	rss := func() int64 {
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", r.cmd.Process.Pid))
		for _, line := range strings.Split(string(data), "\n") {
			if v, found := strings.CutPrefix(line, "VmRSS:"); found {
				var kb int64
				fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(v), " kB"), &kb)
				return kb << 10
			}
		}
		return 0
	}
	start := time.Now()
	var warm int64
	for time.Since(start) < 5*time.Minute {
		if warm == 0 && time.Since(start) > time.Minute {
			warm = rss() // after a minute: every window full
		}
		select {
		case <-r.done:
			t.Fatalf("memdiag exited during the soak: %s", r.stderr.String())
		case <-time.After(time.Second):
		}
	}
	end := rss()
	close(stop)
	wait()
	t.Logf("%d requests; memdiag RSS %d MiB after 1 min, %d MiB after 5 min", ok.Load(), warm>>20, end>>20)
	if end > warm+4<<20 {
		t.Errorf("memdiag's RSS grew from %d to %d bytes over four minutes of steady load", warm, end)
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.wait(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
}
