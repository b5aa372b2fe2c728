//go:build privileged

package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestQuickstart runs scripts/quickstart-check.sh: the README's quick
// start on a fresh clone as root without sudo (git clone, make build, a
// short make demo), each step asserted. It takes a minute or two (a clean
// build, npm ci for the Node demo), so it runs only with
// MEMDIAG_QUICKSTART=1.
func TestQuickstart(t *testing.T) {
	t.Parallel()
	if os.Getenv("MEMDIAG_QUICKSTART") != "1" {
		t.Skip("slow (a fresh clone, build and demo): run with MEMDIAG_QUICKSTART=1")
	}
	requireRoot(t)
	out, err := exec.Command("../../scripts/quickstart-check.sh").CombinedOutput()
	if err != nil {
		t.Fatalf("quickstart check: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "quickstart: ok\n") {
		t.Fatalf("quickstart check did not end with ok:\n%s", out)
	}
	t.Logf("%s", out)
}
