package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/memdiag/memdiag/launch"
	"github.com/memdiag/memdiag/report"
	"github.com/memdiag/memdiag/session"
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

// runRun starts the command through a launcher that waits until the probes
// are attached before it execs, so nothing the command does is missed.
func runRun(ctx context.Context, argv []string, opts options) (err error) {
	path, err := launch.LookPath(argv[0])
	if err != nil {
		return err
	}
	var cl closers
	defer cl.closeInto(&err)
	if err := prepareOutputs(&opts, &cl); err != nil {
		return err
	}
	cmd, err := launch.Start(path, argv)
	if err != nil {
		return err
	}
	// Until the command is released, closing the gate makes the launcher
	// exit without exec'ing; memdiag waits for it. On --duration memdiag
	// stops tracing and lets the command run on: this waits for it too.
	cl.add(cmd.Close)
	// Uprobes go on the command's binary before it runs: the launcher's
	// pid is the command's after the exec.
	tr, _, err := openTracer(&opts, target.Probes{Launcher: cmd.Pid(), Exe: path, UprobePID: cmd.Pid()}, &cl)
	if err != nil {
		return err
	}
	tgt := report.Target{PID: uint32(cmd.Pid()), Comm: argv[0], Exe: path, Cmdline: argv, Mode: "run"}
	s := session.New(tr, opts.Config, tgt, report.Baseline{}, now())
	// Signals go to the command; memdiag reports when it has exited, as
	// time(1) does. Caught before the ready file says memdiag is there.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if _, err = s.Run(ctx, cmd.Done(), func() error { return cmd.Release(sigs) }, nil); err != nil {
		return err
	}
	cl.close()
	return cmd.Status()
}
