//go:build privileged

package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/memdiag/memdiag/report"
)

const repoRoot = "../.."

// freePort returns a loopback port nothing listens on.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// service is a server process under test.
type service struct {
	cmd  *exec.Cmd
	pid  int
	port int
	// ports: a "listening PID PORT..." line's ports (the services of the
	// protocol tests say which ports they listen on).
	ports []int
}

// startService starts argv with env, waits for its "listening" line on
// stdout, and stops it at the end of the test.
func startService(t *testing.T, env []string, argv ...string) *service {
	t.Helper()
	if _, err := exec.LookPath(argv[0]); err != nil {
		t.Skipf("%s is needed for this test (.ci/run installs it): %v", argv[0], err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	readWithin(t, out, pipeDeadline)
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "listening") {
			noDeadline(out) // the rest is drained
			go io.Copy(io.Discard, out)
			s := &service{cmd: cmd, pid: cmd.Process.Pid}
			if f := strings.Fields(sc.Text()); len(f) >= 3 && f[0] == "listening" {
				for _, p := range f[2:] {
					n, err := strconv.Atoi(p)
					if err != nil {
						t.Fatalf("bad listening line %q", sc.Text())
					}
					s.ports = append(s.ports, n)
				}
			}
			return s
		}
	}
	t.Fatalf("%v exited before listening (or did not listen within %s): %v", argv, pipeDeadline, sc.Err())
	return nil
}

// client is a keep-alive HTTP client with bounded connections.
func client(conns int) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns,
			DisableCompression: true,
		},
	}
}

// get fetches url and returns the body.
func get(t *testing.T, c *http.Client, method, url string, body io.Reader) []byte {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode >= 300 {
		t.Fatalf("%s %s: %d %v", method, url, resp.StatusCode, err)
	}
	return data
}

// getJSON fetches url into v.
func getJSON(t *testing.T, c *http.Client, url string, v any) {
	t.Helper()
	if err := json.Unmarshal(get(t, c, "GET", url, nil), v); err != nil {
		t.Fatal(err)
	}
}

// category finds a category of the report by name.
func category(rep *report.Report, name string) (report.CategoryJSON, bool) {
	for _, c := range rep.Categories {
		if c.Name == name {
			return c, true
		}
	}
	return report.CategoryJSON{}, false
}

func deref(s *string) string {
	if s == nil {
		return "<none>"
	}
	return *s
}

// opsWithin fails unless got is within 2% (at least one op: a boundary op)
// of want.
func opsWithin(t *testing.T, what string, got, want int) {
	t.Helper()
	tol := max(1, want*2/100)
	if d := got - want; d > tol || -d > tol {
		t.Errorf("%s: %d ops, want %d ± %d", what, got, want, tol)
	}
}

type serviceStats struct {
	Records, Voice, Alfred, Graphql, Media, Cycles int
}

type peerStats struct{ Changes, Acks int }

