package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/memdiag/memdiag/session"

	"github.com/memdiag/memdiag/safefile"
)

func newReportCommand() *cli.Command {
	return &cli.Command{
		Name:      "report",
		Usage:     "rebuild the reports of a recording (memdiag attach --record FILE), without root",
		UsageText: "memdiag report [--format text|json|html] [-o OUT] RECORDING",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "format", Value: "text", Usage: "`FORMAT` of the report: text, json or html"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write the report to `OUT` (a new file) instead of standard output"},
		},
		Action: func(c *cli.Context) error {
			if c.Args().Len() != 1 {
				return usageErr("report takes one recording file: memdiag report [--format text|json|html] [-o OUT] FILE")
			}
			format := c.String("format")
			if format != "text" && format != "json" && format != "html" {
				return usageErr("--format must be text, json or html, got %q", format)
			}
			out := c.String("output")
			if out != "" {
				if err := safefile.CheckNew(out); err != nil {
					return usageErr("%v", err)
				}
			}
			rp, err := session.Replay(c.Args().First())
			if err != nil {
				return usageErr("%v", err)
			}
			if rp.Warn != nil {
				fmt.Fprintf(os.Stderr, "memdiag: warning: %v; reporting what was readable\n", rp.Warn)
			}
			data, err := session.Render(rp.Report(), format)
			if err != nil {
				return err
			}
			if out == "" {
				_, err = c.App.Writer.Write(data)
				return err
			}
			return safefile.WriteNew(out, data)
		},
	}
}
