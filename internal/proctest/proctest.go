// Package proctest holds what the privileged end-to-end tests (cmd/memdiag,
// accuracy) do with the processes they start: start one and reap it,
// killing it when the test ends, and wait for a file it creates, with
// inotify and a deadline instead of sleeps.
package proctest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Start starts cmd and reaps it in the background: done closes when it has
// exited, *waitErr holding what Wait returned. The process is killed (if
// still running) and reaped when the test ends.
func Start(t testing.TB, cmd *exec.Cmd, waitErr *error) (done <-chan struct{}) {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := make(chan struct{})
	go func() {
		*waitErr = cmd.Wait()
		close(c)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-c
	})
	return c
}

// AttachDeadline bounds the wait for memdiag's ready file: a failure
// bound, not a synchronization. One attach takes ~3 s, mostly the kernel
// verifying the programs; several at once on two cores other work also
// loads took over 30 s (make test, 2026-12-07, load average 14).
const AttachDeadline = 2 * time.Minute

// WaitFile waits until path exists, watching its directory with inotify,
// for at most deadline; it gives up early when abort closes (the process
// that should create it has exited).
func WaitFile(path string, deadline time.Duration, abort <-chan struct{}) error {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if _, err := unix.InotifyAddWatch(fd, filepath.Dir(path), unix.IN_CREATE|unix.IN_MOVED_TO); err != nil {
		return err
	}
	end := time.Now().Add(deadline)
	buf := make([]byte, 4096)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-abort:
			return fmt.Errorf("the process exited before %s appeared", path)
		default:
		}
		left := time.Until(end)
		if left <= 0 {
			return fmt.Errorf("%s did not appear within %s", path, deadline)
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		// Wake at least every 100ms to notice abort.
		unix.Poll(fds, int(min(left, 100*time.Millisecond)/time.Millisecond))
		unix.Read(fd, buf)
	}
}

// RemoveCgroup removes the cgroup v2 directory dir once its last process
// has gone, for at most deadline: the kernel refuses (EBUSY) while it is
// populated, and says when that changes by modifying dir/cgroup.events,
// which this watches with inotify.
func RemoveCgroup(dir string, deadline time.Duration) error {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	events := filepath.Join(dir, "cgroup.events")
	if _, err := unix.InotifyAddWatch(fd, events, unix.IN_MODIFY); err != nil {
		if os.IsNotExist(err) {
			return nil // gone already
		}
		return err
	}
	end := time.Now().Add(deadline)
	buf := make([]byte, 4096)
	for {
		err := os.Remove(dir)
		if err == nil || os.IsNotExist(err) {
			return nil
		}
		left := time.Until(end)
		if left <= 0 {
			return fmt.Errorf("cgroup %s still busy after %s: %w", dir, deadline, err)
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		unix.Poll(fds, int(left/time.Millisecond)+1)
		unix.Read(fd, buf)
	}
}
