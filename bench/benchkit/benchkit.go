// Package benchkit holds what memdiag's benchmark commands (./bench, the
// fault-storm and workload runs, and ./bench/http, the reference service
// under HTTP load) share: medians, CPU pinning, waiting for a ready file
// without polling, the machine's load.
package benchkit

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Median returns the median of xs (the mean of the middle two for an even
// count); xs is not modified.
func Median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	switch {
	case n == 0:
		return 0
	case n%2 == 1:
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Collect maps f over xs.
func Collect[T any](xs []T, f func(T) float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = f(x)
	}
	return out
}

// StartPinned starts cmd with its CPU affinity set to cpu alone, for every
// thread it will have: the fork happens on an OS thread pinned for it, and
// a child inherits the affinity of the thread that forked it.
func StartPinned(cmd *exec.Cmd, cpu int) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the pinned thread exits with this goroutine
		// instead of going back to the runtime's pool.
		runtime.LockOSThread()
		var set unix.CPUSet
		set.Set(cpu)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			errc <- fmt.Errorf("pinning to CPU %d: %w", cpu, err)
			return
		}
		errc <- cmd.Start()
	}()
	return <-errc
}

// Loadavg returns the first n load averages of /proc/loadavg (1, 5 and 15
// minutes), or "?".
func Loadavg(n int) string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) < n {
		return "?"
	}
	return strings.Join(f[:n], " ")
}

// KilledBySignal reports whether a Wait error says the process died of a
// signal.
func KilledBySignal(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled()
}

// DirWatch wakes its caller when a file is created in one directory.
type DirWatch struct{ fd int }

// NewDirWatch watches dir for new files (created or moved in).
func NewDirWatch(dir string) (*DirWatch, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_MOVED_TO); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("watching %s: %w", dir, err)
	}
	return &DirWatch{fd: fd}, nil
}

// Wait returns after a creation in the directory (created) or after
// timeout, having drained the pending events.
func (w *DirWatch) Wait(timeout time.Duration) (created bool, err error) {
	fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, int(timeout/time.Millisecond))
	if err != nil && !errors.Is(err, unix.EINTR) {
		return false, fmt.Errorf("waiting for the ready file: %w", err)
	}
	buf := make([]byte, 4096)
	for {
		if _, err := unix.Read(w.fd, buf); err != nil {
			return n > 0, nil // EAGAIN: drained
		}
	}
}

// Close stops watching.
func (w *DirWatch) Close() { unix.Close(w.fd) }
