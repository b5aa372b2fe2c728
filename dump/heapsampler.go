package dump

// V8's sampling heap profiler, kept running in a Node.js target over its
// inspector, so memdiag can join its samples with operations.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/memdiag/memdiag/event"
)

// HeapSampler is a session on a Node.js target's inspector that keeps V8's
// sampling heap profiler running (HeapProfiler.startSampling, keeping only
// samples of objects still alive) until Close. Its methods are not safe for
// concurrent use.
//
// While it runs, the inspector is open: on loopback (127.0.0.1:9229 unless
// the service chose another port) in the target's network namespace, where
// any local process could connect and run code in the target. Close closes
// the inspector again when memdiag opened it.
type HeapSampler struct {
	pid        int
	d          *netnsDialer
	sock       listenSocket
	path       string
	c          *cdpConn
	openedByUs bool
	// Port is the inspector's port in the target's network namespace.
	Port int
	// Interval is the sampling interval in bytes.
	Interval uint64
}

// StartHeapSampler opens (or finds) the inspector of Node.js process pid,
// connects, calls ready with the inspector's port (the caller attaches its
// uprobe, resets its sample count and ignores the port's connections), then
// starts sampling every interval bytes. On error, whatever it opened is
// closed again.
func StartHeapSampler(ctx context.Context, pid int, interval uint64, ready func(port int) error) (*HeapSampler, error) {
	cmdline, nodeOptions, err := readTargetArgs(pid)
	if err != nil {
		return nil, fmt.Errorf("reading the command line of pid %d: %w", pid, err)
	}
	port := inspectorPortFromArgs(cmdline, nodeOptions)
	d, err := openNetnsDialer(pid)
	if err != nil {
		return nil, err
	}
	h := &HeapSampler{pid: pid, d: d, Interval: interval}
	var (
		sock  listenSocket
		path  string
		found bool
	)
	if port != 0 || inspectOptionGiven(cmdline, nodeOptions) {
		// An inspector may be open already. On port 0 finding it means
		// asking every listening socket, the service's own included (a
		// request of memdiag's to the service): only when it may be open.
		sock, path, found, err = findOpenInspector(ctx, pid, d, port)
	}
	if err == nil && !found {
		sock, err = openInspector(ctx, pid, port)
		h.openedByUs = err == nil
	}
	if err != nil {
		d.Close()
		return nil, err
	}
	h.sock, h.Port = sock, int(sock.Addr.Port())
	err = func() error {
		if err := ready(h.Port); err != nil {
			return err
		}
		if path == "" {
			if path, err = inspectorTargetPath(ctx, d, sock.dialAddr()); err != nil {
				return err
			}
		}
		h.path = path
		if h.c, err = dialCDP(ctx, d, sock.dialAddr(), path); err != nil {
			return err
		}
		if _, err := h.c.call(ctx, "HeapProfiler.enable", nil, nil); err != nil {
			return err
		}
		_, err := h.c.call(ctx, "HeapProfiler.startSampling", map[string]any{
			"samplingInterval":                 interval,
			"includeObjectsCollectedByMajorGC": false,
			"includeObjectsCollectedByMinorGC": false,
		}, nil)
		return err
	}()
	if err != nil {
		return nil, errors.Join(fmt.Errorf("starting V8 heap sampling in pid %d: %w", pid, err), h.Close(ctx))
	}
	return h, nil
}

// Live collects garbage in the target when collect is set (a full GC: its
// pause is the price of an exact answer), then returns the samples still
// alive, by ordinal, each with the bytes it stands for, and V8's count of
// live heap bytes after the collection.
func (h *HeapSampler) Live(ctx context.Context, collect bool) ([]event.LiveSample, int64, error) {
	if h.c == nil {
		return nil, 0, errors.New("the heap sampler is closed")
	}
	if collect {
		if _, err := h.c.call(ctx, "HeapProfiler.collectGarbage", nil, nil); err != nil {
			return nil, 0, err
		}
	}
	used, err := h.heapUsed(ctx)
	if err != nil {
		return nil, 0, err
	}
	raw, err := h.c.call(ctx, "HeapProfiler.getSamplingProfile", nil, nil)
	if err != nil {
		return nil, 0, err
	}
	live, err := parseSamplingProfile(raw)
	return live, used, err
}

