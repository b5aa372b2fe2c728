package dump

// Heap snapshots of Node.js targets, through the V8 inspector.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNoInspector means the target's inspector is not open and SIGUSR1
// cannot open it: the process does not catch SIGUSR1 (it is not Node.js,
// or runs with --disable-sigusr1), or handles it itself, or its inspector
// port is taken. The caller skips the heap snapshot, not the rest of the
// dump.
var ErrNoInspector = errors.New("the Node.js inspector cannot be opened")

// HeapSnapshotResult says what HeapSnapshot did.
type HeapSnapshotResult struct {
	Port            int   // the inspector's TCP port, in the target's network namespace; 0 when none was found
	OpenedByUs      bool  // the inspector was closed and memdiag opened it with SIGUSR1
	InspectorClosed bool  // memdiag closed the inspector it opened, and its socket is gone
	Bytes           int64 // bytes of snapshot written to w
}

// Bounds on the waits of HeapSnapshot, within the caller's deadline.
var (
	// inspectorOpenTimeout bounds the wait for the inspector's socket
	// after SIGUSR1. Node opens it within milliseconds, unless its
	// main thread is stuck in native code.
	inspectorOpenTimeout = 5 * time.Second
	// inspectorCloseTimeout bounds closing an inspector memdiag opened,
	// on a deadline of its own: an inspector left open lets anyone on
	// the host run code in the target, so it is closed even when the
	// caller's deadline has passed.
	inspectorCloseTimeout = 5 * time.Second
	// inspectorProbeTimeout bounds asking one socket whether it is an
	// inspector.
	inspectorProbeTimeout = 2 * time.Second
	// procPollInterval is how often /proc is read while waiting for a
	// socket to appear or go.
	procPollInterval = 10 * time.Millisecond
)

// inspectorCloseExpr closes the inspector from inside. Node's
// process._debugEnd, the function behind inspector.close() (the
// inspector module itself is out of reach: require is not defined in
// Runtime.evaluate), stops the inspector's server and ends its sessions.
// It is called from setImmediate, at the top of the event loop as user
// code calling inspector.close() would be, rather than inside the
// session's own message: there it works too (Node 20), but ends the
// session before the answer goes out. The expression answers false on a
// Node without it.
const inspectorCloseExpr = `typeof process._debugEnd === "function" ? (setImmediate(() => process._debugEnd()), true) : false`

// HeapSnapshot writes a V8 heap snapshot of the Node.js process pid to w,
// in the .heapsnapshot format Chrome DevTools' Memory tab loads. The
// snapshot streams to w chunk by chunk (about 100 KiB each) as V8
// serializes it, never whole in memory; a write error ends it. progress,
// when not nil, is called on the caller's goroutine as V8 reports how far
// it got (done of total), ending with done == total.
//
// When the target's inspector is open (it runs with --inspect, or was
// opened before), HeapSnapshot uses it and leaves it open. Otherwise it
// sends SIGUSR1, which makes Node open it (on 127.0.0.1:9229, or where
// --inspect-port says), takes the snapshot, then closes it again and
// checks its listening socket is gone. It refuses to send SIGUSR1 to a
// process that does not catch it, as the signal would end it. The port
// comes from the target's options (command line, NODE_OPTIONS); when it
// is 0 (picked by the kernel), finding an open inspector means asking
// each listening socket of the target for /json/list, the service's own
// included. Connections are made from inside the target's network
// namespace, so a target in a container is reached on its own loopback.
//
// While open, the inspector lets any local user run code in the target;
// Node writes "Debugger listening on ws://…", "Debugger attached." and
// the like to the target's stderr.
//
// Every wait is bounded by ctx, except closing an inspector it opened,
// which has a few seconds of its own (inspectorCloseTimeout), even after
// ctx has ended. When the inspector cannot be opened, the error wraps
// ErrNoInspector and nothing was written. The result says what was done
// even with an error: an inspector opened and not closed shows as
// OpenedByUs without InspectorClosed.
func HeapSnapshot(ctx context.Context, pid int, w io.Writer, progress func(done, total int)) (HeapSnapshotResult, error) {
	return HeapSnapshotIgnoring(ctx, pid, w, progress, nil)
}

