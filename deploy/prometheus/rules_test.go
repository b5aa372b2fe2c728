package prometheus

import (
	"os/exec"
	"strings"
	"testing"
)

// promtool finds promtool, or skips the test saying how to install it.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not found: apt-get install prometheus (it ships promtool)")
	}
	return p
}

// TestRulesCheck runs `promtool check rules`: the file parses, every
// expression is valid PromQL, every template renders.
func TestRulesCheck(t *testing.T) {
	out, err := exec.Command(promtool(t), "check", "rules", "memdiag.rules.yml").CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "SUCCESS: 9 rules found") {
		t.Errorf("promtool check rules found another number of rules than the 9 the tests cover:\n%s", out)
	}
}

// TestRulesUnit runs the rules' unit tests with `promtool test rules`: each
// alert fires when it should and not before, and each recording rule gives
// the expected values.
func TestRulesUnit(t *testing.T) {
	out, err := exec.Command(promtool(t), "test", "rules", "memdiag.rules.test.yml").CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "SUCCESS") {
		t.Errorf("promtool test rules did not say SUCCESS:\n%s", out)
	}
}
