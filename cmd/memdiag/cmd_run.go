package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/memdiag/memdiag/target"
)

func newRunCommand() *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "start a command traced from its first instruction; exit with its status",
		UsageText: "memdiag run [flags] -- CMD [ARGS...]",
		Flags:     commonFlags(),
		Action: func(c *cli.Context) error {
			if c.Args().Len() == 0 {
				return usageErr("run needs a command: memdiag run [flags] -- CMD [ARGS...]")
			}
			opts, err := optionsFrom(c)
			if err != nil {
				return err
			}
			return runRun(c.Context, c.Args().Slice(), opts)
		},
	}
}

// runRun runs the command traced from its first instruction
// (target.Run) and returns its status.
func runRun(ctx context.Context, argv []string, opts target.Options) (err error) {
	var cl target.Closers
	defer cl.CloseInto(&err)
	s, cmd, err := target.Run(argv, opts, &cl)
	if err != nil {
		return err
	}
	// Signals go to the command; memdiag reports when it has exited, as
	// time(1) does. Caught before the ready file says memdiag is there.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if _, err = s.Run(ctx, cmd.Done(), func() error { return cmd.Release(sigs) }, nil); err != nil {
		return err
	}
	cl.Close()
	return cmd.Status()
}
