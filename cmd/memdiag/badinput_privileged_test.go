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
		{"run missing command", nil, []string{"run", "--", "no-such-command-xyz"}, 2, `cannot run "no-such-command-xyz"`},
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

// TestTLSOnNonNodeBinary: --tls on a binary without llhttp_execute is a
// one-line error, exit 2, and the target is untouched.
func TestTLSOnNonNodeBinary(t *testing.T) {
	requireRoot(t)
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
	cfg := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(cfg, []byte("categories:\n  - name: x\n    http: { path_prefix: nope }\n"), 0o600)
	code, stderr := runOnce(t, nil, "attach", "--pid", "1", "--config", cfg)
	if code != 2 || !strings.HasPrefix(stderr, "memdiag: "+cfg+":3: path_prefix must start with '/'") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}
