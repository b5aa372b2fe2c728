package target

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Process is a process watched for its exit through a pidfd: its pid
// cannot be reused under memdiag while the pidfd is open.
type Process struct {
	PID   int
	pidfd int
}

// Watch opens a pidfd on pid; Close releases it.
func Watch(pid int) (*Process, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("watching process %d: %w", pid, err)
	}
	return &Process{PID: pid, pidfd: fd}, nil
}

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	fds := []unix.PollFd{{Fd: int32(p.pidfd), Events: unix.POLLIN}}
	n, _ := unix.Poll(fds, 0)
	return n > 0
}

// Done returns a channel closed when the process exits (or the pidfd is
// closed under it).
func (p *Process) Done() <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fds := []unix.PollFd{{Fd: int32(p.pidfd), Events: unix.POLLIN}}
		for {
			n, err := unix.Poll(fds, -1)
			if n > 0 || err != nil && !errors.Is(err, unix.EINTR) {
				return
			}
		}
	}()
	return done
}

// Close closes the pidfd.
func (p *Process) Close() error { return unix.Close(p.pidfd) }
