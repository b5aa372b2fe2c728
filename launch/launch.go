// Package launch starts the command of `memdiag run` held at a gate: a
// launcher process (memdiag itself, as the hidden subcommand Command)
// waits on fd 3 for one byte, sent once every probe is attached, and then
// execs the command, so nothing the command does is missed. Closing the
// gate without the byte makes the launcher exit without exec'ing.
//
// Exit statuses follow env(1) and time(1): 127 for a command not found,
// 126 for one found but not runnable, the command's own status otherwise
// (128+signal when a signal killed it). They travel as *Exit errors to
// cmd/memdiag, which picks every exit code.
package launch

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
)

// Command is the hidden subcommand the launcher runs as.
const Command = "__launch"

// Exit is an exit status for memdiag; Err, when not nil, is the one line
// to print.
type Exit struct {
	Code int
	Err  error
}

func (e *Exit) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}

func (e *Exit) Unwrap() error { return e.Err }

// LookPath finds the command; its error is an *Exit with 127 when it is
// not found, 126 when it is found but cannot be run.
func LookPath(name string) (string, error) {
	path, err := exec.LookPath(name)
	if err == nil {
		return path, nil
	}
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
		where := "no such file"
		if !strings.Contains(name, "/") {
			where = "not found in $PATH"
		}
		return "", &Exit{Code: 127, Err: fmt.Errorf("cannot run %q: %s", name, where)}
	}
	return "", &Exit{Code: 126, Err: fmt.Errorf("cannot run %q: %v", name, innermost(err))}
}

// innermost is the innermost error of a chain (the errno, not exec's
// repetition of the name).
func innermost(err error) error {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err
		}
		err = next
	}
}

// Cmd is a command started behind the gate.
type Cmd struct {
	cmd     *exec.Cmd
	gate    *os.File // the write end; closed by Release or Close
	done    chan struct{}
	waitErr error
}

// Start starts the launcher for the command at path (argv[0] its name),
// with memdiag's standard input and outputs. The command runs only after
// Release.
func Start(path string, argv []string) (*Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding memdiag's own binary: %w", err)
	}
	gateR, gateW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("creating the launch pipe: %w", err)
	}
	cmd := exec.Command(self, append([]string{Command, path}, argv...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{gateR}
	err = cmd.Start()
	gateR.Close()
	if err != nil {
		gateW.Close()
		return nil, fmt.Errorf("starting %s: %w", argv[0], err)
	}
	c := &Cmd{cmd: cmd, gate: gateW, done: make(chan struct{})}
	go func() {
		c.waitErr = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// Pid is the launcher's pid, the command's after the exec.
func (c *Cmd) Pid() int { return c.cmd.Process.Pid }

// Done is closed when the command (or the launcher) has exited.
func (c *Cmd) Done() <-chan struct{} { return c.done }

// Release lets the command run, and forwards sigs to it from then on.
func (c *Cmd) Release(sigs <-chan os.Signal) error {
	if _, err := c.gate.Write([]byte{1}); err != nil {
		return fmt.Errorf("releasing the command: %w", err)
	}
	c.gate.Close()
	go func() {
		for sig := range sigs {
			c.cmd.Process.Signal(sig)
		}
	}()
	return nil
}

// Close closes the gate (a launcher not released exits without exec'ing)
// and waits for the command to exit.
func (c *Cmd) Close() error {
	c.gate.Close()
	<-c.done
	return nil
}

// Status is the command's exit status as memdiag's, after Close: nil for
// 0, an *Exit otherwise.
func (c *Cmd) Status() error {
	var ee *exec.ExitError
	if errors.As(c.waitErr, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return &Exit{Code: 128 + int(ws.Signal())}
		}
		return &Exit{Code: ee.ExitCode()}
	}
	return c.waitErr
}

// Launcher is the launcher's side, args being [path, argv...]: wait at
// the gate (fd 3), then exec. It returns only on failure: an *Exit with no
// message when memdiag gave up, 127 or 126 when the exec failed.
func Launcher(args []string) error {
	if len(args) < 2 {
		return &Exit{Code: 2, Err: fmt.Errorf("%s is internal to memdiag run", Command)}
	}
	gate := os.NewFile(3, "gate")
	var b [1]byte
	if n, _ := gate.Read(b[:]); n != 1 {
		return &Exit{Code: 127} // memdiag gave up: say nothing, exec nothing
	}
	gate.Close()
	err := syscall.Exec(args[0], args[1:], os.Environ())
	// memdiag run exits with this status, as env(1) would.
	code := 126
	if errors.Is(err, syscall.ENOENT) {
		code = 127
	}
	return &Exit{Code: code, Err: fmt.Errorf("cannot run %q: %w", args[0], err)}
}

func init() {
	// The launcher must exec from its main thread: an exec from another
	// thread makes that thread the new leader and ends the old leader's
	// task, and the uprobes memdiag run attached for the launcher's pid
	// before the exec (--tls, --exact-external) follow that task.
	// Locking the main goroutine to the main thread here, in a package
	// init that runs on it before anything can move it, guarantees it.
	runtime.LockOSThread()
}
