package main

import (
	"io"

	"github.com/urfave/cli/v2"

	"github.com/memdiag/memdiag/cliargs"
)

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
			script, err := cliargs.Completion(c.Args().First())
			if err != nil {
				return usageErr("%v", err)
			}
			_, err = io.WriteString(c.App.Writer, script)
			return err
		},
	}
}
