package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"

	"github.com/urfave/cli/v2"
)

// launchCommand is the hidden subcommand `run` starts: it waits on fd 3
// for one byte (the probes are attached), then execs the command. EOF
// without the byte means memdiag gave up: exit without exec'ing.
const launchCommand = "__launch"

func newLaunchCommand() *cli.Command {
	return &cli.Command{
		Name:            launchCommand,
		Hidden:          true,
		SkipFlagParsing: true,
		Action: func(c *cli.Context) error {
			args := c.Args().Slice()
			if len(args) < 2 {
				return usageErr("%s is internal to memdiag run", launchCommand)
			}
			gate := os.NewFile(3, "gate")
			var b [1]byte
			if n, _ := gate.Read(b[:]); n != 1 {
				return statusErr(127) // memdiag gave up: say nothing, exec nothing
			}
			gate.Close()
			err := syscall.Exec(args[0], args[1:], os.Environ())
			// memdiag run exits with this status, as env(1) would.
			code := 126
			if errors.Is(err, syscall.ENOENT) {
				code = 127
			}
			return &exitError{code: code, err: fmt.Errorf("cannot run %q: %w", args[0], err)}
		},
	}
}

func init() {
	// The launcher must exec from its main thread: an exec from another
	// thread makes that thread the new leader and ends the old leader's
	// task, and the uprobes memdiag run attached for the launcher's pid
	// before the exec (--tls, --exact-external) follow that task.
	// Locking the main goroutine to the main thread here, before anything
	// can move it, guarantees it.
	runtime.LockOSThread()
}
