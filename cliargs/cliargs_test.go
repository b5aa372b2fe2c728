package cliargs

import (
	"strings"
	"testing"
)

// TestCompletion: bash and zsh scripts call memdiag back; other shells are
// refused by name.
func TestCompletion(t *testing.T) {
	for _, sh := range []string{"bash", "zsh"} {
		s, err := Completion(sh)
		if err != nil || !strings.Contains(s, CompletionFlag) || !strings.Contains(s, "memdiag") {
			t.Errorf("%s: %v\n%s", sh, err, s)
		}
	}
	if _, err := Completion("fish"); err == nil || !strings.Contains(err.Error(), "fish") {
		t.Errorf("fish: %v", err)
	}
}
