package main

import (
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
)

// badValue is how the flag package says a value did not parse.
var badValue = regexp.MustCompile(`^invalid value "(.*)" for flag -([^:]+): `)

// flagHint turns the flag package's `invalid value "5" for flag -duration:
// parse error` into a line that names the expected format.
func flagHint(err error, flags []cli.Flag) error {
	m := badValue.FindStringSubmatch(err.Error())
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

// completionFlag is the flag urfave/cli's completion scripts append.
const completionFlag = "--generate-bash-completion"

// reorderArgs moves the flags given after a subcommand's positional
// arguments in front of them (`memdiag report FILE --format json`): the
// flag package stops at the first positional argument. `run` is left as
// it is, since what follows its command belongs to the command, and so is
// everything after `--`.
func reorderArgs(app *cli.App, args []string) []string {
	if len(args) < 3 || args[len(args)-1] == completionFlag {
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

// newCompletionCommand prints a shell's completion script.
func newCompletionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print the shell completion script for bash or zsh",
		UsageText: "memdiag completion bash|zsh\n\n   bash: source <(memdiag completion bash)   (or save it in /etc/bash_completion.d/memdiag)\n   zsh:  source <(memdiag completion zsh)",
		Action: func(c *cli.Context) error {
			if c.Args().Len() != 1 {
				return usageErr("completion takes a shell: memdiag completion bash|zsh")
			}
			switch sh := c.Args().First(); sh {
			case "bash":
				io.WriteString(c.App.Writer, bashCompletion)
			case "zsh":
				io.WriteString(c.App.Writer, zshCompletion)
			default:
				return usageErr("completion %q: give bash or zsh", sh)
			}
			return nil
		},
	}
}

// bashCompletion asks memdiag for the words that may come next, as
// urfave/cli's autocomplete/bash_autocomplete does.
const bashCompletion = `# memdiag completion for bash: source <(memdiag completion bash)
_memdiag_complete() {
  local cur opts
  COMPREPLY=()
  cur="${COMP_WORDS[COMP_CWORD]}"
  if [[ "$cur" == "-"* ]]; then
    opts=$("${COMP_WORDS[@]:0:$COMP_CWORD}" "$cur" --generate-bash-completion 2>/dev/null)
  else
    opts=$("${COMP_WORDS[@]:0:$COMP_CWORD}" --generate-bash-completion 2>/dev/null)
  fi
  COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  return 0
}
complete -o bashdefault -o default -F _memdiag_complete memdiag
`

// zshCompletion is the same for zsh, as urfave/cli's zsh_autocomplete.
const zshCompletion = `#compdef memdiag
# memdiag completion for zsh: source <(memdiag completion zsh)
_memdiag() {
  local -a opts
  local cur
  cur=${words[-1]}
  if [[ "$cur" == "-"* ]]; then
    opts=("${(@f)$(${words[@]:0:#words[@]-1} "${cur}" --generate-bash-completion 2>/dev/null)}")
  else
    opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion 2>/dev/null)}")
  fi
  if [[ "${opts[1]}" != "" ]]; then
    _describe 'values' opts
  else
    _files
  fi
}
if [[ "$(basename -- ${(%):-%x})" != "_memdiag" ]]; then
  compdef _memdiag memdiag
fi
`
