// Command bench measures what memdiag costs the process it traces, and what
// it costs itself. `sudo make bench` runs it from the repository root, after
// `make build`.
//
// It compiles bench/workloads/faultstorm.c and runs it in two modes: a page
// fault storm and an mmap/munmap storm. For each, rounds interleave an
// untraced run and a run with `memdiag attach` on it (untraced, traced,
// untraced, traced, ...), so drift and other load on the machine hit both
// alike. The workload is pinned to one CPU, memdiag to another. In a traced
// run the workload starts and waits on stdin; memdiag attaches; once its
// ready file exists the workload is released, does a fixed amount of work
// and prints its own elapsed time; memdiag's peak RSS and CPU time are read
// from /proc and memdiag is stopped with SIGTERM, which writes its report.
//
// It prints one markdown table on stdout (progress goes to stderr) and
// leaves no files behind: everything it writes is in a temporary directory
// removed at the end.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// CPUs the workload and memdiag run on.
const (
	workloadCPU = 1
	memdiagCPU  = 0
)

// Timeouts that end a stuck run instead of hanging the benchmark.
const (
	readyTimeout = 30 * time.Second
	stopTimeout  = 30 * time.Second
)

func main() {
	os.Exit(run())
}

func run() int {
	var (
		rounds     = flag.Int("rounds", 9, "interleaved untraced/traced `pairs` per workload (at least 7)")
		memdiagBin = flag.String("memdiag", "bin/memdiag", "the memdiag `binary` to measure (make build)")
		faultIters = flag.Int("fault-iterations", 50, "fault storm: `N` times map 64 MiB, write each page, unmap")
		mmapIters  = flag.Int("mmap-iterations", 300000, "mmap storm: `N` times map 64 KiB and unmap it untouched")
		only       = flag.String("only", "", "run only the workload `NAME` (fault-storm or mmap-storm)")
	)
	flag.Parse()
	if err := checkSetup(*rounds, *memdiagBin); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 2
	}
	workloads := []workload{
		{
			name: "fault-storm",
			desc: fmt.Sprintf("%d × (mmap 64 MiB, write 1 byte per 4 KiB page, munmap)", *faultIters),
			args: []string{"-m", "fault", "-s", strconv.Itoa(64 << 20), "-n", strconv.Itoa(*faultIters)},
			rate: "faults",
		},
		{
			name: "mmap-storm",
			desc: fmt.Sprintf("%d × (mmap 64 KiB, munmap), untouched", *mmapIters),
			args: []string{"-m", "mmap", "-s", strconv.Itoa(64 << 10), "-n", strconv.Itoa(*mmapIters)},
			rate: "syscalls",
		},
	}
	if *only != "" {
		var picked []workload
		for _, w := range workloads {
			if w.name == *only {
				picked = append(picked, w)
			}
		}
		if picked == nil {
			fmt.Fprintf(os.Stderr, "bench: unknown workload %q (fault-storm or mmap-storm)\n", *only)
			return 2
		}
		workloads = picked
	}

	dir, err := os.MkdirTemp("", "memdiag-bench-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)

	// Ctrl-C or SIGTERM: the run in progress fails (its processes are
	// killed), and the temporary directory is still removed.
	b := &bench{memdiag: *memdiagBin, dir: dir, stop: make(chan os.Signal, 1)}
	signal.Notify(b.stop, os.Interrupt, syscall.SIGTERM)

	loadBefore := loadavg()
	start := time.Now()
	b.faultstorm, err = compileFaultstorm(dir)
	if err == nil {
		err = b.measure(workloads, *rounds)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "bench: done in %s\n", time.Since(start).Round(time.Second))
	printTable(os.Stdout, b.rows, *rounds, loadBefore, loadavg())
	return 0
}

// checkSetup refuses to start a benchmark that could not finish.
func checkSetup(rounds int, memdiagBin string) error {
	switch {
	case rounds < 7:
		return fmt.Errorf("-rounds %d: want at least 7 pairs, for medians worth reading", rounds)
	case os.Geteuid() != 0:
		return errors.New("memdiag needs root to trace: run `sudo make bench`")
	}
	if _, err := os.Stat(memdiagBin); err != nil {
		return fmt.Errorf("%s is missing: run `make build` first (or give -memdiag)", memdiagBin)
	}
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil || !set.IsSet(workloadCPU) || !set.IsSet(memdiagCPU) {
		return fmt.Errorf("the benchmark pins the workload to CPU %d and memdiag to CPU %d: it needs both", workloadCPU, memdiagCPU)
	}
	return nil
}

// bench holds what the runs share.
type bench struct {
	memdiag    string // memdiag binary
	faultstorm string // compiled workload
	dir        string // temporary directory for every file
	stop       chan os.Signal
	rows       []row
}

