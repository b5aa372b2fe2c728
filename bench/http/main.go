// Command http benchmarks memdiag on the reference service
// (examples/leaky-service, an Express app) under HTTP load, side by side
// with what users would otherwise run: nothing, the classic in-process
// diagnostics middleware, and bcc's memleak. Run it as root from the
// repository root after `make build`:
//
//	go run ./bench/http            # -rounds 5, 10 s per measurement
//
// Arms, all measured in every round, in an order that rotates by round so
// drift and other users' load hit them alike:
//
//	untraced               node server.js
//	memdiag                + memdiag attach (default mode)
//	memdiag v8             + memdiag attach --heap-sampling v8 (V8's sampling heap profiler, 64 KiB)
//	memdiag v8 1 MiB       + the same, one sample per 1 MiB
//	memdiag exact          + memdiag attach --exact-external
//	plain Node.js http     bench/http/plain.js (require('http'), a 3-byte
//	                       answer to every request), untraced and with
//	                       memdiag's default
//	Go service             testdata/corpus/go-churn (built without the memory
//	                       profiler: memdiag's default turns it on), untraced
//	                       and with memdiag's default, GET /churn (1 MiB
//	                       dropped) and /ping
//	Python service         testdata/corpus/py-arena, untraced, default and
//	                       --native-heap, GET /churn (16 × 16 KiB dropped)
//	                       and /ping
//	untraced HTTPS         HTTPS=1 node server.js (the baseline of --tls)
//	memdiag --tls          HTTPS service + memdiag attach --tls
//	classic middleware     CLASSIC_MIDDLEWARE=1 node server.js, no memdiag
//	memleak-bpfcc          + memleak-bpfcc -p PID
//	untraced pipelined     node server.js under wrk writing 5 requests at once
//	memdiag pipelined      + memdiag attach (every pipelined request its op)
//
// With -base-memdiag BIN (another build, e.g. main's, to compare a change
// with), more arms run that build: "default-base", "pipelined-base",
// "plain-base", "v8-1m-base" and "exact-base", side by side with the same
// arms of -memdiag.
//
// Every run starts a fresh service (the service leaks about 4 MB a second
// under this load by design: a long-lived one would grow by gigabytes over
// a run, on a shared machine, and later arms would meet a larger heap than
// earlier ones), pinned to CPU 1 with its peer; warms it up with wrk; then
// attaches the arm's tracer pinned to CPU 0 (attach time: fork → ready
// file, by inotify); runs wrk pinned to CPU 0 with a fixed number of
// connections for a fixed time (-connections, -duration) on a lua script
// mixing GET /api/records, /api/voice/N and /media/x; reads the service's
// and the tracer's CPU time (utime+stime) before and after, and the
// tracer's VmHWM; stops the tracer (SIGTERM) and reads its JSON report
// (ops → ring buffer records, lost_events). A tracer that cannot run here
// at all (memleak without kernel headers) is shown with its own failure
// message, and not tried again.
//
// After the rounds, unless -profile=false, one more run per memdiag arm is
// made with kernel.bpf_stats_enabled=1 (restored afterwards): the run time
// of each of memdiag's programs (bpftool), which gives the uprobe hits per
// request and the cost per hit. Those runs are not in the medians.
//
// It prints markdown tables on stdout (progress on stderr), and leaves
// nothing behind: every file is in a temporary directory, every process it
// started is ended, on Ctrl-C too.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/memdiag/memdiag/bench/benchkit"
)

// CPUs: the service (and its peer) on one, the load generator and the
// tracer on the other.
const (
	serviceCPU = 1
	loadCPU    = 0
	tracerCPU  = 0
)

// Timeouts that end a stuck step instead of hanging the benchmark.
const (
	startTimeout = 20 * time.Second
	readyTimeout = 30 * time.Second
	stopTimeout  = 30 * time.Second
)