// TestReferenceService runs the reference service under load with
// memdiag attached by pid and the example config: the sync cycle is the
// culprit, /api/records grows next to nothing, every category has its op
// count, and the categories explain all the growth.
func TestReferenceService(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	dir := filepath.Join(repoRoot, "examples", "leaky-service")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "express")); err != nil {
		t.Fatalf("run `npm ci` in %s first (.ci/run does): %v", dir, err)
	}
	port, peerPort := freePort(t), freePort(t)
	// The example config names the peer by port 8765; the peer gets a
	// kernel-picked port (8765 may be taken on a shared machine) and the
	// config, copied, names that one.
	example, err := os.ReadFile(filepath.Join(repoRoot, "examples", "classic-categories.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(example, []byte("outbound: { port: 8765 }")) {
		t.Fatal("examples/classic-categories.yaml no longer names the peer by port 8765")
	}
	rules := filepath.Join(t.TempDir(), "classic-categories.yaml")
	if err := os.WriteFile(rules, bytes.Replace(example, []byte("port: 8765"), []byte(fmt.Sprintf("port: %d", peerPort)), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	peerEnv := fmt.Sprintf("PEER_PORT=%d", peerPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d/stats", peerPort)
	startService(t, []string{peerEnv}, "node", filepath.Join(dir, "peer.js"))
	// A cycle is a burst of calls with gaps under the config's 1 s
	// cycle_gap: a cycle every 2.5 s keeps the gap between cycles over it
	// even when a loaded machine stretches a cycle (32 MiB written between
	// its two calls) to 1.5 s. At 1.2 s, two cycles merged into one on a
	// machine at load average 15 (6 cycles counted for 8).
	svc := startService(t, []string{
		fmt.Sprintf("PORT=%d", port), peerEnv,
		"SYNC_INTERVAL_MS=2500", "SYNC_RETAIN_BYTES=33554432", "VOICE_RETAIN_BYTES=2048",
	}, "node", filepath.Join(dir, "server.js"))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	c := client(16)
	load := func(rounds int) {
		var wg sync.WaitGroup
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := 0; i < rounds; i++ {
					get(t, c, "GET", fmt.Sprintf("%s/api/records?limit=%d", base, 20+i%100), nil)
					get(t, c, "GET", fmt.Sprintf("%s/api/voice/%d", base, w*1000+i), nil)
					get(t, c, "GET", base+"/api/alfred/ask", nil)
					get(t, c, "POST", base+"/graphql", strings.NewReader(`{"query":"{ records { id } }"}`))
					get(t, c, "GET", base+"/media/logo.png", nil)
				}
			}(w)
		}
		wg.Wait()
	}
	load(300) // warm up: the V8 heap and malloc arenas reach their working size

	recording := filepath.Join(t.TempDir(), "trace.mdrec")
	// A 4 MiB ring (bigRing): eight connections make
	// ~4000 ops a second, and make test runs packages in parallel on two
	// cores, where memdiag's reader can be starved long enough for the
	// default 256 KiB ring to fill (191 events lost in one run: ops
	// counted as unknown). The ring's overflow has its own test
	// (TestRingbufOverflow); this one checks attribution.
	r := startMemdiag(t, nil, "attach", "--pid", fmt.Sprint(svc.pid), "--interval", "1h", "--record", recording,
		"--config", rules, "--ringbuf-size", bigRing)
	pc := client(1)
	var s0, s1 serviceStats
	var p0, p1 peerStats
	getJSON(t, pc, peerURL, &p0)
	getJSON(t, c, base+"/stats", &s0)
	// Load until the peer has served 8 more cycles (bounded).
	deadline := time.Now().Add(90 * time.Second)
	for {
		load(20)
		getJSON(t, pc, peerURL, &p1)
		if p1.Changes-p0.Changes >= 8 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the service made only %d sync cycles", p1.Changes-p0.Changes)
		}
	}
	getJSON(t, c, base+"/stats", &s1)
	getJSON(t, pc, peerURL, &p1)
	c.CloseIdleConnections() // ends the last ops on their sockets
	r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.wait(t); code != 0 {
		t.Fatalf("memdiag exit %d: %s", code, r.stderr.String())
	}
	rep := r.readReport(t)
	for _, c := range rep.Categories {
		t.Logf("category %s (%s): %d ops, %d bytes", c.Name, c.Kind, c.Ops, c.RSSBytes)
	}
	t.Logf("growth %d; service %+v -> %+v; peer %+v -> %+v", rep.Growth.RSS, s0, s1, p0, p1)

	if rep.Culprit == nil || *rep.Culprit != "gun_sync" || rep.CulpritShare < 0.8 {
		t.Errorf("culprit = %s with %.0f%% of operation growth, want gun_sync with at least 80%%", deref(rep.Culprit), rep.CulpritShare*100)
	}
	if rec, _ := category(rep, "api_records"); float64(rec.RSSBytes) >= 0.05*float64(rep.Growth.RSS) {
		t.Errorf("api_records grew %d of %d bytes (>= 5%%)", rec.RSSBytes, rep.Growth.RSS)
	}
	for name, want := range map[string]int{
		"api_records":   s1.Records - s0.Records,
		"api_voice":     s1.Voice - s0.Voice,
		"api_alfred":    s1.Alfred - s0.Alfred,
		"graphql_query": s1.Graphql - s0.Graphql,
		"static_media":  s1.Media - s0.Media,
		// a cycle = GET /sync/changes + POST /sync/ack, gaps < 1s
		"gun_sync": p1.Changes - p0.Changes,
	} {
		cat, ok := category(rep, name)
		if !ok {
			t.Errorf("no category %s in the report", name)
			continue
		}
		opsWithin(t, name, cat.Ops, want)
	}
	if g, _ := category(rep, "gun_sync"); g.Kind != "outbound" || len(g.TopOps) == 0 || !strings.Contains(g.TopOps[0].Name, "GET /sync/changes") {
		t.Errorf("gun_sync = %+v", g)
	}
	// Conservation: categories (ops, idle, background, kernel…) sum to the growth.
	conserved(t, rep)
	if rep.LostEvents != 0 {
		t.Errorf("lost %d events", rep.LostEvents)
	}
	log, _ := os.ReadFile(r.log)
	if !strings.Contains(string(log), "PRIMARY CULPRIT") || !strings.Contains(string(log), "gun_sync: ") {
		t.Errorf("the log lacks the culprit summary:\n%s", log)
	}

	// The recording rebuilds the same report, without root.
	live, _ := os.ReadFile(r.report)
	copyDir, err := os.MkdirTemp("", "memdiag-replay-") // t.TempDir's parent is root's, 0700
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(copyDir) })
	os.Chmod(copyDir, 0o755)
	copied := filepath.Join(copyDir, "trace.mdrec")
	data, err := os.ReadFile(recording)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(copied, data, 0o644)
	replayed, err := runAs(t, &syscall.Credential{Uid: 65534, Gid: 65534}, "report", "--format", "json", copied)
	if err != nil {
		t.Fatalf("memdiag report as nobody: %v", err)
	}
	if string(replayed) != string(live) {
		ll, rl := strings.Split(string(live), "\n"), strings.Split(string(replayed), "\n")
		for i := 0; i < len(ll) && i < len(rl); i++ {
			if ll[i] != rl[i] {
				t.Errorf("memdiag report of the recording differs from the live report at line %d:\nlive:   %s\nreplay: %s", i+1, ll[i], rl[i])
				break
			}
		}
		if len(ll) != len(rl) {
			t.Errorf("live report has %d lines, the replay %d", len(ll), len(rl))
		}
	}
}

