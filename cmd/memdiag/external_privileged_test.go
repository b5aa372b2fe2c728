//go:build privileged

package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/memdiag/memdiag/report"
)

// externalScript is the Node service with routes that keep or drop known
// Buffer sizes and JS objects.
var externalScript = filepath.Join(repoRoot, "testdata", "services", "external.js")

type abStats struct {
	ArrayBuffers int64 `json:"arrayBuffers"`
}

// driveExternal sends n requests to each of the routes, route after route,
// then a full GC. The routes that keep Buffers go first: V8 frees the
// dropped ones on its own threads, and under load a release on another
// thread can be charged to the op the main thread runs (a known limit, in
// ACCURACY.md), which made /keep-small read up to 50% low when interleaved.
func driveExternal(t *testing.T, base string, n int) {
	c := client(1)
	for _, route := range []string{"/keep-big", "/keep-small", "/drop-big", "/objects"} {
		for i := 0; i < n; i++ {
			get(t, c, "GET", base+route, nil)
		}
	}
	get(t, c, "GET", base+"/gc", nil)
	get(t, c, "GET", base+"/gc", nil)
	c.CloseIdleConnections()
}

// TestExternalEstimated: the default mode (tracepoints only) splits
// growth into external (native-allocator mappings) and runtime.
func TestExternalEstimated(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	port := freePort(t)
	const big, small, n = 1 << 20, 192 << 10, 20
	// A fixed mmap threshold (glibc's tunable) keeps every Buffer of this
	// size in a mapping of its own, returned to the kernel when freed, as
	// glibc does before its dynamic threshold moves.
	svc := startService(t, []string{fmt.Sprintf("PORT=%d", port), fmt.Sprintf("BIG=%d", big), fmt.Sprintf("SMALL=%d", small),
		"MALLOC_MMAP_THRESHOLD_=131072"}, "node", "--expose-gc", externalScript)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	driveExternal(t, base, 3) // warm up
	r := startMemdiag(t, nil, "attach", "--pid", fmt.Sprint(svc.pid), "--interval", "1h")
	driveExternal(t, base, n)
	r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.wait(t); code != 0 {
		t.Fatalf("memdiag exit %d: %s", code, r.stderr.String())
	}
	rep := r.readReport(t)
	for _, c := range rep.Categories {
		t.Logf("%-16s ops=%d rss=%d external=%d retained=%d", c.Name, c.Ops, c.RSSBytes, c.ExternalBytes, c.RetainedMappingBytes)
	}
	if rep.External.Mode != "estimated" {
		t.Errorf("external.mode = %q", rep.External.Mode)
	}
	cat := func(name string) report.CategoryJSON {
		c, ok := category(rep, name)
		if !ok {
			t.Fatalf("no category %q", name)
		}
		return c
	}
	within(t, "GET /keep-big external", cat("GET /keep-big").ExternalBytes, n*big, 0.20, n*big)
	within(t, "GET /keep-small external", cat("GET /keep-small").ExternalBytes, n*small, 0.20, n*small)
	within(t, "GET /drop-big external (all freed)", cat("GET /drop-big").ExternalBytes, 0, 0.20, n*big)
	within(t, "GET /keep-big retained", cat("GET /keep-big").RetainedMappingBytes, n*big, 0.20, n*big)
	objs := cat("GET /objects")
	if objs.RSSBytes < 1<<20 || objs.ExternalBytes > objs.RSSBytes/10 {
		t.Errorf("GET /objects: rss %d, external %d: want its JS-object growth charged as runtime, not external", objs.RSSBytes, objs.ExternalBytes)
	}
	if rep.Culprit == nil || *rep.Culprit != "GET /keep-big" || rep.CulpritBy != "retained" {
		t.Errorf("culprit = %s by %s, want GET /keep-big by retained", deref(rep.Culprit), rep.CulpritBy)
	}
}