// maxReruns bounds how often one run is done again because memdiag was
// killed from outside (someone's pkill on this shared machine) or took
// longer than readyTimeout to attach.
const maxReruns = 2

// arm is one way of running the service.
type arm struct {
	key     string // -arms name
	name    string // table label
	base    string // key of the untraced arm it is compared with
	https   bool
	classic bool
	svc     string   // "": the reference service; or a corpus service (corpusServices)
	tracer  string   // "", "memdiag" or "memleak"
	flags   []string // memdiag flags
	// pipelined: wrk writes 5 requests at once on a connection (an
	// HTTP/1.1 pipelining client) instead of one.
	pipelined bool
	// baseBin: the tracer is -base-memdiag's build, not -memdiag's.
	baseBin bool
}

var allArms = []arm{
	{key: "untraced", name: "untraced", base: "untraced"},
	{key: "default", name: "memdiag (default)", base: "untraced", tracer: "memdiag"},
	{key: "v8", name: "memdiag --heap-sampling v8", base: "untraced", tracer: "memdiag", flags: []string{"--heap-sampling", "v8"}},
	{key: "v8-1m", name: "memdiag --heap-sampling v8 --heap-sample-interval 1MiB", base: "untraced", tracer: "memdiag", flags: []string{"--heap-sampling", "v8", "--heap-sample-interval", "1MiB"}},
	{key: "exact", name: "memdiag --exact-external", base: "untraced", tracer: "memdiag", flags: []string{"--exact-external"}},
	{key: "native", name: "memdiag --native-heap", base: "untraced", tracer: "memdiag", flags: []string{"--native-heap"}},
	{key: "plain-untraced", name: "plain Node.js http, untraced", base: "plain-untraced", svc: "node-plain"},
	{key: "plain", name: "plain Node.js http, memdiag (default)", base: "plain-untraced", svc: "node-plain", tracer: "memdiag"},
	{key: "go-untraced", name: "Go service, untraced", base: "go-untraced", svc: "go-churn"},
	{key: "go-default", name: "Go service, memdiag (default)", base: "go-untraced", svc: "go-churn", tracer: "memdiag"},
	{key: "py-untraced", name: "Python service, untraced", base: "py-untraced", svc: "py-arena"},
	{key: "py-default", name: "Python service, memdiag (default)", base: "py-untraced", svc: "py-arena", tracer: "memdiag"},
	{key: "py-native", name: "Python service, memdiag --native-heap", base: "py-untraced", svc: "py-arena", tracer: "memdiag", flags: []string{"--native-heap"}},
	{key: "untraced-https", name: "untraced HTTPS", base: "untraced-https", https: true},
	{key: "tls", name: "memdiag --tls (HTTPS)", base: "untraced-https", https: true, tracer: "memdiag", flags: []string{"--tls"}},
	{key: "classic", name: "classic middleware", base: "untraced", classic: true},
	{key: "memleak", name: "memleak-bpfcc -p PID", base: "untraced", tracer: "memleak"},
	{key: "untraced-pipelined", name: "untraced, 5 pipelined", base: "untraced-pipelined", pipelined: true},
	{key: "pipelined", name: "memdiag (default), 5 pipelined", base: "untraced-pipelined", tracer: "memdiag", pipelined: true},
	{key: "default-base", name: "memdiag (default), -base-memdiag build", base: "untraced", tracer: "memdiag", baseBin: true},
	{key: "pipelined-base", name: "memdiag (default), 5 pipelined, -base-memdiag build", base: "untraced-pipelined", tracer: "memdiag", pipelined: true, baseBin: true},
	{key: "plain-base", name: "plain Node.js http, memdiag (default), -base-memdiag build", base: "plain-untraced", svc: "node-plain", tracer: "memdiag", baseBin: true},
	{key: "v8-1m-base", name: "memdiag --heap-sampling v8 --heap-sample-interval 1MiB, -base-memdiag build", base: "untraced", tracer: "memdiag", flags: []string{"--heap-sampling", "v8", "--heap-sample-interval", "1MiB"}, baseBin: true},
	{key: "exact-base", name: "memdiag --exact-external, -base-memdiag build", base: "untraced", tracer: "memdiag", flags: []string{"--exact-external"}, baseBin: true},
}