// Baseline collects garbage and returns V8's live heap bytes: the heap as
// sampling starts.
func (h *HeapSampler) Baseline(ctx context.Context) (int64, error) {
	if _, err := h.c.call(ctx, "HeapProfiler.collectGarbage", nil, nil); err != nil {
		return 0, err
	}
	return h.heapUsed(ctx)
}

func (h *HeapSampler) heapUsed(ctx context.Context) (int64, error) {
	raw, err := h.c.call(ctx, "Runtime.getHeapUsage", nil, nil)
	if err != nil {
		return 0, err
	}
	var u struct {
		UsedSize float64 `json:"usedSize"`
	}
	if err := json.Unmarshal(raw, &u); err != nil {
		return 0, fmt.Errorf("decoding Runtime.getHeapUsage: %w", err)
	}
	return int64(u.UsedSize), nil
}

// parseSamplingProfile takes the samples out of getSamplingProfile's answer;
// the call tree is not needed.
func parseSamplingProfile(raw json.RawMessage) ([]event.LiveSample, error) {
	var p struct {
		Profile struct {
			Samples []struct {
				Size    float64 `json:"size"`
				Ordinal float64 `json:"ordinal"`
			} `json:"samples"`
		} `json:"profile"`
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, fmt.Errorf("decoding the sampling profile: %w", err)
	}
	out := make([]event.LiveSample, 0, len(p.Profile.Samples))
	for _, s := range p.Profile.Samples {
		if s.Ordinal < 1 || s.Size < 0 {
			return nil, fmt.Errorf("decoding the sampling profile: a sample with ordinal %v and size %v", s.Ordinal, s.Size)
		}
		out = append(out, event.LiveSample{Ordinal: uint64(s.Ordinal), Bytes: int64(s.Size)})
	}
	slices.SortFunc(out, func(a, b event.LiveSample) int {
		switch {
		case a.Ordinal < b.Ordinal:
			return -1
		case a.Ordinal > b.Ordinal:
			return 1
		}
		return 0
	})
	return out, nil
}

// Close stops sampling, ends the session and, when memdiag opened the
// inspector, closes it and waits until its socket is gone (with a deadline
// of its own even after ctx ended). It is safe to call more than once.
func (h *HeapSampler) Close(ctx context.Context) error {
	var errs []error
	if h.c != nil {
		_, err := h.c.call(ctx, "HeapProfiler.stopSampling", nil, nil)
		if err != nil && !errors.Is(err, errCDPClosed) {
			errs = append(errs, err)
		}
		h.c.Close()
		h.c = nil
	}
	if h.openedByUs {
		h.openedByUs = false
		errs = append(errs, closeInspector(ctx, h.pid, h.d, h.sock, h.path))
	}
	if h.d != nil {
		h.d.Close()
		h.d = nil
	}
	return errors.Join(errs...)
}

// inspectOptionGiven reports whether the target was started with an option
// that opens the inspector (--inspect, --inspect-brk, --inspect-wait;
// --inspect-port alone only sets where SIGUSR1 opens it).
func inspectOptionGiven(cmdline []string, nodeOptions string) bool {
	var opts []string
	if len(cmdline) > 1 {
		for _, a := range cmdline[1:] {
			if !strings.HasPrefix(a, "-") || a == "--" {
				break // the script and its own arguments
			}
			opts = append(opts, a)
		}
	}
	for _, a := range append(opts, splitNodeOptions(nodeOptions)...) {
		for _, o := range []string{"--inspect", "--inspect-brk", "--inspect-wait"} {
			if a == o || strings.HasPrefix(a, o+"=") {
				return true
			}
		}
	}
	return false
}