// TestExternalExact: --exact-external counts ArrayBuffer bytes to the byte
// per route, and the live total matches what the process itself reports.
func TestExternalExact(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	port := freePort(t)
	const big, small, n = 1 << 20, 16 << 10, 20
	var out io.Reader
	r := startMemdiag(t, func(c *exec.Cmd) {
		c.Env = append(c.Environ(), fmt.Sprintf("PORT=%d", port), fmt.Sprintf("BIG=%d", big), fmt.Sprintf("SMALL=%d", small))
		out = stdoutOf(t, c)
	}, "run", "--interval", "1h", "--exact-external", "--", "/usr/bin/node", "--expose-gc", externalScript)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitListening(t, out)
	driveExternal(t, base, n)
	var st abStats
	getJSON(t, client(1), base+"/stats", &st)
	r.cmd.Process.Signal(syscall.SIGTERM) // run passes it on to node
	r.wait(t)
	rep := r.readReport(t)
	for _, c := range rep.Categories {
		t.Logf("%-16s ops=%d external=%d allocated=%d freed=%d", c.Name, c.Ops, c.ExternalBytes, c.ExternalAllocated, c.ExternalFreed)
	}
	if rep.External.Mode != "exact" {
		t.Fatalf("external.mode = %q", rep.External.Mode)
	}
	for route, want := range map[string]int64{"GET /keep-big": n * big, "GET /keep-small": n * small, "GET /drop-big": 0} {
		c, ok := category(rep, route)
		if !ok {
			t.Fatalf("no category %q", route)
		}
		if c.ExternalBytes != want {
			t.Errorf("%s external = %d, want exactly %d", route, c.ExternalBytes, want)
		}
		if c.ExternalAllocated < uint64(want) {
			t.Errorf("%s allocated %d, want at least %d", route, c.ExternalAllocated, want)
		}
	}
	within(t, "external.live_bytes vs the process's arrayBuffers", rep.External.LiveBytes, st.ArrayBuffers, 0.05, st.ArrayBuffers)
	if rep.Culprit == nil || *rep.Culprit != "GET /keep-big" {
		t.Errorf("culprit = %s, want GET /keep-big", deref(rep.Culprit))
	}
}

// TestOutstandingOverflow: a tiny outstanding table overflows; the
// overflow is counted and reported, and the totals stay consistent.
func TestOutstandingOverflow(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	port := freePort(t)
	var out io.Reader
	r := startMemdiag(t, func(c *exec.Cmd) {
		c.Env = append(c.Environ(), fmt.Sprintf("PORT=%d", port), "BIG=65536", "SMALL=8192")
		out = stdoutOf(t, c)
	}, "run", "--interval", "1h", "--exact-external", "--max-outstanding", "16", "--", "/usr/bin/node", "--expose-gc", externalScript)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitListening(t, out)
	driveExternal(t, base, 20)
	var st abStats
	getJSON(t, client(1), base+"/stats", &st)
	r.cmd.Process.Signal(syscall.SIGTERM)
	r.wait(t)
	rep := r.readReport(t)
	if rep.Health.OutstandingOverflow == 0 {
		t.Fatalf("no outstanding overflow reported with a 16-entry table")
	}
	var sum int64
	for _, c := range rep.Categories {
		sum += c.ExternalBytes
	}
	if sum != rep.External.LiveBytes {
		t.Errorf("categories' external %d != live %d: totals inconsistent", sum, rep.External.LiveBytes)
	}
	if rep.External.LiveBytes > st.ArrayBuffers {
		t.Errorf("live %d above the process's own %d", rep.External.LiveBytes, st.ArrayBuffers)
	}
	log, _ := os.ReadFile(r.log)
	if !strings.Contains(string(log), "outstanding") {
		t.Errorf("the log does not mention the overflow:\n%s", log)
	}
}

// stdoutOf pipes the command's stdout (memdiag run passes it to the
// traced command) to the test.
func stdoutOf(t *testing.T, c *exec.Cmd) io.Reader {
	t.Helper()
	out, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// waitListening reads the service's stdout until its "listening" line,
// then drains the rest in the background.
func waitListening(t *testing.T, out io.Reader) {
	t.Helper()
	readWithin(t, out, pipeDeadline)
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "listening") {
			noDeadline(out) // the rest is drained
			go io.Copy(io.Discard, out)
			return
		}
	}
	t.Fatalf("the service exited before listening (or did not listen within %s): %v", pipeDeadline, sc.Err())
}

