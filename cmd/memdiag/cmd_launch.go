package main

import (
	"github.com/urfave/cli/v2"

	"github.com/memdiag/memdiag/launch"
)

// newLaunchCommand is the hidden subcommand `run` starts (package launch).
func newLaunchCommand() *cli.Command {
	return &cli.Command{
		Name:            launch.Command,
		Hidden:          true,
		SkipFlagParsing: true,
		Action:          func(c *cli.Context) error { return launch.Launcher(c.Args().Slice()) },
	}
}