// HeapSnapshotIgnoring is HeapSnapshot, calling ignore (when not nil) with
// the inspector's port before memdiag connects to it, so the caller can
// keep those connections out of the target's operations.
func HeapSnapshotIgnoring(ctx context.Context, pid int, w io.Writer, progress func(done, total int), ignore func(port int) error) (HeapSnapshotResult, error) {
	var res HeapSnapshotResult
	if ignore == nil {
		ignore = func(int) error { return nil }
	}
	cmdline, nodeOptions, err := readTargetArgs(pid)
	if err != nil {
		return res, fmt.Errorf("reading the command line of pid %d: %w", pid, err)
	}
	port := inspectorPortFromArgs(cmdline, nodeOptions)
	d, err := openNetnsDialer(pid)
	if err != nil {
		return res, err
	}
	defer d.Close()

	if port != 0 {
		if err := ignore(port); err != nil {
			return res, err
		}
	}
	var (
		sock  listenSocket
		path  string
		found bool
	)
	if port != 0 || inspectOptionGiven(cmdline, nodeOptions) {
		// On port 0 finding an open inspector means asking every
		// listening socket, the service's own included: only when an
		// option may have opened it.
		sock, path, found, err = findOpenInspector(ctx, pid, d, port)
		if err != nil {
			return res, err
		}
	}
	if !found {
		sock, err = openInspector(ctx, pid, port)
		if err != nil {
			return res, err
		}
		res.OpenedByUs = true
	}
	res.Port = int(sock.Addr.Port())
	if err := ignore(res.Port); err != nil {
		return res, err
	}

	if path == "" {
		path, err = inspectorTargetPath(ctx, d, sock.dialAddr())
	}
	if err == nil {
		res.Bytes, err = snapshotThroughInspector(ctx, d, sock, path, w, progress)
	}
	if err != nil {
		err = fmt.Errorf("heap snapshot of pid %d through its inspector on port %d: %w", pid, res.Port, err)
	}
	if res.OpenedByUs {
		cerr := closeInspector(ctx, pid, d, sock, path)
		res.InspectorClosed = cerr == nil
		err = errors.Join(err, cerr)
	}
	return res, err
}

// findOpenInspector looks for pid's open inspector among its listening
// sockets: the one on port, or, when the port is picked by the kernel
// (0), any that answers like an inspector, loopback ones first. Asking
// means a GET /json/list to the socket, which for the service's own
// sockets is a request to the service: only done when the port is 0.
func findOpenInspector(ctx context.Context, pid int, d *netnsDialer, port int) (sock listenSocket, path string, found bool, err error) {
	own, _, err := targetListeners(pid)
	if err != nil {
		return sock, "", false, fmt.Errorf("reading the sockets of pid %d: %w", pid, err)
	}
	var candidates []listenSocket
	for _, l := range own {
		if port == 0 || int(l.Addr.Port()) == port {
			candidates = append(candidates, l)
		}
	}
	slices.SortStableFunc(candidates, func(a, b listenSocket) int {
		al, bl := a.dialAddr().Addr().IsLoopback(), b.dialAddr().Addr().IsLoopback()
		switch {
		case al && !bl:
			return -1
		case bl && !al:
			return 1
		}
		return 0
	})
	var errs []error
	for _, l := range candidates {
		if ctx.Err() != nil {
			return sock, "", false, ctx.Err()
		}
		pctx, cancel := context.WithTimeout(ctx, inspectorProbeTimeout)
		p, err := inspectorTargetPath(pctx, d, l.dialAddr())
		cancel()
		if err == nil {
			return l, p, true, nil
		}
		errs = append(errs, err)
	}
	if port != 0 && len(candidates) > 0 {
		return sock, "", false, fmt.Errorf("%w: pid %d listens on port %d, its inspector port, but not as an inspector: %w", ErrNoInspector, pid, port, errors.Join(errs...))
	}
	return sock, "", false, nil
}

