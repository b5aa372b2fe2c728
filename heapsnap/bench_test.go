package heapsnap

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
)

// BenchmarkDiffFiles200MB diffs two real snapshots of more than 200 MB
// each, written by testdata/bigheap.js into a temporary directory (removed
// afterwards), and reports the time and the peak RSS of the diff (the
// process's VmHWM, reset before each run) against the larger file.
//
//	go test -run '^$' -bench DiffFiles200MB -benchtime 1x ./heapsnap
func BenchmarkDiffFiles200MB(b *testing.B) {
	node, err := exec.LookPath("node")
	if err != nil {
		b.Skip("needs node (Node.js) on PATH")
	}
	dir := b.TempDir()
	cmd := exec.Command(node, "--max-old-space-size=4096", "testdata/bigheap.js", dir, "200000", "50000")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("bigheap.js: %v", err)
	}
	var res struct{ Kept int64 }
	if err := json.Unmarshal(out, &res); err != nil {
		b.Fatalf("bigheap.js printed %q: %v", out, err)
	}
	a, bb := filepath.Join(dir, "a.heapsnapshot"), filepath.Join(dir, "b.heapsnapshot")
	var size int64
	for _, p := range []string{a, bb} {
		fi, err := os.Stat(p)
		if err != nil {
			b.Fatal(err)
		}
		if fi.Size() < 200<<20 {
			b.Fatalf("%s is %d bytes, want at least 200 MiB", p, fi.Size())
		}
		size = max(size, fi.Size())
	}
	defer debug.SetGCPercent(debug.SetGCPercent(25)) // as the memdiag CLI runs
	var peak int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
			b.Skipf("cannot reset the peak RSS: %v", err)
		}
		d, err := DiffFiles(context.Background(), a, bb, Options{Top: 5})
		if err != nil {
			b.Fatal(err)
		}
		peak = max(peak, hwm(b))
		if i == 0 {
			g := d.Groups[0]
			b.Logf("A %d nodes, B %d nodes (%d MB); top group %s grew %d bytes (kept: %d) via %s",
				d.Snapshots[0].Nodes, d.Snapshots[1].Nodes, size>>20, g.Name, g.Grew, res.Kept, g.PathText())
		}
	}
	b.ReportMetric(float64(size)/(1<<20), "file-MiB")
	b.ReportMetric(float64(peak)/(1<<20), "peak-RSS-MiB")
	b.ReportMetric(float64(peak)/float64(size), "peak-RSS/file")
}

// hwm is this process's peak RSS in bytes (VmHWM).
func hwm(b *testing.B) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb << 10
		}
	}
	b.Fatal("no VmHWM in /proc/self/status")
	return 0
}
