//go:build privileged

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestReportDamagedRecordings: a truncated or corrupt recording is reported
// up to the damage, with one warning saying how far it was readable; a
// file that is not a recording is a one-line error.
func TestReportDamagedRecordings(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	w := startWorkload(t)
	rec := filepath.Join(t.TempDir(), "run.mdrec")
	r := startMemdiag(t, nil, "attach", "--pid", fmt.Sprint(w.pid), "--interval", "1h", "--record", rec)
	for i := 0; i < 5; i++ {
		w.do("anon 4M")
		w.do("thread 1M")
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	r.wait(t)
	data, err := os.ReadFile(rec)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o600)
		return p
	}
	full := write("full", data)
	cut := write("cut", data[:len(data)*2/3])
	flipped := append([]byte(nil), data...)
	flipped[len(flipped)/2] ^= 0xff
	corrupt := write("corrupt", flipped)
	junk := write("junk", []byte("this is not a recording\n"))

	code, stderr := runOnce(t, nil, "report", full)
	if code != 0 || stderr != "" {
		t.Errorf("full recording: exit %d, %q", code, stderr)
	}
	for _, p := range []string{cut, corrupt} {
		code, stderr := runOnce(t, nil, "report", "--format", "json", "-o", p+".json", p)
		if code != 0 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "warning") || !strings.Contains(stderr, "reporting what was readable") {
			t.Errorf("%s: exit %d, stderr %q: want exit 0 and one warning", filepath.Base(p), code, stderr)
		}
		if fi, err := os.Stat(p + ".json"); err != nil || fi.Size() == 0 {
			t.Errorf("%s: no report written: %v", filepath.Base(p), err)
		}
	}
	code, stderr = runOnce(t, nil, "report", junk)
	if code != 2 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "not a memdiag recording") {
		t.Errorf("junk: exit %d, %q", code, stderr)
	}
	code, stderr = runOnce(t, nil, "report", "--format", "pdf", full)
	if code != 2 || !strings.Contains(stderr, "--format must be") {
		t.Errorf("bad format: exit %d, %q", code, stderr)
	}
}