// openInspector sends SIGUSR1 to pid and waits for the inspector's
// listening socket: a new one of pid's, on port unless port is 0.
func openInspector(ctx context.Context, pid int, port int) (listenSocket, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return listenSocket{}, fmt.Errorf("reading the status of pid %d: %w", pid, err)
	}
	caught, ignored, err := sigusr1Disposition(status)
	if err != nil {
		return listenSocket{}, fmt.Errorf("reading the status of pid %d: %w", pid, err)
	}
	if !caught {
		why := "its default action would end the process"
		if ignored {
			why = "it ignores it"
		}
		return listenSocket{}, fmt.Errorf("%w: pid %d does not catch SIGUSR1 (%s), so it is not a Node.js process that SIGUSR1 can open the inspector of (or it runs with --disable-sigusr1); SIGUSR1 not sent", ErrNoInspector, pid, why)
	}
	before, _, err := targetListeners(pid)
	if err != nil {
		return listenSocket{}, fmt.Errorf("reading the sockets of pid %d: %w", pid, err)
	}
	old := make(map[uint64]bool, len(before))
	for _, l := range before {
		old[l.Inode] = true
	}
	if err := unix.Kill(pid, unix.SIGUSR1); err != nil {
		return listenSocket{}, fmt.Errorf("sending SIGUSR1 to pid %d: %w", pid, err)
	}

	wctx, cancel := context.WithTimeout(ctx, inspectorOpenTimeout)
	defer cancel()
	var sock listenSocket
	var all []listenSocket
	err = pollProc(wctx, func() (bool, error) {
		var own []listenSocket
		var err error
		own, all, err = targetListeners(pid)
		if err != nil {
			return false, fmt.Errorf("reading the sockets of pid %d: %w", pid, err)
		}
		for _, l := range own {
			if !old[l.Inode] && (port == 0 || int(l.Addr.Port()) == port) {
				sock = l
				return true, nil
			}
		}
		return false, nil
	})
	if err == nil {
		return sock, nil
	}
	if ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
		return listenSocket{}, err
	}
	msg := fmt.Sprintf("SIGUSR1 did not open the inspector of pid %d within %v: the service disables it (--disable-sigusr1) or handles SIGUSR1 itself", pid, inspectorOpenTimeout)
	if port != 0 {
		for _, l := range all {
			if int(l.Addr.Port()) == port {
				msg += fmt.Sprintf(", or port %d is taken by another process in its network namespace", port)
				break
			}
		}
	}
	return listenSocket{}, fmt.Errorf("%w: %s (if it opens later, it stays open)", ErrNoInspector, msg)
}

// snapshotThroughInspector takes the snapshot in a session of its own and
// streams its chunks to w. It returns the bytes written.
func snapshotThroughInspector(ctx context.Context, d *netnsDialer, sock listenSocket, path string, w io.Writer, progress func(done, total int)) (int64, error) {
	c, err := dialCDP(ctx, d, sock.dialAddr(), path)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if _, err := c.call(ctx, "HeapProfiler.enable", nil, nil); err != nil {
		return 0, err
	}
	// Once V8 has begun a snapshot it is taken whole, whatever happens
	// here: closing the session (or the inspector) while V8 still streams
	// chunks to it made the target crash (Node 20: a segmentation fault
	// in 1 of ~40 snapshots abandoned midway). So a failed write or a
	// canceled ctx stops the writing, not the reading: the rest of the
	// snapshot is read and dropped until V8 answers, within
	// snapshotDrainTimeout of ctx's end.
	var (
		written int64
		stop    error // why the snapshot is dropped from here on
	)
	dctx, dcancel := drainContext(ctx)
	defer dcancel()
	_, err = c.call(dctx, "HeapProfiler.takeHeapSnapshot", map[string]any{"reportProgress": true}, func(method string, params json.RawMessage) error {
		if stop == nil && ctx.Err() != nil {
			stop = ctx.Err()
		}
		if stop != nil {
			return nil
		}
		switch method {
		case "HeapProfiler.addHeapSnapshotChunk":
			var p struct {
				Chunk string `json:"chunk"`
			}
			if err := json.Unmarshal(params, &p); err != nil {
				return fmt.Errorf("decoding %s: %w", method, err)
			}
			n, err := io.WriteString(w, p.Chunk)
			written += int64(n)
			if err != nil {
				stop = fmt.Errorf("writing the snapshot: %w", err)
			}
		case "HeapProfiler.reportHeapSnapshotProgress":
			if progress == nil {
				return nil
			}
			var p struct {
				Done  int `json:"done"`
				Total int `json:"total"`
			}
			if err := json.Unmarshal(params, &p); err != nil {
				return fmt.Errorf("decoding %s: %w", method, err)
			}
			progress(p.Done, p.Total)
		}
		return nil
	})
	if err = errors.Join(stop, err); err != nil {
		return written, err
	}
	// The snapshot is whole. Leave the profiler as found, best effort:
	// the end of the session disables it anyway.
	_, _ = c.call(ctx, "HeapProfiler.disable", nil, nil)
	return written, nil
}