func main() {
	os.Exit(run())
}

func run() int {
	var (
		rounds   = flag.Int("rounds", 5, "measured `rounds`; each runs every arm once (at least 5)")
		duration = flag.Duration("duration", 10*time.Second, "wrk's measurement per run (whole seconds)")
		warmup   = flag.Duration("warmup", 2*time.Second, "wrk's warm-up of each fresh service before the measurement (whole seconds)")
		settle   = flag.Duration("settle", 2*time.Second, "idle time between the warm-up's end and the measurement, the same for every arm; the tracer attaches in it")
		conns    = flag.Int("connections", 16, "wrk's open connections")
		memdiag  = flag.String("memdiag", "bin/memdiag", "the memdiag `binary` to measure (make build)")
		baseBin  = flag.String("base-memdiag", "", "another memdiag `binary` (e.g. main's build) measured side by side in the *-base arms")
		memleak  = flag.String("memleak", "memleak-bpfcc", "bcc's memleak (Debian: apt-get install -y bpfcc-tools)")
		arms     = flag.String("arms", "", "comma-separated `arms` to run (default all): "+armKeys())
		profile  = flag.Bool("profile", true, "after the rounds, one run per memdiag arm with kernel.bpf_stats_enabled=1 for the programs' run times")
	)
	flag.Parse()
	b := &bench{
		conns: *conns, duration: *duration, warmup: *warmup, settle: *settle, memdiag: *memdiag, baseMemdiag: *baseBin, memleak: *memleak,
		kids: newChildren(), results: map[string][]runResult{}, failed: map[string]string{},
		stats: map[string]*profileRun{},
	}
	if err := b.setup(*rounds, *arms); err != nil {
		fmt.Fprintf(os.Stderr, "bench/http: %v\n", err)
		return 2
	}
	dir, err := os.MkdirTemp("", "memdiag-bench-http-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench/http: %v\n", err)
		return 1
	}
	b.dir = dir
	defer os.RemoveAll(dir)

	// Ctrl-C or SIGTERM: every child is killed (memdiag's BPF programs go
	// with its file descriptors), BPF statistics are put back, and the
	// temporary directory is removed by the deferred calls as run returns.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		fmt.Fprintf(os.Stderr, "bench/http: %v: stopping\n", sig)
		b.stopped.Store(true)
		b.kids.killAll()
	}()
	defer b.kids.killAll()
	defer b.restoreStats()

	err = b.measure(*rounds, *profile)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench/http: %v\n", err)
		if b.interrupted() {
			return 130
		}
		return 1
	}
	b.loadAfter = benchkit.Loadavg(3)
	fmt.Fprintf(os.Stderr, "bench/http: done in %s\n", time.Since(b.start).Round(time.Second))
	b.print(os.Stdout, *rounds)
	return 0
}

func armKeys() string {
	var ks []string
	for _, a := range allArms {
		ks = append(ks, a.key)
	}
	return strings.Join(ks, ",")
}

// bench holds what the runs share.
type bench struct {
	conns             int
	duration, warmup  time.Duration
	settle            time.Duration
	repo, dir         string // repository root (the working directory), temporary directory
	memdiag, memleak  string // tracer binaries
	baseMemdiag       string // -base-memdiag: "" when not given
	pipeLua           string // the pipelining wrk script, in dir
	node, wrk         string
	openssl, bpftool  string                   // bpftool is "" when missing: no foreign-tracer check, no profile
	lua, cert, key    string                   // files in dir
	corpus            map[string]corpusService // the corpus services of the selected arms
	arms              []arm
	kids              *children
	peer              *service
	stopped           atomic.Bool
	restoreStatsFn    func()
	start             time.Time
	loadBefore        string
	loadAfter         string
	version           string
	results           map[string][]runResult // arm key → its runs, in round order
	failed            map[string]string      // arm key → why its tracer cannot run here
	stats             map[string]*profileRun // arm key → its profiling run
	reruns            int
	memdiagExitLonger time.Duration // the longest SIGTERM → exit of memdiag
}

