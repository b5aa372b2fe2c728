// Package cliargs holds what memdiag's command line needs beyond
// urfave/cli: flags accepted after a subcommand's arguments (Reorder), flag
// parse errors that name the expected format (FlagHint), and the shell
// completion scripts (Completion).
package cliargs

import (
	_ "embed"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/urfave/cli/v2"
)

// badValue is how the flag package says a value did not parse, compiled
// on first use (only after a bad flag).
var badValue = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^invalid value "(.*)" for flag -([^:]+): `)
})

// FlagHint turns the flag package's `invalid value "5" for flag -duration:
// parse error` into a line that names the expected format.
func FlagHint(err error, flags []cli.Flag) error {
	m := badValue().FindStringSubmatch(err.Error())
	if m == nil {
		return err
	}
	value, name := m[1], m[2]
	var f cli.Flag
	for _, fl := range flags {
		for _, n := range fl.Names() {
			if n == name {
				f = fl
			}
		}
	}
	var hint string
	switch f.(type) {
	case *cli.DurationFlag:
		hint = "give a duration, e.g. 5s, 2m or 1h30m"
		if _, perr := strconv.ParseFloat(value, 64); perr == nil {
			hint = fmt.Sprintf("give a unit, e.g. %ss", value)
		}
	case *cli.IntFlag, *cli.Int64Flag, *cli.UintFlag, *cli.Uint64Flag:
		hint = "give a whole number, e.g. --" + name + " 10"
		if name == "pid" {
			hint = "give a process id, e.g. --pid 1234"
		}
	default:
		return err
	}
	return fmt.Errorf("--%s %s: %s", name, value, hint)
}

// CompletionFlag is the flag urfave/cli's completion scripts append.
const CompletionFlag = "--generate-bash-completion"

// Reorder moves the flags given after a subcommand's positional
// arguments in front of them (`memdiag report FILE --format json`): the
// flag package stops at the first positional argument. `run` is left as
// it is, since what follows its command belongs to the command, and so is
// everything after `--`.
func Reorder(app *cli.App, args []string) []string {
	if len(args) < 3 || args[len(args)-1] == CompletionFlag {
		return args
	}
	i := 1
	for i < len(args) && strings.HasPrefix(args[i], "-") {
		i++ // memdiag's own flags (--help, --version)
	}
	if i >= len(args) {
		return args
	}
	cmd := app.Command(args[i])
	if cmd == nil || cmd.SkipFlagParsing || cmd.Name == "run" {
		return args
	}
	takesValue := map[string]bool{}
	for _, f := range cmd.Flags {
		_, isBool := f.(*cli.BoolFlag)
		for _, n := range f.Names() {
			takesValue[n] = !isBool
		}
	}
	var flags, positional []string
	rest := args[i+1:]
	for j := 0; j < len(rest); j++ {
		a := rest[j]
		switch {
		case a == "--":
			positional = append(positional, rest[j:]...)
			j = len(rest)
		case len(a) > 1 && strings.HasPrefix(a, "-"):
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if !strings.Contains(name, "=") && takesValue[name] && j+1 < len(rest) {
				j++
				flags = append(flags, rest[j])
			}
		default:
			positional = append(positional, a)
		}
	}
	out := append([]string{}, args[:i+1]...)
	out = append(out, flags...)
	if len(positional) > 0 && positional[0] != "--" {
		out = append(out, "--")
	}
	return append(out, positional...)
}

// The completion scripts ask memdiag for the words that may come next, as
// urfave/cli's autocomplete/bash_autocomplete and zsh_autocomplete do.
var (
	//go:embed completion.bash
	bashCompletion string
	//go:embed completion.zsh
	zshCompletion string
)

// Completion is the completion script for shell, bash or zsh.
func Completion(shell string) (string, error) {
	switch shell {
	case "bash":
		return bashCompletion, nil
	case "zsh":
		return zshCompletion, nil
	}
	return "", fmt.Errorf("completion %q: give bash or zsh", shell)
}
