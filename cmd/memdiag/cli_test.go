package main

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/memdiag/memdiag/cliargs"
)

// TestReorderArgs: flags after a subcommand's arguments move in front of
// them; run's command line and what follows -- stay as they are.
func TestReorderArgs(t *testing.T) {
	var unknown string
	app := newApp(&unknown)
	for _, c := range []struct{ in, want string }{
		{"memdiag report run.rec --format json", "memdiag report --format json -- run.rec"},
		{"memdiag report run.rec -o out.html --format=html", "memdiag report -o out.html --format=html -- run.rec"},
		{"memdiag report --format json run.rec", "memdiag report --format json -- run.rec"},
		{"memdiag report -- -odd.rec --format json", "memdiag report -- -odd.rec --format json"},
		{"memdiag run ls --quiet", "memdiag run ls --quiet"},
		{"memdiag attach --pid 1 --no-dumps extra", "memdiag attach --pid 1 --no-dumps -- extra"},
		{"memdiag report run.rec --generate-bash-completion", "memdiag report run.rec --generate-bash-completion"},
		{"memdiag --version", "memdiag --version"},
	} {
		got := strings.Join(cliargs.Reorder(app, strings.Fields(c.in)), " ")
		if got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.in, got, c.want)
		}
	}
}

// TestFlagHint: the flag package's parse errors name the expected format.
func TestFlagHint(t *testing.T) {
	flags := commonFlags()
	for _, c := range []struct{ in, want string }{
		{`invalid value "5" for flag -duration: parse error`, "--duration 5: give a unit, e.g. 5s"},
		{`invalid value "1.5" for flag -interval: parse error`, "--interval 1.5: give a unit, e.g. 1.5s"},
		{`invalid value "x" for flag -keep-ops: parse error`, "--keep-ops x: give a whole number, e.g. --keep-ops 10"},
		{`flag provided but not defined: -x`, "flag provided but not defined: -x"},
	} {
		if got := cliargs.FlagHint(errors.New(c.in), flags).Error(); got != c.want {
			t.Errorf("%s: got %q, want %q", c.in, got, c.want)
		}
	}
	pid := newAttachCommand().Flags
	if got := cliargs.FlagHint(errors.New(`invalid value "abc" for flag -pid: parse error`), pid).Error(); got != "--pid abc: give a process id, e.g. --pid 1234" {
		t.Errorf("pid: %q", got)
	}
	if !slices.ContainsFunc(flags, func(f cli.Flag) bool { return f.Names()[0] == "quiet" }) {
		t.Error("no --quiet among the common flags")
	}
}