func (b *bench) interrupted() bool { return b.stopped.Load() }

// setup checks what the benchmark needs and refuses to start one that
// could not finish.
func (b *bench) setup(rounds int, arms string) error {
	if rounds < 5 {
		return fmt.Errorf("-rounds %d: want at least 5, for medians worth reading", rounds)
	}
	if b.duration < time.Second || b.duration%time.Second != 0 || b.warmup < time.Second || b.warmup%time.Second != 0 {
		return errors.New("-duration and -warmup are whole seconds, at least 1s (wrk's unit)")
	}
	if os.Geteuid() != 0 {
		return errors.New("memdiag needs root to trace: run as root")
	}
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil || !set.IsSet(serviceCPU) || !set.IsSet(loadCPU) {
		return fmt.Errorf("the benchmark pins the service to CPU %d and the load and tracers to CPU %d: it needs both", serviceCPU, loadCPU)
	}
	b.arms = nil
	for _, a := range allArms {
		if !a.baseBin || b.baseMemdiag != "" {
			b.arms = append(b.arms, a)
		}
	}
	if arms != "" {
		b.arms = nil
		for _, k := range strings.Split(arms, ",") {
			found := false
			for _, a := range allArms {
				if a.key == strings.TrimSpace(k) {
					b.arms = append(b.arms, a)
					found = true
				}
			}
			if !found {
				return fmt.Errorf("-arms: unknown arm %q (want %s)", k, armKeys())
			}
		}
	}
	var err error
	if b.repo, err = os.Getwd(); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(b.repo, serviceDir, "server.js")); err != nil {
		return fmt.Errorf("run from the repository root: %s/server.js is missing", serviceDir)
	}
	if b.node, err = exec.LookPath("node"); err != nil {
		return errors.New("node is missing: the reference service is a Node.js app")
	}
	if b.wrk, err = exec.LookPath("wrk"); err != nil {
		return errors.New("wrk is missing (Debian: apt-get install -y wrk)")
	}
	if b.needs(func(a arm) bool { return a.https }) {
		if b.openssl, err = exec.LookPath("openssl"); err != nil {
			return errors.New("openssl is missing: the HTTPS arms need a certificate")
		}
	}
	if b.needs(func(a arm) bool { return a.tracer == "memdiag" }) {
		if _, err := os.Stat(b.memdiag); err != nil {
			return fmt.Errorf("%s is missing: run `make build` first (or give -memdiag)", b.memdiag)
		}
		b.version = memdiagVersion(b.memdiag)
	}
	if b.needs(func(a arm) bool { return a.baseBin }) {
		if b.baseMemdiag == "" {
			return errors.New("the default-base, pipelined-base and plain-base arms run -base-memdiag: give it")
		}
		if _, err := os.Stat(b.baseMemdiag); err != nil {
			return fmt.Errorf("-base-memdiag: %w", err)
		}
	}
	if p, err := exec.LookPath(b.memleak); err == nil {
		b.memleak = p
	} else {
		// Not fatal: the arm shows why.
		b.failed["memleak"] = fmt.Sprintf("%s not found (Debian: apt-get install -y bpfcc-tools)", b.memleak)
	}
	if b.bpftool, err = exec.LookPath("bpftool"); err != nil {
		b.bpftool = ""
		fmt.Fprintln(os.Stderr, "bench/http: warning: bpftool is missing: other memdiag instances go unnoticed and there is no profile")
	}
	return b.npmCI()
}

