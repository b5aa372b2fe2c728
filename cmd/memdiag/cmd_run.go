package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/memdiag/memdiag/report"
	"github.com/memdiag/memdiag/session"
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
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return lookPathErr(argv[0], err)
	}
	var cl closers
	defer cl.closeInto(&err)
	if err := prepareOutputs(&opts, &cl); err != nil {
		return err
	}
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
	err = cmd.Start()
	gateR.Close()
	if err != nil {
		gateW.Close()
		return fmt.Errorf("starting %s: %w", argv[0], err)
	}
	// Until the command is released, closing the gate makes the launcher
	// exit without exec'ing; memdiag waits for it.
	done := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(done)
	}()
	cl.add(func() error { gateW.Close(); <-done; return nil })

	// Uprobes go on the command's binary before it runs: the launcher's
	// pid is the command's after the exec.
	tr, _, err := openTracer(&opts, probes{launcher: cmd.Process.Pid, exe: path, uprobe: cmd.Process.Pid}, &cl)
	if err != nil {
		return err
	}
	target := report.Target{PID: uint32(cmd.Process.Pid), Comm: argv[0], Exe: path, Cmdline: argv, Mode: "run"}
	s := session.New(tr, opts.Config, target, report.Baseline{}, now())
	// Signals go to the command; memdiag reports when it has exited, as
	// time(1) does. Caught before the ready file says memdiag is there.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	release := func() error {
		if _, err := gateW.Write([]byte{1}); err != nil {
			return fmt.Errorf("releasing the command: %w", err)
		}
		gateW.Close()
		go func() {
			for sig := range sigs {
				cmd.Process.Signal(sig)
			}
		}()
		return nil
	}
	// On --duration memdiag stops tracing and lets the command run on:
	// the closers wait for it.
	_, err = trace(ctx, s, done, release, nil)
	if err != nil {
		return err
	}
	cl.close()
	return cmdStatus(waitErr, nil)
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

// lookPathErr is run's error for a command it cannot start: exit 127 when
// it is not found, 126 when it is found but cannot be run, as env(1),
// time(1) and shells do.
func lookPathErr(name string, err error) error {
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
		where := "no such file"
		if !strings.Contains(name, "/") {
			where = "not found in $PATH"
		}
		return &exitError{code: 127, err: fmt.Errorf("cannot run %q: %s", name, where)}
	}
	return &exitError{code: 126, err: fmt.Errorf("cannot run %q: %v", name, unwrapAll(err))}
}

// unwrapAll is the innermost error of a chain (the errno, not exec's
// repetition of the name).
func unwrapAll(err error) error {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err
		}
		err = next
	}
}
