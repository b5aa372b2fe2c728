// Command bench measures what memdiag costs the process it traces, and what
// it costs itself. `sudo make bench` runs it from the repository root, after
// `make build`; BENCHMARKS.md records a run and explains the numbers.
//
// It compiles bench/workloads/faultstorm.c and runs it in two modes: a page
// fault storm and an mmap/munmap storm. For each, one warm-up pair and then
// -rounds pairs interleave an untraced run and a run with `memdiag attach`
// on it (untraced, traced, untraced, traced, ...), so drift and other load
// on the machine hit both alike. The workload is pinned to CPU 1, memdiag to
// CPU 0. In a traced run the workload starts and waits on stdin; memdiag
// attaches; once its ready file exists (inotify) the workload is released,
// does a fixed amount of work and prints its own elapsed and CPU time;
// memdiag's peak RSS (VmHWM) and CPU time are read from /proc, and memdiag is
// stopped with SIGTERM and writes its JSON report, whose lost_events is kept.
//
// On a shared machine a pair is run again when memdiag was killed from
// outside, or when another memdiag had its programs loaded during the pair:
// they run on every page fault of every process, the untraced runs' too.
// With -bystander, memdiag is attached to an idle process instead of the
// workload: that measures what tracing costs the processes it does not trace.
//
// Then, record storms (storm.go, issue #15): bench/workloads/reqstorm.c's
// server traced, its client sending keep-alive requests paced at each of
// -storm-rates requests/s (two ring buffer records a request), and what
// memdiag read and lost.
//
// It prints markdown tables on stdout (progress goes to stderr) and
// leaves no files behind: everything it writes is in a temporary directory
// removed at the end.
package main

