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
	"syscall"
	"time"

	"github.com/memdiag/memdiag/bench/benchkit"
)

// userHZ is the unit of utime and stime in /proc/PID/stat: USER_HZ, 100
// on every Linux architecture memdiag runs on.
const userHZ = 100

// errKilled marks a memdiag run ended by a signal the benchmark did not
// send: on a shared machine, someone's `pkill memdiag`. The round is run
// again rather than the benchmark failing.
var errKilled = errors.New("memdiag was killed by a signal the benchmark did not send")

// tracerRun is one `memdiag attach` on a workload.
type tracerRun struct {
	cmd      *exec.Cmd
	stderr   bytes.Buffer
	exited   chan struct{} // closed once cmd.Wait returned
	waitErr  error
	ready    string
	reportTo string
}

// attach starts memdiag pinned to cpu on pid, with its ready file, report
// and log under dir (names built from tag), and more flags extra, and
// waits for the ready file. It returns the attach time: memdiag's start to
// the ready file existing.
func attach(memdiagBin, dir, tag string, pid, cpu int, timeout time.Duration, extra ...string) (*tracerRun, time.Duration, error) {
	t := &tracerRun{
		ready:    filepath.Join(dir, tag+".ready"),
		reportTo: filepath.Join(dir, tag+".json"),
		exited:   make(chan struct{}),
	}
	t.cmd = exec.Command(memdiagBin, append([]string{"attach",
		"--pid", strconv.Itoa(pid),
		"--ready-file", t.ready,
		"--report-json", t.reportTo,
		"--log", filepath.Join(dir, tag+".log"),
		"--interval", "1h"}, extra...)...)
	t.cmd.Stdout = &t.stderr
	t.cmd.Stderr = &t.stderr

	w, err := benchkit.NewDirWatch(dir)
	if err != nil {
		return nil, 0, err
	}
	defer w.Close()
	start := time.Now()
	if err := benchkit.StartPinned(t.cmd, cpu); err != nil {
		return nil, 0, fmt.Errorf("starting memdiag: %w", err)
	}
	go func() {
		t.waitErr = t.cmd.Wait()
		close(t.exited)
	}()
	deadline := start.Add(timeout)
	for {
		if _, err := os.Stat(t.ready); err == nil {
			return t, time.Since(start), nil
		}
		select {
		case <-t.exited:
			if benchkit.KilledBySignal(t.waitErr) {
				return nil, 0, fmt.Errorf("%w before it was ready (%v)", errKilled, t.waitErr)
			}
			return nil, 0, fmt.Errorf("memdiag exited before it was ready (%v): %s", t.waitErr, t.output())
		default:
		}
		if time.Now().After(deadline) {
			t.kill()
			return nil, 0, fmt.Errorf("memdiag was not ready after %s: %s", timeout, t.output())
		}
		if _, err := w.Wait(50 * time.Millisecond); err != nil {
			t.kill()
			return nil, 0, err
		}
	}
}

func (t *tracerRun) output() string { return strings.TrimSpace(t.stderr.String()) }

// usage is what memdiag had used when it was read, just before it was
// asked to stop.
type usage struct {
	PeakRSS int64         // VmHWM, bytes
	CPU     time.Duration // utime + stime
}

// usage reads memdiag's peak resident memory and CPU time from /proc.
func (t *tracerRun) usage() (usage, error) {
	pid := t.cmd.Process.Pid
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return usage{}, fmt.Errorf("reading memdiag's status: %w", err)
	}
	hwm, err := vmHWM(string(status))
	if err != nil {
		return usage{}, err
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return usage{}, fmt.Errorf("reading memdiag's stat: %w", err)
	}
	ticks, err := cpuTicks(string(stat))
	if err != nil {
		return usage{}, err
	}
	return usage{PeakRSS: hwm, CPU: time.Duration(ticks) * time.Second / userHZ}, nil
}

// vmHWM returns the VmHWM line of a /proc/PID/status text, in bytes.
func vmHWM(status string) (int64, error) {
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parsing %q: %w", line, err)
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("no VmHWM line in memdiag's /proc status")
}

// cpuTicks returns utime + stime (fields 14 and 15) of a /proc/PID/stat
// line. The command name, field 2, may hold spaces and parentheses: the
// fields are counted after its last ')'.
func cpuTicks(stat string) (uint64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc stat line %q", stat)
	}
	// After ')': field 3 (state) is index 0, so utime is index 11.
	f := strings.Fields(stat[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc stat line %q", stat)
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("parsing /proc stat times: %w", err)
	}
	return utime + stime, nil
}

// jsonReport is what the benchmark reads of memdiag's JSON report (see
// README.md): the documented format, not memdiag's Go types, so the
// benchmark measures any memdiag binary.
type jsonReport struct {
	Faults     uint64            `json:"faults"`
	LostEvents uint64            `json:"lost_events"`
	Records    uint64            `json:"ring_records"`
	Health     map[string]uint64 `json:"health"`
	Categories []struct {
		Name string `json:"name"`
		Ops  uint64 `json:"ops"`
	} `json:"categories"`
}

// stop sends SIGTERM, waits for memdiag to write its report and exit 0,
// and returns the report.
func (t *tracerRun) stop(timeout time.Duration) (*jsonReport, error) {
	if err := t.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return nil, fmt.Errorf("stopping memdiag: %w", err)
	}
	select {
	case <-t.exited:
	case <-time.After(timeout):
		t.kill()
		return nil, fmt.Errorf("memdiag did not exit %s after SIGTERM: %s", timeout, t.output())
	}
	if t.waitErr != nil {
		// memdiag handles SIGTERM and exits 0: dying of a signal means
		// another one came.
		if benchkit.KilledBySignal(t.waitErr) {
			return nil, fmt.Errorf("%w (%v)", errKilled, t.waitErr)
		}
		return nil, fmt.Errorf("memdiag: %v: %s", t.waitErr, t.output())
	}
	data, err := os.ReadFile(t.reportTo)
	if err != nil {
		return nil, fmt.Errorf("reading memdiag's report: %w", err)
	}
	var r jsonReport
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("decoding memdiag's report %s: %w", t.reportTo, err)
	}
	return &r, nil
}

// kill ends memdiag on an error path and reaps it.
func (t *tracerRun) kill() {
	t.cmd.Process.Kill()
	<-t.exited
}