// needs reports whether any selected arm satisfies f.
func (b *bench) needs(f func(arm) bool) bool {
	for _, a := range b.arms {
		if f(a) {
			return true
		}
	}
	return false
}

// npmCI installs the service's dependencies when they are missing.
func (b *bench) npmCI() error {
	dir := filepath.Join(b.repo, serviceDir)
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "express")); err == nil {
		return nil
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return fmt.Errorf("%s/node_modules is missing and so is npm: run `npm ci` there", serviceDir)
	}
	fmt.Fprintf(os.Stderr, "bench/http: npm ci in %s\n", serviceDir)
	cmd := exec.Command(npm, "ci", "--no-audit", "--no-fund")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("npm ci in %s: %w", serviceDir, err)
	}
	return nil
}

// memdiagVersion returns what `memdiag version` says, or "?".
func memdiagVersion(bin string) string {
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}

func (b *bench) restoreStats() {
	if b.restoreStatsFn != nil {
		b.restoreStatsFn()
		b.restoreStatsFn = nil
	}
}

// measure runs the rounds and then the profiling pass.
func (b *bench) measure(rounds int, profile bool) error {
	b.start = time.Now()
	b.loadBefore = benchkit.Loadavg(3)
	b.lua = filepath.Join(b.dir, "mix.lua")
	if err := os.WriteFile(b.lua, []byte(mixLua), 0o600); err != nil {
		return err
	}
	b.pipeLua = filepath.Join(b.dir, "pipelined.lua")
	if err := os.WriteFile(b.pipeLua, []byte(pipelinedLua), 0o600); err != nil {
		return err
	}
	if err := b.setupCorpus(); err != nil {
		return err
	}
	if b.openssl != "" {
		var err error
		if b.cert, b.key, err = makeCert(b.openssl, b.dir); err != nil {
			return err
		}
	}
	var err error
	if b.peer, err = b.startNode("peer.js", "the peer", false); err != nil {
		return err
	}
	defer b.peer.stop()

	for r := 0; r < rounds; r++ {
		for i := range b.arms {
			a := b.arms[(i+r)%len(b.arms)] // rotate the order by round
			if _, ok := b.failed[a.key]; ok {
				continue
			}
			res, err := b.runArm(a, fmt.Sprintf("%s-r%d", a.key, r), false)
			if errors.Is(err, errUnavailable) {
				b.failed[a.key] = err.Error()
				fmt.Fprintf(os.Stderr, "bench/http: round %d %s: cannot run here: %v\n", r+1, a.name, err)
				continue
			}
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", r+1, a.name, err)
			}
			res.Round = r
			b.results[a.key] = append(b.results[a.key], res)
			fmt.Fprintf(os.Stderr, "bench/http: round %d/%d %-26s %s\n", r+1, rounds, a.name, res.summary())
		}
	}
	if profile && b.bpftool != "" {
		return b.profile()
	}
	return nil
}

// runResult is one measured run of one arm.
type runResult struct {
	Round      int
	Load       load
	ServiceCPU time.Duration // the service's utime+stime during the measurement
	Foreign    int           // other memdiag instances loaded (the most seen; -1: unknown)

	// With a tracer:
	Traced     bool
	Attach     time.Duration
	StartCPU   time.Duration // the tracer's CPU time once attached
	StartSys   time.Duration // its system part
	StartMem   memory        // the tracer's memory once attached
	LateSettle bool          // the tracer took longer than -settle to attach
	TracerCPU  time.Duration // during the measurement
	TracerSys  time.Duration // its system part
	Mem        memory        // at the end of the measurement
	Events     uint64        // ring buffer records (memdiag)
	ReportSec  float64       // memdiag's traced interval
	Lost       uint64
	Health     []string // health counters that were set
}