// interrupted reports a pending Ctrl-C or SIGTERM as an error.
func (b *bench) interrupted() error {
	select {
	case sig := <-b.stop:
		return fmt.Errorf("interrupted by %v", sig)
	default:
		return nil
	}
}

// measure runs every workload: one discarded warm-up pair, then rounds
// interleaved pairs.
func (b *bench) measure(workloads []workload, rounds int) error {
	for _, w := range workloads {
		r := row{w: w}
		for i := 0; i <= rounds; i++ {
			warmup := i == 0
			u, err := b.untraced(w)
			if err != nil {
				return fmt.Errorf("%s round %d untraced: %w", w.name, i, err)
			}
			if err := b.interrupted(); err != nil {
				return err
			}
			t, err := b.traced(w, i)
			if err != nil {
				return fmt.Errorf("%s round %d traced: %w", w.name, i, err)
			}
			if err := b.interrupted(); err != nil {
				return err
			}
			label := fmt.Sprintf("round %d", i)
			if warmup {
				label = "warm-up"
			} else {
				r.untraced = append(r.untraced, u)
				r.traced = append(r.traced, t)
			}
			fmt.Fprintf(os.Stderr, "bench: %s %s: untraced %.3fs (%s), traced %.3fs (%s), ×%.3f, memdiag %s peak, %.2f s CPU, attach %s, lost %d\n",
				w.name, label, u.Elapsed.Seconds(), rate(u.perSecond(w), w.rate),
				t.Elapsed.Seconds(), rate(t.perSecond(w), w.rate), t.Elapsed.Seconds()/u.Elapsed.Seconds(),
				mib(t.usage.PeakRSS), t.usage.CPU.Seconds(), t.attach.Round(time.Millisecond), t.lost)
			for _, warn := range t.warnings {
				fmt.Fprintf(os.Stderr, "bench: %s %s: warning: %s\n", w.name, label, warn)
			}
		}
		b.rows = append(b.rows, r)
	}
	return nil
}

// untraced runs the workload once with nothing attached, the same way as
// traced runs it.
func (b *bench) untraced(w workload) (result, error) {
	wl, err := startWorkload(b.faultstorm, w, workloadCPU)
	if err != nil {
		return result{}, err
	}
	res, err := wl.work()
	if err != nil {
		wl.kill()
		return result{}, err
	}
	return res, wl.finish()
}

// tracedResult is one traced run.
type tracedResult struct {
	result
	usage    usage         // memdiag's, just before SIGTERM
	attach   time.Duration // memdiag start to ready file
	lost     uint64        // lost_events of the report
	dropped  uint64        // health.dropped_events of the report
	warnings []string
}

// traced runs the workload once with memdiag attached.
func (b *bench) traced(w workload, round int) (tracedResult, error) {
	wl, err := startWorkload(b.faultstorm, w, workloadCPU)
	if err != nil {
		return tracedResult{}, err
	}
	tag := fmt.Sprintf("%s-%d", w.name, round)
	tr, attachTime, err := attach(b.memdiag, b.dir, tag, wl.pid, memdiagCPU, readyTimeout)
	if err != nil {
		wl.kill()
		return tracedResult{}, err
	}
	res, err := wl.work()
	if err != nil {
		tr.kill()
		wl.kill()
		return tracedResult{}, err
	}
	use, err := tr.usage()
	if err != nil {
		tr.kill()
		wl.kill()
		return tracedResult{}, err
	}
	rep, err := tr.stop(stopTimeout)
	if err != nil {
		wl.kill()
		return tracedResult{}, err
	}
	if err := wl.finish(); err != nil {
		return tracedResult{}, err
	}
	// Clean up as we go: memdiag never overwrites, and the names are
	// per round anyway.
	for _, ext := range []string{".ready", ".json", ".log"} {
		os.Remove(filepath.Join(b.dir, tag+ext))
	}
	t := tracedResult{result: res, usage: use, attach: attachTime, lost: rep.LostEvents, dropped: rep.Health.DroppedEvents}
	// memdiag counts every fault from attach on: fewer than the workload
	// counted itself means it missed some.
	if rep.Faults < res.Faults {
		t.warnings = append(t.warnings, fmt.Sprintf("memdiag counted %d faults, the workload %d during its work alone", rep.Faults, res.Faults))
	}
	if h := rep.Health; h.BucketOverflow+h.MMOverflow+h.TargetOverflow+h.PendingOverflow+h.DroppedEvents > 0 {
		t.warnings = append(t.warnings, fmt.Sprintf("memdiag's report has health counters set: %+v", h))
	}
	return t, nil
}

// loadavg returns the 1-minute load average, or "?".
func loadavg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}
