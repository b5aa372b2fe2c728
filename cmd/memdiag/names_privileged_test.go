//go:build privileged

package main

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestContainerByComposeName: `memdiag attach --container oip-gpu` finds a
// Compose service's container from docker's on-disk metadata (written as
// docker 27 writes config.v2.json), after a recreate left the old
// container's metadata beside the new one's.
func TestContainerByComposeName(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	const root = "/var/lib/docker"
	if _, err := os.Stat(root); err == nil {
		t.Skip(root + " exists: this host runs docker, and the test does not write into a daemon's state")
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	tmpl, err := os.ReadFile(filepath.Join(repoRoot, "container", "testdata", "docker-27-config.v2.json"))
	if err != nil {
		t.Fatal(err)
	}
	labels := `{"com.docker.compose.container-number":"1","com.docker.compose.oneoff":"False","com.docker.compose.project":"fitnessally","com.docker.compose.service":"oip-gpu","com.docker.compose.version":"2.29.7"}`
	write := func(id, name string) {
		dir := filepath.Join(root, "containers", id)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		s := strings.NewReplacer("@ID@", id, "@ID12@", id[:12], "@NAME@", name, "@LABELS@", labels).Replace(string(tmpl))
		if err := os.WriteFile(filepath.Join(dir, "config.v2.json"), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b := make([]byte, 32)
	rand.Read(b)
	old := hex.EncodeToString(b)
	write(old, old[:12]+"_fitnessally-oip-gpu-1") // renamed by compose, stopped: no cgroup
	c := newFakeContainer(t, "")
	write(c.id, "fitnessally-oip-gpu-1")
	c.start(t, nil, "sh", "-c", `"echo listening; exec sleep 600"`)

	for _, name := range []string{"oip-gpu", "fitnessally-oip-gpu-1"} {
		r := startMemdiag(t, nil, "attach", "--container", name, "--interval", "1h", "--no-dumps")
		r.cmd.Process.Signal(syscall.SIGTERM)
		if code := r.wait(t); code != 0 {
			t.Fatalf("--container %s: exit %d: %s", name, code, r.stderr.String())
		}
		rep := r.readReport(t)
		if rep.Target.Container != c.id || rep.Target.Comm != "sleep" {
			t.Errorf("--container %s: target %+v, want container %s's sleep", name, rep.Target, c.id[:12])
		}
	}
	code, stderr := runOnce(t, nil, "attach", "--container", "oip-cpu")
	if code != 2 || !strings.Contains(stderr, `no container named "oip-cpu"`) || !strings.Contains(stderr, "docker "+root) || strings.Count(stderr, "\n") != 1 {
		t.Errorf("unknown name: exit %d, %q", code, stderr)
	}
}