// CPUPerRequest is the service's CPU time per request.
func (r runResult) CPUPerRequest() time.Duration {
	return r.ServiceCPU / time.Duration(r.Load.Requests)
}

// TracerCPUShare is the tracer's CPU time as a share of one core.
func (r runResult) TracerCPUShare() float64 {
	return r.TracerCPU.Seconds() / r.Load.Duration.Seconds()
}

// EventsPerSec is memdiag's ring buffer records per second.
func (r runResult) EventsPerSec() float64 {
	if r.ReportSec <= 0 {
		return 0
	}
	return float64(r.Events) / r.ReportSec
}

func (r runResult) summary() string {
	s := fmt.Sprintf("%7.0f req/s  p50 %6.2f ms  p99 %7.2f ms  service %4.0f µs/req",
		r.Load.RPS(), ms(r.Load.P50), ms(r.Load.P99), us(r.CPUPerRequest()))
	if r.Load.Errors > 0 {
		s += fmt.Sprintf("  %d errors", r.Load.Errors)
	}
	if r.Traced {
		s += fmt.Sprintf("  | tracer %.1f%% CPU, %s peak (%s anon, %s file), attach %s",
			100*r.TracerCPUShare(), mib(r.Mem.HWM), mib(r.Mem.Anon), mib(r.Mem.File), r.Attach.Round(time.Millisecond))
		if r.ReportSec > 0 {
			s += fmt.Sprintf(", %.0f events/s, lost %d", r.EventsPerSec(), r.Lost)
		}
	}
	if r.Foreign > 0 {
		s += fmt.Sprintf("  (%d other memdiag loaded)", r.Foreign)
	}
	for _, h := range r.Health {
		s += "  health." + h
	}
	return s
}

// runArm measures one run of arm a (retrying when memdiag is killed from
// outside). With stats, BPF statistics are collected instead (profile).
func (b *bench) runArm(a arm, tag string, stats bool) (runResult, error) {
	for attempt := 0; ; attempt++ {
		res, err := b.runOnce(a, fmt.Sprintf("%s-%d", tag, attempt), stats)
		if (errors.Is(err, errKilled) || errors.Is(err, errSlow)) && attempt < maxReruns && !b.interrupted() {
			b.reruns++
			fmt.Fprintf(os.Stderr, "bench/http: %s: %v; running it again\n", a.name, err)
			continue
		}
		if b.interrupted() {
			return res, errInterrupted
		}
		return res, err
	}
}

