package main

import (
	"fmt"
	"math"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/memdiag/memdiag/heapsnap"
)

func newDiffCommand() *cli.Command {
	return &cli.Command{
		Name:      "diff",
		Usage:     "compare two heap snapshots of one process: which objects grew and who holds them",
		UsageText: "memdiag diff [--format text|json] [--top N] A.heapsnapshot B.heapsnapshot",
		Description: "A is the earlier snapshot (a threshold dump, or any .heapsnapshot), B the later one.\n" +
			"Groups are ranked by the memory that their objects present in A keep in new objects of B,\n" +
			"each with a retainer path from a GC root. Needs no root; memory: about 0.7x the larger file.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "format", Value: "text", Usage: "`FORMAT` of the output: text or json"},
			&cli.IntFlag{Name: "top", Value: 20, Usage: "show the `N` groups that grew most"},
		},
		Action: func(c *cli.Context) error {
			if c.Args().Len() != 2 {
				return usageErr("diff takes two heap snapshots: memdiag diff [--format text|json] [--top N] A.heapsnapshot B.heapsnapshot")
			}
			format := c.String("format")
			if format != "text" && format != "json" {
				return usageErr("--format must be text or json, got %q", format)
			}
			top := c.Int("top")
			if top < 1 {
				return usageErr("--top must be at least 1, got %d", top)
			}
			a, b := c.Args().Get(0), c.Args().Get(1)
			if err := heapsnap.CheckFiles(a, b); err != nil {
				return usageErr("%v", err)
			}
			// The snapshot arrays are the live heap here: lift the small
			// limit memdiag keeps while tracing, keep GC frequent.
			debug.SetMemoryLimit(math.MaxInt64)
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			opts := heapsnap.Options{Top: top}
			var clearLine func()
			opts.Progress, clearLine = heapsnap.StderrProgress("memdiag: ")
			d, err := heapsnap.DiffFiles(ctx, a, b, opts)
			clearLine()
			if err != nil {
				if ctx.Err() != nil {
					return &exitError{code: 1, err: fmt.Errorf("diff interrupted")}
				}
				return usageErr("%v", err)
			}
			out := d.Text()
			if format == "json" {
				if out, err = d.JSON(); err != nil {
					return err
				}
			}
			_, err = c.App.Writer.Write(out)
			return err
		},
	}
}
