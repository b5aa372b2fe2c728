package container

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	idA = "4f5e6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091"
	idB = "4f5e6a7b11112222333344445555666677778888999900001111222233334444"
)

func TestIDOf(t *testing.T) {
	for name, want := range map[string]string{
		"docker-" + idA + ".scope":         idA,
		"cri-containerd-" + idA + ".scope": idA,
		"crio-" + idA + ".scope":           idA,
		"libpod-" + idA + ".scope":         idA,
		"nerdctl-" + idA + ".scope":        idA,
		idA:                                idA,
		"docker-" + idA[:60] + ".scope":    "",
		"system.slice":                     "",
		"docker-" + strings.ToUpper(idA):   "",
	} {
		if got := IDOf(name); got != want {
			t.Errorf("IDOf(%q) = %q, want %q", name, got, want)
		}
	}
}

func tree(t *testing.T, paths ...string) string {
	t.Helper()
	root := t.TempDir()
	for _, p := range paths {
		if err := os.MkdirAll(filepath.Join(root, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestFind(t *testing.T) {
	v2 := tree(t, "system.slice/docker-"+idA+".scope", "kubepods.slice/kubepods-pod1.slice/cri-containerd-"+idB+".scope")
	v1 := tree(t, "docker/"+idA)
	roots := Roots{V2: v2, V1Memory: v1}
	c, err := Find(idA[:12], roots)
	if err != nil {
		t.Fatal(err)
	}
	if c.ID != idA || c.V2 != filepath.Join(v2, "system.slice/docker-"+idA+".scope") || c.V1Memory != filepath.Join(v1, "docker", idA) {
		t.Errorf("Find = %+v", c)
	}
	if c, err := Find(idB[:14], roots); err != nil || c.ID != idB || c.V1Memory != "" {
		t.Errorf("Find(B) = %+v, %v", c, err)
	}
	_, err = Find(idA[:8], roots)
	if err == nil || !strings.Contains(err.Error(), "ambiguous") || !strings.Contains(err.Error(), idA[:12]) || !strings.Contains(err.Error(), idB[:12]) {
		t.Errorf("ambiguous prefix: %v", err)
	}
	if _, err := Find("deadbeef", roots); err == nil || !strings.Contains(err.Error(), "no container") {
		t.Errorf("unknown: %v", err)
	}
	for _, bad := range []string{"", "4f5", "xyz123456", "../../etc"} {
		if _, err := Find(bad, roots); err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("Find(%q) = %v, want a one-line error", bad, err)
		}
	}
}

func TestProcsAndLimit(t *testing.T) {
	v2 := tree(t, "c/sub")
	os.WriteFile(filepath.Join(v2, "c", "cgroup.procs"), []byte("12\n7\n"), 0o644)
	os.WriteFile(filepath.Join(v2, "c", "sub", "cgroup.procs"), []byte("99\n12\n"), 0o644)
	pids, err := Procs(filepath.Join(v2, "c"))
	if err != nil || len(pids) != 3 || pids[0] != 7 || pids[2] != 99 {
		t.Errorf("Procs = %v, %v", pids, err)
	}
	if _, ok := MemoryLimit(os.Getpid(), Roots{V2: v2}); ok {
		t.Error("a limit found where there is none")
	}
}
