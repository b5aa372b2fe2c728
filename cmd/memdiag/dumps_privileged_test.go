//go:build privileged

package main

import (
	"encoding/json"
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

	"github.com/google/pprof/profile"
)

// waitLog waits (bounded) until the log contains s: a dump is written off
// the session loop and announced there when complete.
func waitLog(t *testing.T, path, s string, exited <-chan struct{}) string {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		data, _ := os.ReadFile(path)
		if strings.Contains(string(data), s) {
			return string(data)
		}
		select {
		case <-exited:
			t.Fatalf("memdiag exited before logging %q:\n%s", s, data)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the log never said %q:\n%s", s, data)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// dumpDir finds the one dump directory under dir.
func dumpDir(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 1 {
		t.Fatalf("want one dump in %s, got %d (%v)", dir, len(entries), err)
	}
	d := filepath.Join(dir, entries[0].Name())
	if fi, _ := os.Stat(d); fi.Mode().Perm() != 0o700 {
		t.Errorf("dump directory mode %v, want 0700", fi.Mode().Perm())
	}
	return d
}

// TestDumpProfile: crossing a (small) threshold dumps the attribution
// state, smaps and a pprof profile of growth that names the workload's
// allocating functions.
func TestDumpProfile(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	w := startWorkload(t)
	dumps := filepath.Join(t.TempDir(), "dumps")
	r := startMemdiag(t, nil, "attach", "--pid", fmt.Sprint(w.pid), "--interval", "1h", "--dump-at", "48MB", "--dumps-dir", dumps)
	w.do("anon 64M")
	log := waitLog(t, r.log, "[DUMP] written to", r.done)
	if !strings.Contains(log, "[THRESHOLD] RSS") {
		t.Errorf("no [THRESHOLD] line:\n%s", log)
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	r.wait(t)
	d := dumpDir(t, dumps)
	for _, name := range []string{"attribution.json", "smaps", "growth.pb.gz", "SECRETS-WARNING.txt"} {
		fi, err := os.Stat(filepath.Join(d, name))
		if err != nil {
			t.Errorf("dump lacks %s: %v", name, err)
			continue
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", name, fi.Mode().Perm())
		}
	}
	var state map[string]any
	data, _ := os.ReadFile(filepath.Join(d, "attribution.json"))
	if err := json.Unmarshal(data, &state); err != nil {
		t.Errorf("attribution.json: %v", err)
	}
	f, err := os.Open(filepath.Join(d, "growth.pb.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := profile.Parse(f)
	if err != nil {
		t.Fatalf("the profile does not parse with google/pprof: %v", err)
	}
	var total int64
	names := map[string]int64{}
	for _, s := range p.Sample {
		total += s.Value[0]
		for _, loc := range s.Location {
			for _, l := range loc.Line {
				names[l.Function.Name] += s.Value[0]
			}
		}
	}
	if total < 32<<20 {
		t.Errorf("profile holds %d bytes of growth, want most of the 64 MiB", total)
	}
	if names["touch"] < 32<<20 {
		t.Errorf("the allocating function touch has %d bytes in the profile; functions: %v", names["touch"], names)
	}
	rep := r.readReport(t)
	var dumped bool
	for _, m := range rep.Markers {
		dumped = dumped || m.Kind == "dump"
	}
	if !dumped {
		t.Errorf("no dump marker in the report: %+v", rep.Markers)
	}
}

// TestDumpHeapSnapshot: a dump of the reference service includes a heap
// snapshot that parses; the service serves during and after, and the
// inspector memdiag opened is closed again.
func TestDumpHeapSnapshot(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	port, inspectPort := freePort(t), freePort(t)
	// Its own inspector port: 9229, Node's default, may be taken on a
	// shared machine (another test's or another user's Node).
	svc := startService(t, []string{fmt.Sprintf("PORT=%d", port), "SYNC_INTERVAL_MS=0"},
		"node", fmt.Sprintf("--inspect-port=127.0.0.1:%d", inspectPort), filepath.Join(repoRoot, "examples", "leaky-service", "server.js"))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	c := client(2)
	get(t, c, "GET", base+"/api/records", nil)
	st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", svc.pid))
	var rssKB int64
	for _, line := range strings.Split(string(st), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			fmt.Sscanf(strings.TrimPrefix(line, "VmRSS:"), "%d", &rssKB)
		}
	}
	dumps := filepath.Join(t.TempDir(), "dumps")
	r := startMemdiag(t, nil, "attach", "--pid", fmt.Sprint(svc.pid), "--interval", "1h",
		"--dump-at", fmt.Sprintf("%dKB", rssKB+16<<10), "--dumps-dir", dumps)
	for i := 0; i < 10; i++ {
		get(t, c, "GET", fmt.Sprintf("%s/api/voice/%d", base, i), nil)
	}
	// Grow past the threshold: 2 KiB a voice request would take long, so
	// ask for a big records page repeatedly while the heap grows.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-r.done:
				return
			default:
			}
			data, _ := os.ReadFile(r.log)
			if strings.Contains(string(data), "[DUMP] written to") {
				return
			}
			get(t, c, "GET", base+"/api/alfred/x", nil)
		}
	}()
	log := waitLog(t, r.log, "[DUMP] written to", r.done)
	<-done
	get(t, c, "GET", base+"/api/records", nil) // still serving
	if !strings.Contains(log, "closed again") {
		t.Errorf("the log does not say the inspector was closed:\n%s", log)
	}
	// The inspector's port is not listening any more.
	if out, _ := exec.Command("sh", "-c", fmt.Sprintf("awk '$4==\"0A\" && $2 ~ /:%04X$/' /proc/%d/net/tcp /proc/%d/net/tcp6", inspectPort, svc.pid, svc.pid)).Output(); strings.TrimSpace(string(out)) != "" {
		t.Errorf("the inspector still listens after the dump: %s", out)
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	r.wait(t)
	// memdiag's own connections to the inspector (GET /json/list, the
	// websocket upgrade) are not the service's operations: no op named
	// from them, no op of unknown kind. (A category of unknown kind
	// without ops is no traffic: "freed (op forgotten)" holds what ops
	// no longer remembered gave back, as a GC during the snapshot does.)
	for _, c := range r.readReport(t).Categories {
		if strings.Contains(c.Name, "/json") || c.Kind == "unknown" && c.Ops > 0 {
			t.Errorf("memdiag's inspector traffic counted as the service's: %s (%s, %d ops)", c.Name, c.Kind, c.Ops)
		}
	}
	d := dumpDir(t, dumps)
	data, err := os.ReadFile(filepath.Join(d, "heap.heapsnapshot"))
	if err != nil {
		t.Fatalf("no heap snapshot: %v\n%s", err, log)
	}
	var snap struct {
		Snapshot struct {
			Meta struct {
				NodeFields []string `json:"node_fields"`
			} `json:"meta"`
			NodeCount int `json:"node_count"`
		} `json:"snapshot"`
		Nodes   []int64  `json:"nodes"`
		Strings []string `json:"strings"`
	}
	if err := json.Unmarshal(data, &snap); err != nil {
		t.Fatalf("the heap snapshot does not parse: %v", err)
	}
	if len(snap.Snapshot.Meta.NodeFields) == 0 || len(snap.Nodes) == 0 || len(snap.Strings) == 0 {
		t.Errorf("heap snapshot lacks meta, nodes or strings: %d fields, %d nodes, %d strings", len(snap.Snapshot.Meta.NodeFields), len(snap.Nodes), len(snap.Strings))
	}
	get(t, c, "GET", base+"/api/records", nil)
}

// TestDumpRefusedOnFullDisk: a dumps directory on a full (tiny) tmpfs
// refuses the dump with a log line; tracing and the report go on.
func TestDumpRefusedOnFullDisk(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	w := startWorkload(t)
	r := startMemdiag(t, nil, "attach", "--pid", fmt.Sprint(w.pid), "--interval", "1h", "--dump-at", "32MB", "--dumps-dir", filepath.Join(dir, "dumps"))
	w.do("anon 48M")
	log := waitLog(t, r.log, "[DUMP] refused", r.done)
	if !strings.Contains(log, "free") {
		t.Errorf("the refusal does not say why:\n%s", log)
	}
	// Fill the tmpfs, and point a second memdiag's log there: it says so
	// once and goes on logging to the console.
	filler, _ := os.Create(filepath.Join(dir, "filler"))
	filler.Write(make([]byte, 2<<20))
	filler.Close()
	full := exec.Command(memdiagBin, "attach", "--pid", fmt.Sprint(w.pid), "--log", filepath.Join(dir, "full.log"), "--duration", "2s", "--interval", "1s", "--no-dumps")
	out, err := full.CombinedOutput()
	if err != nil {
		t.Errorf("memdiag with its log on a full disk: %v\n%s", err, out)
	}
	if n := strings.Count(string(out), "warning: cannot write the log"); n != 1 || !strings.Contains(string(out), "[SUMMARY]") {
		t.Errorf("want one warning and the log on the console, got:\n%s", out)
	}
	w.do("anon 1M")
	r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.wait(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	rep := r.readReport(t)
	within(t, "growth despite the refused dump", rep.Growth.Anon, 49<<20, 0.02, 49<<20)
}

// TestOOMKill: a target killed by the OOM killer in a memory cgroup with
// a small limit (v1 memory.limit_in_bytes on this hybrid host, v2
// memory.max where there is no v1 memory controller) is reported: an
// [OOM] line, and the final report says so; --dump-at percentages use
// the limit.
func TestOOMKill(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	roots := containerRoots()
	name := fmt.Sprintf("memdiag-oom-%d", os.Getpid())
	var cg, limitFile string
	if roots.V1Memory != "" {
		cg, limitFile = filepath.Join(roots.V1Memory, name), "memory.limit_in_bytes"
	} else {
		cg, limitFile = filepath.Join(roots.V2, name), "memory.max"
	}
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for os.Remove(cg) != nil && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
	})
	if err := os.WriteFile(filepath.Join(cg, limitFile), []byte("67108864"), 0o644); err != nil {
		t.Fatalf("setting a 64 MiB limit: %v", err)
	}
	if roots.V1Memory != "" {
		os.WriteFile(filepath.Join(cg, "memory.memsw.limit_in_bytes"), []byte("67108864"), 0o644) // no swap either, where accounted
	}
	cmd := exec.Command("sh", "-c", fmt.Sprintf("echo $$ > %s/cgroup.procs && exec %s", cg, memworkBin))
	w := newWorkload(t, cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	w.ready()
	r := startMemdiag(t, nil, "attach", "--pid", fmt.Sprint(w.pid), "--interval", "1h", "--dump-at", "50%", "--no-dumps")
	fmt.Fprintln(w.in, "anon 128M") // over the limit: the OOM killer ends it
	if code := r.wait(t); code != 0 {
		t.Fatalf("memdiag exit %d after the target's OOM kill: %s", code, r.stderr.String())
	}
	rep := r.readReport(t)
	if !rep.Target.Exited || !rep.Target.OOMKilled {
		t.Errorf("target = %+v, want exited and oom_killed", rep.Target)
	}
	log, _ := os.ReadFile(r.log)
	for _, want := range []string{"[OOM] the kernel's OOM killer chose pid", "[SUMMARY] Memory by category (at the OOM kill)", "[THRESHOLD] RSS", "50% of 64.0 MiB"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("the log lacks %q:\n%s", want, log)
		}
	}
	// The victim's memory as the killer saw it (read by the BPF program
	// from the mm's counters): most of the 64 MiB limit is anonymous.
	m := regexp.MustCompile(`chose pid \d+ \(anon ([0-9.]+) MiB`).FindSubmatch(log)
	if m == nil {
		t.Fatalf("no anon size in MiB in the [OOM] line:\n%s", log)
	}
	if anon, _ := strconv.ParseFloat(string(m[1]), 64); anon < 32 || anon > 64 {
		t.Errorf("the OOM victim's anon = %.1f MiB, want 32..64 (a 64 MiB limit)", anon)
	}
}