// TestNativeHeapEstimate: a C workload's malloc and free of known sizes,
// from the brk heap and from mappings of their own: the native-heap
// (external) estimate is within 10%.
func TestNativeHeapEstimate(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	w := startWorkload(t)
	r := startMemdiag(t, nil, "attach", "--pid", fmt.Sprint(w.pid), "--interval", "1h")
	w.do("malloc 262144 40") // 10 MiB from the brk heap
	w.do("threshold 131072")
	w.do("malloc 1048576 16") // 16 MiB in mappings of their own
	w.do("freeall")           // the mappings go back; the heap keeps its pages
	w.do("status")
	r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.wait(t); code != 0 {
		t.Fatalf("memdiag exit %d: %s", code, r.stderr.String())
	}
	rep := r.readReport(t)
	main, ok := category(rep, "thread:memwork")
	if !ok {
		t.Fatalf("no thread:memwork category in %+v", rep.Categories)
	}
	within(t, "native heap left after freeall (external)", main.ExternalBytes, 10*mib, 0.10, 10*mib)
	within(t, "growth.external_bytes", rep.Growth.External, 10*mib, 0.10, 10*mib)
	within(t, "anon growth (the 10 MiB kept)", main.RSSAnonBytes, 10*mib, 0.01, 10*mib)
}

// TestReferenceRetained: on the reference service, the sync category is
// the culprit by retained bytes, and its retained external bytes match
// the documented leak (32 MiB a cycle here) in both modes; in exact mode
// /api/voice's 2 KiB a request does too.
func TestReferenceRetained(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	dir := filepath.Join(repoRoot, "examples", "leaky-service")
	for _, mode := range []struct {
		name string
		args []string
		tol  float64
	}{
		{"estimated", nil, 0.20},
		{"exact", []string{"--exact-external"}, 0.10},
	} {
		t.Run(mode.name, func(t *testing.T) {
			port, peerPort := freePort(t), freePort(t)
			peer := startService(t, []string{fmt.Sprintf("PEER_PORT=%d", peerPort)}, "node", filepath.Join(dir, "peer.js"))
			_ = peer
			const syncKeep, voiceKeep = 32 << 20, 2048
			var out io.Reader
			cfg := filepath.Join(t.TempDir(), "c.yaml")
			os.WriteFile(cfg, []byte(fmt.Sprintf("categories:\n  - name: sync\n    outbound: { port: %d }\n    cycle_gap: 500ms\n  - name: voice\n    http: { path_prefix: /api/voice }\n", peerPort)), 0o600)
			args := append([]string{"run", "--interval", "1h", "--config", cfg}, mode.args...)
			args = append(args, "--", "/usr/bin/node", filepath.Join(dir, "server.js"))
			r := startMemdiag(t, func(c *exec.Cmd) {
				c.Env = append(c.Environ(), fmt.Sprintf("PORT=%d", port), fmt.Sprintf("PEER_PORT=%d", peerPort),
					"SYNC_INTERVAL_MS=1000", fmt.Sprintf("SYNC_RETAIN_BYTES=%d", syncKeep), fmt.Sprintf("VOICE_RETAIN_BYTES=%d", voiceKeep))
				out = stdoutOf(t, c)
			}, args...)
			waitListening(t, out)
			base := fmt.Sprintf("http://127.0.0.1:%d", port)
			c := client(4)
			var p0, p1 peerStats
			pc := client(1)
			getJSON(t, pc, fmt.Sprintf("http://127.0.0.1:%d/stats", peerPort), &p0)
			const voices = 2000
			for i := 0; i < voices; i++ {
				get(t, c, "GET", fmt.Sprintf("%s/api/voice/%d", base, i), nil)
				get(t, c, "GET", base+"/api/records", nil)
			}
			deadline := time.Now().Add(loadDeadline)
			for p1.Changes-p0.Changes < 4 {
				if time.Now().After(deadline) {
					t.Fatalf("the peer served %d sync cycles in %s, want 4", p1.Changes-p0.Changes, loadDeadline)
				}
				getJSON(t, pc, fmt.Sprintf("http://127.0.0.1:%d/stats", peerPort), &p1)
				get(t, c, "GET", base+"/api/records", nil)
			}
			c.CloseIdleConnections()
			r.cmd.Process.Signal(syscall.SIGTERM)
			r.wait(t)
			rep := r.readReport(t)
			for _, cat := range rep.Categories {
				t.Logf("%-14s ops=%d rss=%d retained=%d retained_external=%d", cat.Name, cat.Ops, cat.RSSBytes, cat.RetainedMappingBytes, cat.RetainedExternal)
			}
			sync, ok := category(rep, "sync")
			if !ok {
				t.Fatal("no sync category")
			}
			// Each cycle memdiag saw keeps syncKeep; its cycle count is the
			// peer's (± the one in flight at the end).
			opsWithin(t, "sync cycles", sync.Ops, p1.Changes-p0.Changes)
			want := int64(sync.Ops) * syncKeep
			within(t, "sync retained external", sync.RetainedExternal, want, mode.tol, want)
			if rep.Culprit == nil || *rep.Culprit != "sync" || rep.CulpritBy != "retained" {
				t.Errorf("culprit = %s by %s, want sync by retained", deref(rep.Culprit), rep.CulpritBy)
			}
			if mode.name == "exact" {
				voice, _ := category(rep, "voice")
				within(t, "voice retained external", voice.RetainedExternal, voices*voiceKeep, mode.tol, voices*voiceKeep)
			}
		})
	}
}

