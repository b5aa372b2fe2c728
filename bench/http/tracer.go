package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/memdiag/memdiag/bench/benchkit"
)

// syncBuffer is an output buffer a child writes while the benchmark reads
// it, with a signal when a given text first appears.
type syncBuffer struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	want   string
	seen   chan struct{} // closed when want appeared (never if want is "")
	closed bool
}

func newSyncBuffer(want string) *syncBuffer {
	return &syncBuffer{want: want, seen: make(chan struct{})}
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Write(p)
	if s.want != "" && !s.closed && strings.Contains(s.buf.String(), s.want) {
		s.closed = true
		close(s.seen)
	}
	return len(p), nil
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.TrimSpace(s.buf.String())
}

// errUnavailable marks a tracer that cannot run on this machine at all
// (it exited on its own before it was attached): the arm is shown with the
// tracer's message instead of numbers, and not tried again.
var errUnavailable = errors.New("tracer unavailable")

// unavailable wraps the tracer's own failure message.
type unavailable struct{ msg string }

func (u *unavailable) Error() string { return u.msg }
func (u *unavailable) Unwrap() error { return errUnavailable }

// errKilled marks a memdiag ended by a signal the benchmark did not send:
// on a shared machine, someone's `pkill memdiag`. The run is done again.
var errKilled = errors.New("the tracer was killed by a signal the benchmark did not send")

// errSlow marks a memdiag that did not attach within readyTimeout: on this
// shared machine, a moment of memory pressure from someone else's process
// (page cache evicted, memdiag's binary and node's read back from disk).
// The run is done again.
var errSlow = errors.New("too slow")

// tracer is one running tracer process: memdiag or memleak.
type tracer struct {
	p      *proc
	out    *syncBuffer
	report string // memdiag's --report-json
}

// attachMemdiag starts `memdiag attach` on pid with flags, pinned to
// tracerCPU, and waits for its ready file (inotify, with a deadline). The
// attach time runs from just before the fork to the file existing.
func (b *bench) attachMemdiag(bin string, pid int, flags []string, tag string) (*tracer, time.Duration, error) {
	ready := filepath.Join(b.dir, tag+".ready")
	t := &tracer{out: newSyncBuffer(""), report: filepath.Join(b.dir, tag+".json")}
	args := append([]string{"attach", "--pid", strconv.Itoa(pid),
		"--ready-file", ready, "--report-json", t.report, "--log", filepath.Join(b.dir, tag+".log"),
		"--interval", "1h", "--no-dumps"}, flags...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout = t.out
	cmd.Stderr = t.out
	w, err := benchkit.NewDirWatch(b.dir)
	if err != nil {
		return nil, 0, err
	}
	defer w.Close()
	start := time.Now()
	if t.p, err = b.kids.spawn(cmd, tracerCPU, "memdiag"); err != nil {
		return nil, 0, err
	}
	for {
		if _, err := os.Stat(ready); err == nil {
			return t, time.Since(start), nil
		}
		if t.p.done() {
			if benchkit.KilledBySignal(t.p.waitErr) {
				return nil, 0, fmt.Errorf("%w before it was ready (%v)", errKilled, t.p.waitErr)
			}
			return nil, 0, &unavailable{fmt.Sprintf("memdiag %s exited before it was ready (%v): %s", strings.Join(flags, " "), t.p.waitErr, t.out)}
		}
		if time.Since(start) > readyTimeout {
			t.p.stop(syscall.SIGKILL, time.Second)
			return nil, 0, fmt.Errorf("%w: memdiag was not ready after %s: %s", errSlow, readyTimeout, t.out)
		}
		if b.interrupted() {
			t.p.stop(syscall.SIGKILL, time.Second)
			return nil, 0, errInterrupted
		}
		if _, err := w.Wait(20 * time.Millisecond); err != nil {
			t.p.stop(syscall.SIGKILL, time.Second)
			return nil, 0, err
		}
	}
}

// memleakReady is what memleak prints once its BPF program compiled and
// loaded, just before it attaches its uprobes.
const memleakReady = "Attaching to pid"

// attachMemleak starts `memleak-bpfcc -p pid` pinned to tracerCPU and waits
// for its "Attaching to pid" line, then half a second for its uprobes.
func (b *bench) attachMemleak(pid int) (*tracer, time.Duration, error) {
	t := &tracer{out: newSyncBuffer(memleakReady)}
	cmd := exec.Command(b.memleak, "-p", strconv.Itoa(pid))
	cmd.Env = append(os.Environ(), "PYTHONUNBUFFERED=1")
	cmd.Stdout = t.out
	cmd.Stderr = t.out
	start := time.Now()
	var err error
	if t.p, err = b.kids.spawn(cmd, tracerCPU, "memleak-bpfcc"); err != nil {
		return nil, 0, err
	}
	select {
	case <-t.out.seen:
		attach := time.Since(start)
		time.Sleep(500 * time.Millisecond)
		if t.p.done() {
			return nil, 0, &unavailable{memleakFailure(t.p.waitErr, t.out.String())}
		}
		return t, attach, nil
	case <-t.p.exited:
		return nil, 0, &unavailable{memleakFailure(t.p.waitErr, t.out.String())}
	case <-time.After(readyTimeout):
		t.p.stop(syscall.SIGKILL, time.Second)
		return nil, 0, &unavailable{fmt.Sprintf("memleak-bpfcc did not attach within %s: %s", readyTimeout, t.out)}
	}
}

// memleakFailure keeps memleak's own words from its output: every line but
// the Python traceback's frames.
func memleakFailure(waitErr error, out string) string {
	var keep []string
	for _, line := range strings.Split(out, "\n") {
		if line == "" || strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t") || strings.HasPrefix(line, "Traceback ") {
			continue
		}
		keep = append(keep, strings.TrimSpace(line))
	}
	status := "exited"
	if waitErr != nil {
		status = waitErr.Error()
	}
	return fmt.Sprintf("memleak-bpfcc %s: %s", status, strings.Join(keep, " / "))
}

