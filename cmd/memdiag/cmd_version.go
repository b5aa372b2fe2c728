package main

import (
	"fmt"
	"runtime"

	"github.com/urfave/cli/v2"
)

func newVersionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print memdiag's version",
		Action: func(c *cli.Context) error {
			if c.Args().Len() > 0 {
				return usageErr("version takes no arguments")
			}
			fmt.Fprintf(c.App.Writer, "memdiag %s (%s, %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
}