// runOnce is one run: fresh service, warm-up, tracer, measurement, stop.
func (b *bench) runOnce(a arm, tag string, stats bool) (runResult, error) {
	var res runResult
	svc, err := b.startService(a)
	if err != nil {
		return res, err
	}
	defer svc.stop()
	lua := b.lua
	switch {
	case a.svc != "":
		lua = b.corpus[a.svc].lua
	case a.pipelined:
		lua = b.pipeLua
	}
	if _, err := b.runWrk(svc.url(), lua, b.warmup, loadCPU); err != nil {
		return res, fmt.Errorf("warm-up: %w", err)
	}
	// Every arm idles for the same time between warm-up and measurement
	// (V8 finishes compiling and collecting the warm-up's garbage in it);
	// a tracer attaches within that time.
	settled := time.Now().Add(b.settle)

	var tr *tracer
	ours := map[uint32]bool{}
	switch a.tracer {
	case "memdiag":
		bin := b.memdiag
		if a.baseBin {
			bin = b.baseMemdiag
		}
		tr, res.Attach, err = b.attachMemdiag(bin, svc.pid(), a.flags, tag)
		if err == nil {
			ours, err = progIDs(tr.p.pid())
			if err != nil {
				err = fmt.Errorf("memdiag's programs: %w", err)
			}
		}
	case "memleak":
		tr, res.Attach, err = b.attachMemleak(svc.pid())
	}
	if err != nil {
		return res, err
	}
	res.Traced = tr != nil
	if tr != nil {
		// What attaching cost memdiag: CPU time and memory at ready.
		u, s, _ := procCPU(tr.p.pid())
		res.StartCPU, res.StartSys = u+s, s
		res.StartMem, _ = procMemory(tr.p.pid())
	}
	if wait := time.Until(settled); wait > 0 {
		time.Sleep(wait)
	} else {
		res.LateSettle = true
	}
	ok := false
	defer func() {
		if tr != nil && !ok {
			tr.p.stop(syscall.SIGKILL, time.Second)
		}
	}()

	var before []prog
	if stats {
		restore, err := enableBPFStats()
		if err != nil {
			return res, err
		}
		b.restoreStatsFn = restore
		if before, err = b.progs(); err != nil {
			return res, err
		}
	}
	res.Foreign = b.foreignTracers(ours)
	svcUser0, svcSys0, err1 := procCPU(svc.pid())
	var trUser0, trSys0 time.Duration
	var err2 error
	if tr != nil {
		trUser0, trSys0, err2 = procCPU(tr.p.pid())
	}
	if err := errors.Join(err1, err2); err != nil {
		return res, err
	}

	res.Load, err = b.runWrk(svc.url(), lua, b.duration, loadCPU)
	if err != nil {
		return res, err
	}

	svcUser1, svcSys1, err1 := procCPU(svc.pid())
	res.ServiceCPU = svcUser1 + svcSys1 - svcUser0 - svcSys0
	if tr != nil {
		trUser1, trSys1, err2 := procCPU(tr.p.pid())
		res.TracerCPU = trUser1 + trSys1 - trUser0 - trSys0
		res.TracerSys = trSys1 - trSys0
		var err3 error
		res.Mem, err3 = procMemory(tr.p.pid())
		err1 = errors.Join(err1, err2, err3)
	}
	if err1 != nil {
		if tr != nil && tr.p.done() && benchkit.KilledBySignal(tr.p.waitErr) {
			return res, fmt.Errorf("%w (%v)", errKilled, tr.p.waitErr)
		}
		return res, err1
	}
	if stats {
		after, err := b.progs()
		if err != nil {
			return res, err
		}
		b.restoreStats()
		b.stats[a.key] = &profileRun{res: res, progs: progDeltas(before, after, ours)}
	}
	if f := b.foreignTracers(ours); f > res.Foreign {
		res.Foreign = f
	}

	switch a.tracer {
	case "memdiag":
		rep, took, err := tr.stopMemdiag()
		ok = true
		if err != nil {
			return res, err
		}
		b.memdiagExitLonger = max(b.memdiagExitLonger, took)
		res.Events, res.ReportSec, res.Lost = rep.ringEvents(), rep.DurationSeconds, rep.LostEvents
		for name, n := range rep.Health {
			if n > 0 {
				res.Health = append(res.Health, fmt.Sprintf("%s=%d", name, n))
			}
		}
		for _, ext := range []string{".ready", ".json", ".log"} {
			os.Remove(filepath.Join(b.dir, tag+ext))
		}
	case "memleak":
		tr.stopMemleak()
		ok = true
	}
	if stats {
		b.stats[a.key].res = res
	}
	return res, nil
}

// profileRun is one run with BPF statistics on.
type profileRun struct {
	res   runResult
	progs map[string]progDelta // memdiag's programs by name
}

// profile makes one run per memdiag arm with BPF statistics on.
func (b *bench) profile() error {
	for _, a := range b.arms {
		if a.tracer != "memdiag" {
			continue
		}
		if _, ok := b.failed[a.key]; ok {
			continue
		}
		res, err := b.runArm(a, a.key+"-profile", true)
		if err != nil {
			return fmt.Errorf("profile, %s: %w", a.name, err)
		}
		fmt.Fprintf(os.Stderr, "bench/http: profile  %-26s %s\n", a.name, res.summary())
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
func mib(b int64) string         { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