import (
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/memdiag/memdiag/bench/benchkit"
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
		faultIters = flag.Int("fault-iterations", 500, "fault storm: `N` times map a region, write each page, unmap")
		faultMiB   = flag.Int("fault-mib", 4, "fault storm: region size in `MiB`")
		mmapIters  = flag.Int("mmap-iterations", 200000, "mmap storm: `N` times map 64 KiB and unmap it untouched")
		readIters  = flag.Int("read-iterations", 400000, "read storm: `N` one-byte reads from /dev/zero")
		only       = flag.String("only", "", "run only the workload `NAME` (fault-storm, mmap-storm, read-storm or record-storm)")
		stormRates = flag.String("storm-rates", "25000,50000,75000", "record storms: client `RATES` in requests/s, comma-separated (two ring buffer records a request)")
		stormSecs  = flag.Float64("storm-seconds", 3, "record storms: `SECONDS` of requests per storm")
		stormRuns  = flag.Int("storm-runs", 2, "record storms: `N` storms per rate")
		stormRing  = flag.Int("storm-ringbuf", 0, "record storms: memdiag's --ringbuf-size `BYTES` (0: memdiag's default)")
		bystander  = flag.Bool("bystander", false, "attach memdiag to an idle process instead of the workload: what tracing costs the processes it does not trace")
	)
	flag.Parse()
	if err := checkSetup(*rounds, *memdiagBin); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 2
	}
	workloads := []workload{
		{
			name: "fault-storm",
			desc: fmt.Sprintf("%d × (mmap %d MiB, write 1 byte per 4 KiB page, munmap)", *faultIters, *faultMiB),
			args: []string{"-m", "fault", "-s", strconv.Itoa(*faultMiB << 20), "-n", strconv.Itoa(*faultIters)},
			rate: "faults",
		},
		{
			name: "mmap-storm",
			desc: fmt.Sprintf("%d × (mmap 64 KiB, munmap), untouched", *mmapIters),
			args: []string{"-m", "mmap", "-s", strconv.Itoa(64 << 10), "-n", strconv.Itoa(*mmapIters)},
			rate: "syscalls",
		},
		{
			name: "read-storm",
			desc: fmt.Sprintf("%d × read 1 byte from /dev/zero", *readIters),
			args: []string{"-m", "read", "-n", strconv.Itoa(*readIters)},
			rate: "syscalls",
		},
	}
	rates, err := parseRates(*stormRates)
	if err != nil || *stormSecs <= 0 || *stormRuns < 1 {
		fmt.Fprintf(os.Stderr, "bench: -storm-rates %q, -storm-seconds %g, -storm-runs %d: want rates, seconds > 0 and runs >= 1 (%v)\n", *stormRates, *stormSecs, *stormRuns, err)
		return 2
	}
	if *only == "record-storm" {
		workloads = nil
	} else if *only != "" {
		rates = nil
		var picked []workload
		for _, w := range workloads {
			if w.name == *only {
				picked = append(picked, w)
			}
		}
		if picked == nil {
			fmt.Fprintf(os.Stderr, "bench: unknown workload %q (fault-storm, mmap-storm, read-storm or record-storm)\n", *only)
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
	b := &bench{
		memdiag: *memdiagBin, dir: dir, bystander: *bystander, stop: make(chan os.Signal, 1),
		retriesLeft: retryBudget * (*rounds + 1) * len(workloads), stormRing: *stormRing,
		start: time.Now(),
	}
	signal.Notify(b.stop, os.Interrupt, syscall.SIGTERM)

	loadBefore := benchkit.Loadavg(1)
	b.faultstorm, err = compileFaultstorm(dir)
	if err == nil {
		b.reqstorm, err = compileReqstorm(dir)
	}
	if err == nil {
		err = b.measure(workloads, *rounds)
	}
	if err == nil && len(rates) > 0 && !b.bystander {
		err = b.storms(rates, *stormSecs, *stormRuns)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "bench: done in %s\n", time.Since(b.start).Round(time.Second))
	version := memdiagVersion(*memdiagBin)
	if len(b.rows) > 0 {
		printTable(os.Stdout, b.rows, tableInfo{
			rounds: *rounds, bystander: *bystander, version: version,
			loadBefore: loadBefore, loadAfter: benchkit.Loadavg(1),
		})
	}
	if len(b.stormRows) > 0 {
		printStormTable(os.Stdout, b.stormRows, *stormSecs, version, *stormRing)
	}
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
	reqstorm   string // compiled record storm (storm.go)
	stormRing  int    // memdiag's --ringbuf-size in record storms (0: its default)
	dir        string // temporary directory for every file
	bystander  bool   // attach to an idle process, not to the workload
	stop       chan os.Signal
	rows       []row
	stormRows  []stormResult

	start       time.Time
	retriesLeft int   // pairs that may still be run again
	sawForeign  bool  // another memdiag was loaded during the current pair
	foreignErr  error // listing BPF programs failed: no more checks
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

// maxRetries bounds how often one pair is run again (memdiag killed from
// outside, another memdiag loaded). retryBudget (reruns per round) and
// retryUntil (since the start) bound the reruns of a whole benchmark, so a
// busy machine cannot stretch `make bench` much past a few minutes.
const (
	maxRetries  = 3
	retryBudget = 1
	retryUntil  = 3 * time.Minute
)

// measure runs every workload: one discarded warm-up pair, then rounds
// interleaved pairs.
func (b *bench) measure(workloads []workload, rounds int) error {
	for _, w := range workloads {
		r := row{w: w}
		for i := 0; i <= rounds; i++ {
			label := fmt.Sprintf("round %d", i)
			if i == 0 {
				label = "warm-up"
			}
			u, t, foreign, err := b.pair(w, i, label)
			if err != nil {
				return fmt.Errorf("%s %s: %w", w.name, label, err)
			}
			if i > 0 {
				r.untraced = append(r.untraced, u)
				r.traced = append(r.traced, t)
				if foreign {
					r.foreign++
				}
			}
			note := ""
			if foreign {
				note = " (another memdiag was loaded)"
			}
			fmt.Fprintf(os.Stderr, "bench: %s %s: untraced %.3fs (%s, CPU %.3fs), traced %.3fs (%s, CPU %.3fs), ×%.3f; memdiag %s peak, %.2fs CPU, attach %s, lost %d%s\n",
				w.name, label, u.Elapsed.Seconds(), rate(u.perSecond(w), w.rate), u.CPU.Seconds(),
				t.Elapsed.Seconds(), rate(t.perSecond(w), w.rate), t.CPU.Seconds(), t.Elapsed.Seconds()/u.Elapsed.Seconds(),
				mib(t.usage.PeakRSS), t.usage.CPU.Seconds(), t.attach.Round(time.Millisecond), t.lost, note)
			for _, warn := range t.warnings {
				fmt.Fprintf(os.Stderr, "bench: %s %s: warning: %s\n", w.name, label, warn)
			}
		}
		b.rows = append(b.rows, r)
	}
	return nil
}

// pair runs one untraced and one traced run. Both are run again when
// memdiag was killed from outside or another memdiag was loaded during
// them, up to maxRetries times and while the retry budget lasts; after
// that, a pair with another memdiag loaded is kept and reported as such.
func (b *bench) pair(w workload, round int, label string) (u result, t tracedResult, foreign bool, err error) {
	for attempt := 0; ; attempt++ {
		b.sawForeign = false
		awaitUnloaded(unloadGrace)
		b.checkForeign(0)
		u, err = b.untraced(w)
		if err != nil {
			return u, t, false, fmt.Errorf("untraced: %w", err)
		}
		if err := b.interrupted(); err != nil {
			return u, t, false, err
		}
		t, err = b.traced(w, round, attempt)
		var why string
		switch {
		case errors.Is(err, errKilled):
			why = err.Error()
		case err != nil:
			return u, t, false, fmt.Errorf("traced: %w", err)
		case b.sawForeign:
			why = "another memdiag was loaded on the machine during the pair"
		default:
			return u, t, false, b.interrupted()
		}
		if attempt == maxRetries || b.retriesLeft == 0 || time.Since(b.start) > retryUntil {
			if err != nil {
				return u, t, false, fmt.Errorf("traced: %w", err)
			}
			return u, t, true, b.interrupted()
		}
		b.retriesLeft--
		fmt.Fprintf(os.Stderr, "bench: %s %s: %s; running the pair again\n", w.name, label, why)
		if err := b.interrupted(); err != nil {
			return u, t, false, err
		}
	}
}

// checkForeign notes when more memdiag instances are loaded than the
// benchmark's own (ours: 0 or 1).
func (b *bench) checkForeign(ours int) {
	if b.foreignErr != nil {
		return
	}
	n, err := loadedTracers()
	if err != nil {
		b.foreignErr = err
		fmt.Fprintf(os.Stderr, "bench: warning: cannot list BPF programs (%v): other tracers on the machine go unnoticed\n", err)
		return
	}
	if n > ours {
		b.sawForeign = true
	}
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
	b.checkForeign(0)
	return res, wl.finish()
}

// tracedResult is one traced run.
type tracedResult struct {
	result
	usage       usage         // memdiag's, just before SIGTERM
	attach      time.Duration // memdiag start to ready file
	lost        uint64        // lost_events of the report
	undecodable uint64        // health.decode_errors of the report
	warnings    []string
}

// traced runs the workload once with memdiag attached.
func (b *bench) traced(w workload, round, attempt int) (tracedResult, error) {
	wl, err := startWorkload(b.faultstorm, w, workloadCPU)
	if err != nil {
		return tracedResult{}, err
	}
	target := wl.pid
	if b.bystander {
		// An idle faultstorm, never released: killed at the end.
		idle, err := startWorkload(b.faultstorm, workload{}, memdiagCPU)
		if err != nil {
			wl.kill()
			return tracedResult{}, err
		}
		defer idle.kill()
		target = idle.pid
	}
	tag := fmt.Sprintf("%s-%d-%d", w.name, round, attempt)
	tr, attachTime, err := attach(b.memdiag, b.dir, tag, target, memdiagCPU, readyTimeout)
	if err != nil {
		wl.kill()
		return tracedResult{}, err
	}
	b.checkForeign(1)
	res, err := wl.work()
	if err != nil {
		tr.kill()
		wl.kill()
		return tracedResult{}, err
	}
	b.checkForeign(1)
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
	t := tracedResult{result: res, usage: use, attach: attachTime, lost: rep.LostEvents, undecodable: rep.Health["decode_errors"]}
	// memdiag counts every fault from attach on: fewer than the workload
	// counted itself means it missed some — beyond the one per CPU it may
	// still hold uncounted (a fault that changed no RSS is counted at the
	// CPU's next fault or the thread's next syscall, bpf/rss.bpf.h).
	if !b.bystander && rep.Faults+uint64(runtime.NumCPU()) < res.Faults {
		t.warnings = append(t.warnings, fmt.Sprintf("memdiag counted %d faults, the workload %d during its work alone", rep.Faults, res.Faults))
	}
	for _, name := range slices.Sorted(maps.Keys(rep.Health)) {
		if n := rep.Health[name]; n > 0 {
			t.warnings = append(t.warnings, fmt.Sprintf("memdiag's report says health.%s = %d", name, n))
		}
	}
	return t, nil
}

// memdiagVersion returns what `memdiag version` says, or "?".
func memdiagVersion(bin string) string {
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}
