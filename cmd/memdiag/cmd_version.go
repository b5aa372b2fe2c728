package main

import (
	"fmt"
	"io"
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
			printVersion(c.App.Writer)
			return nil
		},
	}
}

// printVersion is what `memdiag version` and `memdiag --version` print.
func printVersion(w io.Writer) {
	fmt.Fprintf(w, "memdiag %s (%s, %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
