package heapsnap

import (
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestLeakingService runs testdata/leaky.js under the real node: it writes
// a snapshot, leaks a known number of bytes in one structure, writes
// another. The top group of the diff must be that structure, its path
// must name it, and its growth must be within 10% of what it kept.
func TestLeakingService(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("needs node (Node.js) on PATH")
	}
	cases := []struct {
		kind      string
		group     string
		pathNames []string
	}{
		{"map", "Map", []string{"Map.table", "Cache.sessions", "Object.cache"}},
		{"buffers", "Array", []string{"Object.uploads"}},
		{"listeners", "Array", []string{"Context.listeners", "Object.bus"}},
	}
	for _, c := range cases {
		t.Run(c.kind, func(t *testing.T) {
			dir := t.TempDir()
			out, err := exec.Command(node, "testdata/leaky.js", dir, c.kind, "300").Output()
			if err != nil {
				t.Fatalf("leaky.js: %v", err)
			}
			var res struct{ Kept int64 }
			if err := json.Unmarshal(out, &res); err != nil || res.Kept <= 0 {
				t.Fatalf("leaky.js printed %q: %v", out, err)
			}
			d, err := DiffFiles(context.Background(), filepath.Join(dir, "a.heapsnapshot"), filepath.Join(dir, "b.heapsnapshot"), Options{Top: 5})
			if err != nil {
				t.Fatal(err)
			}
			if len(d.Groups) == 0 {
				t.Fatal("nothing grew")
			}
			top := d.Groups[0]
			path := top.PathText()
			t.Logf("%s: kept %d bytes; top group %s grew %d bytes (%+.1f%%) via %s", c.kind, res.Kept, top.Name, top.Grew,
				100*float64(top.Grew-res.Kept)/float64(res.Kept), path)
			if top.Name != c.group {
				t.Errorf("top group %q, want %q\n%s", top.Name, c.group, d.Text())
			}
			for _, n := range c.pathNames {
				if !strings.Contains(path, n) {
					t.Errorf("path %q does not name %q", path, n)
				}
			}
			if diff := float64(top.Grew-res.Kept) / float64(res.Kept); diff < -0.10 || diff > 0.10 {
				t.Errorf("grew %d bytes, the service kept %d: off by %.1f%%", top.Grew, res.Kept, 100*diff)
			}
		})
	}
}