// report is what the benchmark reads of memdiag's JSON report (the
// documented format in README.md, not memdiag's Go types).
type report struct {
	DurationSeconds float64 `json:"duration_seconds"`
	LostEvents      uint64  `json:"lost_events"`
	Categories      []struct {
		Name string `json:"name"`
		Ops  uint64 `json:"ops"`
	} `json:"categories"`
	Health map[string]uint64 `json:"health"`
}

// ringEvents is the ring buffer records the report accounts for: every op
// is a begin and an end record. Fork, exec and exit records (a handful per
// run: the sync cycle starts no process) are left out.
func (r *report) ringEvents() uint64 {
	var n uint64
	for _, c := range r.Categories {
		n += 2 * c.Ops
	}
	return n
}

// stopMemdiag sends SIGTERM and waits for memdiag to write its report and
// exit 0.
func (t *tracer) stopMemdiag() (*report, time.Duration, error) {
	start := time.Now()
	if !t.p.stop(syscall.SIGTERM, stopTimeout) {
		return nil, 0, fmt.Errorf("memdiag did not exit %s after SIGTERM: %s", stopTimeout, t.out)
	}
	took := time.Since(start)
	if t.p.waitErr != nil {
		if benchkit.KilledBySignal(t.p.waitErr) {
			return nil, 0, fmt.Errorf("%w (%v)", errKilled, t.p.waitErr)
		}
		return nil, 0, fmt.Errorf("memdiag: %v: %s", t.p.waitErr, t.out)
	}
	data, err := os.ReadFile(t.report)
	if err != nil {
		return nil, 0, fmt.Errorf("reading memdiag's report: %w", err)
	}
	var r report
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, 0, fmt.Errorf("decoding memdiag's report %s: %w", t.report, err)
	}
	return &r, took, nil
}

// stopMemleak ends memleak as Ctrl-C would.
func (t *tracer) stopMemleak() {
	t.p.stop(syscall.SIGINT, 10*time.Second)
}
