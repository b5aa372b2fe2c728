package launch

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestLookPath: a command not found is 127, one found but not runnable
// 126, as env(1) says; a runnable one is found.
func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "data")
	if err := os.WriteFile(notExec, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		code int
	}{
		{"memdiag-no-such-command", 127},
		{filepath.Join(dir, "missing"), 127},
		{notExec, 126},
	} {
		_, err := LookPath(c.name)
		var e *Exit
		if !errors.As(err, &e) || e.Code != c.code || e.Err == nil {
			t.Errorf("%s: got %v, want exit %d with a message", c.name, err, c.code)
		}
	}
	if p, err := LookPath("sh"); err != nil || !filepath.IsAbs(p) {
		t.Errorf("sh: %q, %v", p, err)
	}
}

// TestLauncherNeedsCommand: the hidden subcommand run by hand without a
// command is bad usage (exit 2), not a wait on an fd that is not a gate.
func TestLauncherNeedsCommand(t *testing.T) {
	var e *Exit
	if err := Launcher([]string{"only-one"}); !errors.As(err, &e) || e.Code != 2 {
		t.Errorf("got %v, want exit 2", err)
	}
}
