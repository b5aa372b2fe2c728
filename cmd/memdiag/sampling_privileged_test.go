//go:build privileged

package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestV8HeapSampling attaches with --heap-sampling v8 to the reference
// service (sync off): V8's sampler is joined with the ops, every request is
// counted and measured by it, memdiag's own inspector connections are no
// ops of the service, and after SIGTERM the inspector memdiag opened is
// closed again. (The verdict's numbers are checked by package accuracy.)
func TestV8HeapSampling(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	port := freePort(t)
	// The inspector on a port the kernel picks (other tests open Node
	// inspectors at the same time): memdiag finds it, and says which.
	svc := startService(t, []string{fmt.Sprintf("PORT=%d", port), "SYNC_INTERVAL_MS=0", "NODE_OPTIONS=--inspect-port=0"},
		"node", filepath.Join(repoRoot, "examples", "leaky-service", "server.js"))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	c := client(2)
	for i := 0; i < 200; i++ {
		get(t, c, "GET", base+"/api/records", nil)
	}
	r := startMemdiag(t, nil, "attach", "--pid", fmt.Sprint(svc.pid), "--interval", "1h", "--no-dumps", "--heap-sampling", "v8")
	const n = 400
	for i := 0; i < n; i++ {
		get(t, c, "GET", base+"/api/records", nil)
		get(t, c, "GET", fmt.Sprintf("%s/api/voice/%d", base, i), nil)
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.wait(t); code != 0 {
		t.Fatalf("memdiag exited %d: %s", code, r.stderr.String())
	}
	rep := r.readReport(t)
	if len(rep.Sampling) != 1 || !rep.Sampling[0].Active || rep.Sampling[0].Runtime != "v8" {
		t.Fatalf("sampling = %+v, want V8 active", rep.Sampling)
	}
	var ops int
	for _, cat := range rep.Categories {
		t.Logf("%-22s %-10s ops=%d retained=%d (%s)", cat.Name, cat.Kind, cat.Ops, cat.RetainedBytes, cat.RetainedMethod)
		if strings.Contains(cat.Name, "/json") || cat.Kind == "unknown" {
			t.Errorf("memdiag's own inspector traffic counted as an op: %s (%d ops)", cat.Name, cat.Ops)
		}
		if cat.Kind == "http" {
			ops += cat.Ops
			if !strings.HasPrefix(cat.RetainedMethod, "sampled (v8") {
				t.Errorf("%s: method %q, want sampled", cat.Name, cat.RetainedMethod)
			}
		}
	}
	if ops != 2*n {
		t.Errorf("%d HTTP ops, want %d", ops, 2*n)
	}
	// The inspector memdiag opened is not listening any more.
	var inspector int
	if _, err := fmt.Sscanf(rep.Sampling[0].Reason[strings.Index(rep.Sampling[0].Reason, "on port "):], "on port %d", &inspector); err != nil || inspector == 0 {
		t.Fatalf("no inspector port in %q", rep.Sampling[0].Reason)
	}
	if out, _ := exec.Command("sh", "-c", fmt.Sprintf("awk '$4==\"0A\" && $2 ~ /:%04X$/' /proc/%d/net/tcp /proc/%d/net/tcp6", inspector, svc.pid, svc.pid)).Output(); strings.TrimSpace(string(out)) != "" {
		t.Errorf("the inspector still listens on port %d after memdiag exited: %s", inspector, out)
	}
	get(t, c, "GET", base+"/api/records", nil) // still serving
}