// TestNativeHeapFollowsMalloc: with --native-heap, blocks malloc'd while
// traced and not freed are the native heap of the bucket that allocated
// them, to the sampling step: big blocks exactly, small ones sampled; what
// is freed, whoever frees it, is not. The same chunks in the brk heap reuse
// space the freed ones left, so no mapping or page fault tells them apart.
func TestNativeHeapFollowsMalloc(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	w := startWorkload(t)
	w.do("malloc 64K 64") // before attach: not followed, and freed below
	r := startMemdiag(t, nil, "attach", "--pid", fmt.Sprint(w.pid), "--interval", "1h", "--native-heap")
	w.do("freeall")
	w.do("malloc 64K 100")   // 6.25 MiB, kept, in the space the first chunks left
	w.do("malloc 1000 3000") // 2.9 MiB of 1000-byte chunks, each followed with p = 1000/4096
	w.do("freeall")          // everything freed again
	w.do("malloc 64K 50")    // 3.1 MiB kept
	w.do("malloc 512 4000")  // 2 MiB of 512-byte chunks, kept (memwork keeps 4096 chunks at most)
	r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.wait(t); code != 0 {
		t.Fatalf("memdiag exit %d: %s", code, r.stderr.String())
	}
	rep := r.readReport(t)
	var native int64
	var method string
	for _, c := range rep.Categories {
		t.Logf("%-20s retained=%d native=%d method=%q", c.Name, c.RetainedBytes, c.RetainedByKind.Native, c.RetainedMethod)
		if strings.HasPrefix(c.Name, "thread:") {
			native += c.RetainedByKind.Native
			method = c.RetainedMethod
		}
	}
	if !strings.Contains(method, "native heap followed") {
		t.Errorf("retained_method %q: want the native heap followed", method)
	}
	// 50 × 64 KiB exactly, plus 4000 × 512 B sampled (p = 1/8): 2 MiB
	// expected, the sampling's standard error sqrt(4000 p (1-p)) × 4 KiB ≈
	// 85 KiB, 1.6% of the whole.
	want := int64(50*64<<10 + 4000*512)
	within(t, "the workload thread's native heap", native, want, 0.15, want)
	if rep.Health.OutstandingOverflow != 0 {
		t.Errorf("outstanding_overflow = %d: the table overflowed", rep.Health.OutstandingOverflow)
	}
}
