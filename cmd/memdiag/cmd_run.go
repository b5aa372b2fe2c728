package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/memdiag/memdiag/attribution"
	"github.com/memdiag/memdiag/report"
	"github.com/memdiag/memdiag/tracer"
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
func runRun(ctx context.Context, argv []string, opts sessionOptions) error {
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return usageErr("cannot run %q: %v", argv[0], err)
	}
	metricsLn, closeMetrics, err := prepareOutputs(opts)
	if err != nil {
		return err
	}
	defer closeMetrics()
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding memdiag's own binary: %w", err)
	}
	gateR, gateW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("creating the launch pipe: %w", err)
	}
	cmd := exec.Command(self, append([]string{launchCommand, path}, argv...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{gateR}
	if err := cmd.Start(); err != nil {
		gateR.Close()
		gateW.Close()
		return fmt.Errorf("starting %s: %w", argv[0], err)
	}
	gateR.Close()
	abort := func(err error) error {
		gateW.Close() // the launcher exits without exec'ing
		cmd.Wait()
		return err
	}

	tr, err := tracer.Open(opts.tracerConfig(cmd.Process.Pid, ""))
	if err != nil {
		return abort(err)
	}
	// Uprobes go on the command's binary before it runs: the launcher's
	// pid is the command's after the exec.
	if opts.tls {
		if err := tr.AttachTLS(cmd.Process.Pid, path); err != nil {
			tr.Close()
			return abort(usageErr("%v", err))
		}
	}
	if opts.exact {
		if err := tr.AttachExact(cmd.Process.Pid, path); err != nil {
			tr.Close()
			return abort(usageErr("%v", err))
		}
	}
	pid := uint32(cmd.Process.Pid)
	started := time.Now().Round(0) // wall time only: a replay must compute the same durations
	s := &session{
		opts:      opts,
		tr:        tr,
		acct:      attribution.New(pid, started),
		target:    report.Target{PID: pid, Comm: argv[0], Exe: path, Cmdline: argv, Mode: "run"},
		started:   started,
		metricsLn: metricsLn,
	}
	s.acct.SetOptions(opts.accountOptions())
	// Signals go to the command; memdiag reports when it has exited, as
	// time(1) does. Caught before the ready file says memdiag is there.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := s.start(); err != nil {
		tr.Close()
		return abort(err)
	}
	if _, err := gateW.Write([]byte{1}); err != nil {
		tr.Close()
		return abort(fmt.Errorf("releasing the command: %w", err))
	}
	gateW.Close()
	go func() {
		for sig := range sigs {
			cmd.Process.Signal(sig)
		}
	}()
	done := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(done)
	}()
	why := s.loop(ctx, done)
	if why != "the target exited" {
		// --duration: stop tracing, let the command run on, wait for it.
		err := s.finish(why)
		<-done
		return cmdStatus(waitErr, err)
	}
	return cmdStatus(waitErr, s.finish(why))
}

// cmdStatus returns the command's exit status as memdiag's, after a
// memdiag error if there was one.
func cmdStatus(waitErr, err error) error {
	if err != nil {
		return err
	}
	var ee *exec.ExitError
	if errors.As(waitErr, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return statusErr(128 + int(ws.Signal()))
		}
		return statusErr(ee.ExitCode())
	}
	if waitErr != nil {
		return waitErr
	}
	return nil
}