// snapshotDrainTimeout bounds how long a snapshot given up (a failed write,
// a canceled ctx) is still read to its end, from the moment ctx ends.
const snapshotDrainTimeout = 2 * time.Minute

// drainContext is ctx without its cancellation, ending snapshotDrainTimeout
// after ctx does.
func drainContext(ctx context.Context) (context.Context, context.CancelFunc) {
	dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(snapshotDrainTimeout, cancel)
		context.AfterFunc(dctx, func() { t.Stop() })
	})
	return dctx, func() { stop(); cancel() }
}

// closeInspector closes the inspector memdiag opened, in a session of its
// own (at path, or the one /json/list gives when path is empty), and
// waits until its listening socket is gone. It has a deadline of
// its own, inspectorCloseTimeout, counted from when the caller's ctx ends
// if that is earlier.
func closeInspector(ctx context.Context, pid int, d *netnsDialer, sock listenSocket, path string) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), inspectorCloseTimeout)
	defer cancel()
	err := func() error {
		if path == "" {
			var err error
			if path, err = inspectorTargetPath(cctx, d, sock.dialAddr()); err != nil {
				return err
			}
		}
		c, err := dialCDP(cctx, d, sock.dialAddr(), path)
		if err != nil {
			return err
		}
		defer c.Close()
		res, err := c.call(cctx, "Runtime.evaluate", map[string]any{"expression": inspectorCloseExpr, "returnByValue": true}, nil)
		if err != nil {
			return err
		}
		var r struct {
			Result struct {
				Value any `json:"value"`
			} `json:"result"`
			ExceptionDetails *struct {
				Text string `json:"text"`
			} `json:"exceptionDetails"`
		}
		if err := json.Unmarshal(res, &r); err != nil {
			return fmt.Errorf("decoding the answer to Runtime.evaluate: %w", err)
		}
		if r.ExceptionDetails != nil {
			return fmt.Errorf("evaluating %s: %s", inspectorCloseExpr, r.ExceptionDetails.Text)
		}
		if r.Result.Value != true {
			return errors.New("this Node.js has no process._debugEnd")
		}
		return nil
	}()
	if err == nil {
		err = pollProc(cctx, func() (bool, error) {
			inodes, err := socketInodes(pid)
			if errors.Is(err, os.ErrNotExist) {
				return true, nil // the process is gone, and its inspector with it
			}
			if err != nil {
				return false, err
			}
			return !inodes[sock.Inode], nil
		})
	}
	if err != nil {
		return fmt.Errorf("closing the inspector memdiag opened on port %d of pid %d, which may stay open: %w", sock.Addr.Port(), pid, err)
	}
	return nil
}

// pollProc calls check every procPollInterval until it says done, fails,
// or ctx ends.
func pollProc(ctx context.Context, check func() (bool, error)) error {
	t := time.NewTicker(procPollInterval)
	defer t.Stop()
	for {
		done, err := check()
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
