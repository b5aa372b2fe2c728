//go:build privileged

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// runOnce runs memdiag to completion and returns its exit code and stderr.
func runOnce(t *testing.T, cred *syscall.Credential, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(memdiagBin, args...)
	cmd.Dir = t.TempDir()
	if cred != nil {
		cmd.Dir = "/" // the test's temp dir is root's, 0700
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, stderr.String()
}

// TestBadInput: each bad input is one line on stderr and a non-zero exit,
// and nothing is written.
func TestBadInput(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	zombie := makeZombie(t)
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	for _, tc := range []struct {
		name string
		cred *syscall.Credential
		args []string
		code int
		want string
	}{
		{"no pid", nil, []string{"attach"}, 2, "attach needs --pid N"},
		{"nonexistent pid", nil, []string{"attach", "--pid", "4194303"}, 2, "no process with pid 4194303"},
		{"negative pid", nil, []string{"attach", "--pid", "-5"}, 2, "--pid must be a positive"},
		{"kernel thread", nil, []string{"attach", "--pid", "2"}, 2, "is a kernel thread"},
		{"exited process", nil, []string{"attach", "--pid", fmt.Sprint(zombie)}, 2, "has already exited"},
		{"unknown flag", nil, []string{"attach", "--frobnicate"}, 2, "flag provided but not defined: -frobnicate"},
		{"unknown command", nil, []string{"detach"}, 2, `unknown command "detach"`},
		{"bad interval", nil, []string{"attach", "--pid", "1", "--interval", "0s"}, 2, "--interval must be positive"},
		{"bad ringbuf", nil, []string{"attach", "--pid", "1", "--ringbuf-size", "5000"}, 2, "--ringbuf-size must be a power of two"},
		{"run without command", nil, []string{"run"}, 2, "run needs a command"},
		{"run missing command", nil, []string{"run", "--", "no-such-command-xyz"}, 127, `cannot run "no-such-command-xyz": not found in $PATH`},
		{"run missing path", nil, []string{"run", "/no/such/dir/cmd"}, 127, `cannot run "/no/such/dir/cmd": no such file`},
		{"run a directory", nil, []string{"run", "--", "/"}, 126, `cannot run "/": is a directory`},
		{"run not executable", nil, []string{"run", "--", notExecutable(t)}, 126, "permission denied"},
		{"duration without unit", nil, []string{"attach", "--pid", "1", "--duration", "5"}, 2, "--duration 5: give a unit, e.g. 5s"},
		{"duration garbage", nil, []string{"attach", "--pid", "1", "--duration", "soon"}, 2, "--duration soon: give a duration, e.g. 5s"},
		{"pid not a number", nil, []string{"attach", "--pid", "abc"}, 2, "--pid abc: give a process id, e.g. --pid 1234"},
		{"count not a number", nil, []string{"attach", "--pid", "1", "--keep-ops", "many"}, 2, "--keep-ops many: give a whole number"},
		{"bad size", nil, []string{"attach", "--pid", "1", "--growth-rss", "5XB"}, 2, "--growth-rss 5XB: give a size, e.g. 50MB"},
		{"bad rate", nil, []string{"attach", "--pid", "1", "--summary-external-rate", "fast"}, 2, "--summary-external-rate fast: give a size"},
		{"report flag after the file", nil, []string{"report", "/no/such.mdrec", "--format", "xml"}, 2, `--format must be text, json or html, got "xml"`},
		{"report two files", nil, []string{"report", "a", "b", "--format", "json"}, 2, "report takes one recording file"},
		{"live and quiet", nil, []string{"attach", "--pid", "1", "--live", "--quiet"}, 2, "give one of them"},
		{"native heap and exact external", nil, []string{"attach", "--pid", "1", "--native-heap", "--exact-external"}, 2, "give one of --native-heap and --exact-external"},
		{"completion shell", nil, []string{"completion", "fish"}, 2, `completion "fish": give bash or zsh`},
		{"fleet without selector", nil, []string{"fleet"}, 2, "fleet needs --select"},
		{"fleet bad selector", nil, []string{"fleet", "--select", "pod:web"}, 2, `unknown kind "pod"`},
		{"fleet one-target flag", nil, []string{"fleet", "--select", "namespace:shop", "--report-json", "r.json"}, 2, "--report-json traces one target"},
		{"fleet bound", nil, []string{"fleet", "--select", "namespace:shop", "--max-targets", "0"}, 2, "--max-targets must be from 1 to 256"},
		{"fleet labels without CRI", nil, []string{"fleet", "--select", "memdiag.io/trace=true", "--cri-socket", "/no/such.sock"}, 2, "needs the node's CRI socket"},
		{"fleet heap sampling", nil, []string{"fleet", "--select", "namespace:shop", "--heap-sampling", "v8"}, 2, "fleet mode does not sample runtime heaps yet"},
		{"fleet bad cgroup root", nil, []string{"fleet", "--select", "namespace:shop", "--cgroup-root", "/tmp"}, 2, "--cgroup-root /tmp: not a cgroup v2 directory"},
		{"not root", nobody, []string{"attach", "--pid", "1"}, 1, "memdiag needs root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stderr := runOnce(t, tc.cred, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr: %q", code, tc.code, stderr)
			}
			if lines := strings.Count(strings.TrimRight(stderr, "\n"), "\n") + 1; lines != 1 {
				t.Errorf("want a one-line error, got %d lines: %q", lines, stderr)
			}
			if !strings.Contains(stderr, tc.want) || !strings.HasPrefix(stderr, "memdiag: ") {
				t.Errorf("stderr %q, want 'memdiag: …%s…'", stderr, tc.want)
			}
		})
	}
}

// notExecutable is a file without the execute bit.
func notExecutable(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// makeZombie starts a process that exits at once and is not reaped until
// the test ends; it returns its pid once it has exited.
func makeZombie(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Wait() })
	fd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	// A pidfd turns readable when the process exits (it is a zombie then).
	if _, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 10000); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

// TestTLSOnNonNodeBinary: --tls on a binary without llhttp_execute that
// maps no libssl either is a one-line error, exit 2, and the target is
// untouched.
func TestTLSOnNonNodeBinary(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	w := startWorkload(t)
	code, stderr := runOnce(t, nil, "attach", "--pid", fmt.Sprint(w.pid), "--tls", "--log", filepath.Join(t.TempDir(), "log"))
	if code != 2 || !strings.Contains(stderr, "has no llhttp_execute symbol") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("exit %d, stderr %q; want 2 and one line about llhttp_execute", code, stderr)
	}
	w.do("anon 1M")
}

// TestMalformedConfig: a bad config is `file:line: message`, exit 2.
func TestMalformedConfig(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	cfg := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(cfg, []byte("categories:\n  - name: x\n    http: { path_prefix: nope }\n"), 0o600)
	code, stderr := runOnce(t, nil, "attach", "--pid", "1", "--config", cfg)
	if code != 2 || !strings.HasPrefix(stderr, "memdiag: "+cfg+":3: path_prefix must start with '/'") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}