// runAs runs memdiag as cred and returns its stdout.
func runAs(t *testing.T, cred *syscall.Credential, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(memdiagBin, args...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%v: %s", err, stderr.String())
	}
	return out, nil
}

// TestConcurrentConnections: 64 keep-alive connections interleave two
// routes that keep different sizes; each route is charged its own.
func TestConcurrentConnections(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	port := freePort(t)
	// Both above glibc's mmap threshold (128 KiB): each is fresh memory,
	// not a chunk a freed request left in the heap.
	const small, big = 160 << 10, 480 << 10
	svc := startService(t, []string{fmt.Sprintf("PORT=%d", port), fmt.Sprintf("SMALL=%d", small), fmt.Sprintf("BIG=%d", big)},
		"node", filepath.Join(repoRoot, "testdata", "services", "concurrency.js"))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	const conns, perConn = 64, 20
	c := client(conns)
	run := func(n int) {
		var wg sync.WaitGroup
		for w := 0; w < conns; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := 0; i < n; i++ {
					route := "/small"
					if (i+w)%2 == 1 {
						route = "/big"
					}
					get(t, c, "GET", base+route, nil)
				}
			}(w)
		}
		wg.Wait()
	}
	run(4) // warm up, and open all 64 connections
	r := startMemdiag(t, nil, "attach", "--pid", fmt.Sprint(svc.pid), "--interval", "1h", "--ringbuf-size", bigRing)
	run(perConn)
	c.CloseIdleConnections()
	r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.wait(t); code != 0 {
		t.Fatalf("memdiag exit %d: %s", code, r.stderr.String())
	}
	rep := r.readReport(t)
	for _, c := range rep.Categories {
		t.Logf("category %s (%s): %d ops, %d bytes", c.Name, c.Kind, c.Ops, c.RSSBytes)
	}
	n := int64(conns * perConn / 2)
	for route, size := range map[string]int64{"GET /small": small, "GET /big": big} {
		cat, ok := category(rep, route)
		if !ok {
			t.Fatalf("no category %q in %+v", route, rep.Categories)
		}
		opsWithin(t, route, cat.Ops, int(n))
		within(t, route+" resident growth", cat.RSSBytes, n*size, 0.10, n*size)
	}
}

