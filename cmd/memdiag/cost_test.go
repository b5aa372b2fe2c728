package main

import (
	"os"
	"strings"
	"testing"
)

// TestCostTextInREADME: the README states each mode's cost with the same
// lines as `memdiag --help` (COST), so the two cannot drift apart.
func TestCostTextInREADME(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(readme), "\n## What it costs\n")
	if !ok {
		t.Fatal("README.md has no \"## What it costs\" section")
	}
	_, block, ok := strings.Cut(sec, "```\n")
	if ok {
		block, _, ok = strings.Cut(block, "\n```")
	}
	if !ok {
		t.Fatal("README.md's \"What it costs\" has no code block")
	}
	// The README may write µs where the terminal text writes us.
	if got := strings.ReplaceAll(block, "µs", "us"); got != costText {
		t.Errorf("README.md's cost block differs from memdiag --help's COST:\nREADME:\n%s\nhelp:\n%s", got, costText)
	}
	if !strings.Contains(newApp(new(string)).CustomAppHelpTemplate, "COST:\n   "+strings.SplitN(costText, "\n", 2)[0]) {
		t.Error("memdiag --help does not show costText under COST:")
	}
}