// TestNonNodeService: a Python http.server with a leaking route is named
// and charged through the syscall path alone.
func TestNonNodeService(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	port := freePort(t)
	const leak = 1 << 20
	svc := startService(t, []string{fmt.Sprintf("PORT=%d", port), fmt.Sprintf("LEAK=%d", leak)},
		"python3", filepath.Join(repoRoot, "testdata", "services", "leaky.py"))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	c := client(1)
	get(t, c, "GET", base+"/ok", nil)
	r := startMemdiag(t, nil, "attach", "--pid", fmt.Sprint(svc.pid), "--interval", "1h", "--ringbuf-size", bigRing)
	const n = 40
	for i := 0; i < n; i++ {
		get(t, c, "GET", fmt.Sprintf("%s/leak/%d?token=secret%d", base, i, i), nil)
		get(t, c, "GET", base+"/ok", nil)
	}
	c.CloseIdleConnections()
	r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.wait(t); code != 0 {
		t.Fatalf("memdiag exit %d: %s", code, r.stderr.String())
	}
	rep := r.readReport(t)
	leakCat, ok := category(rep, "GET /leak/:id")
	if !ok {
		t.Fatalf("no category GET /leak/:id in %+v", rep.Categories)
	}
	opsWithin(t, "GET /leak/:id", leakCat.Ops, n)
	within(t, "leak route growth", leakCat.RSSBytes, n*leak, 0.10, n*leak)
	if okCat, _ := category(rep, "GET /ok"); okCat.Ops != n || okCat.RSSBytes > n*leak/20 {
		t.Errorf("GET /ok = %+v, want %d ops and little growth", okCat, n)
	}
	data, _ := os.ReadFile(r.report)
	logData, _ := os.ReadFile(r.log)
	for _, out := range [][]byte{data, logData} {
		if strings.Contains(string(out), "secret") {
			t.Errorf("a query value reached an output")
		}
	}
	if len(leakCat.TopOps) == 0 || leakCat.TopOps[0].Detail != "?token=…" {
		t.Errorf("top op detail = %+v, want the query key with its value redacted", leakCat.TopOps)
	}
}

// TestHTTPS: the reference service over HTTPS names its routes with --tls
// (uprobe on llhttp_execute), and without it says once that --tls would.
func TestHTTPS(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	dir := filepath.Join(repoRoot, "examples", "leaky-service")
	tmp := t.TempDir()
	cert, key := filepath.Join(tmp, "cert.pem"), filepath.Join(tmp, "key.pem")
	if out, err := exec.Command("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
		"-subj", "/CN=127.0.0.1", "-keyout", key, "-out", cert).CombinedOutput(); err != nil {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	port := freePort(t)
	svc := startService(t, []string{fmt.Sprintf("PORT=%d", port), "SYNC_INTERVAL_MS=0", "HTTPS=1",
		"TLS_CERT=" + cert, "TLS_KEY=" + key}, "node", filepath.Join(dir, "server.js"))
	base := fmt.Sprintf("https://127.0.0.1:%d", port)
	c := client(4)
	c.Transport.(*http.Transport).TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	const n = 50
	send := func() {
		for i := 0; i < n; i++ {
			get(t, c, "GET", base+"/api/records", nil)
			get(t, c, "GET", fmt.Sprintf("%s/api/voice/%d", base, i), nil)
		}
	}
	send()

	t.Run("with --tls", func(t *testing.T) {
		r := startMemdiag(t, nil, "attach", "--pid", fmt.Sprint(svc.pid), "--interval", "1h", "--tls",
			"--config", filepath.Join(repoRoot, "examples", "classic-categories.yaml"))
		send() // on connections opened before attach
		c.CloseIdleConnections()
		send() // on new ones
		c.CloseIdleConnections()
		r.cmd.Process.Signal(syscall.SIGTERM)
		if code := r.wait(t); code != 0 {
			t.Fatalf("memdiag exit %d: %s", code, r.stderr.String())
		}
		rep := r.readReport(t)
		for _, name := range []string{"api_records", "api_voice"} {
			cat, ok := category(rep, name)
			if !ok {
				t.Fatalf("no %s category over HTTPS: %+v", name, rep.Categories)
			}
			opsWithin(t, name, cat.Ops, 2*n)
		}
	})
	t.Run("without --tls", func(t *testing.T) {
		r := startMemdiag(t, nil, "attach", "--pid", fmt.Sprint(svc.pid), "--interval", "1h")
		c.CloseIdleConnections()
		send() // new connections: memdiag sees their handshakes
		c.CloseIdleConnections()
		r.cmd.Process.Signal(syscall.SIGTERM)
		if code := r.wait(t); code != 0 {
			t.Fatalf("memdiag exit %d: %s", code, r.stderr.String())
		}
		log, _ := os.ReadFile(r.log)
		if n := strings.Count(string(log), "[TLS]"); n != 1 || !strings.Contains(string(log), "--tls") {
			t.Errorf("want one [TLS] line naming --tls, got %d:\n%s", n, log)
		}
	})
}
