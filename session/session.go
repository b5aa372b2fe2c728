package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/memdiag/memdiag/attribution"
	"github.com/memdiag/memdiag/config"
	"github.com/memdiag/memdiag/dump"
	"github.com/memdiag/memdiag/event"
	"github.com/memdiag/memdiag/metrics"
	"github.com/memdiag/memdiag/record"
	"github.com/memdiag/memdiag/report"

	"github.com/memdiag/memdiag/safefile"
)

// Tracer is what a session needs of the kernel side; *tracer.Tracer
// satisfies it. Tests implement it with events and snapshots they built.
type Tracer interface {
	// Events delivers lifecycle events in order, in batches; it is
	// closed once Stop has drained the ring buffer. The session hands
	// each batch back with its events, to be reused
	// (event.Batch.Recycle): the tracer keeps none once sent.
	Events() <-chan *event.Batch
	// Snapshot reads the kernel's counters.
	Snapshot() (*event.Snapshot, error)
	// Forget deletes buckets attribution folded away and the kernel state
	// of processes that are gone.
	Forget(buckets []event.BucketKey, deadPIDs []uint32) error
	// ForgetOldImage drops the mappings of a process's image before exec.
	ForgetOldImage(pid uint32) error
	// LearnProcess looks for a process's C library (seed: also record the
	// mappings it has now); found says whether it was there.
	LearnProcess(pid int, seed bool) (found bool, err error)
	// Stop detaches every probe and drains the ring buffer into Events.
	Stop() error
	// Close closes the ring buffer reader, then the maps and programs.
	Close() error
}

// flushEvery is how often the kernel's counters are read.
const flushEvery = time.Second

// Config is one session's settings: the flags of attach and run.
type Config struct {
	LogPath    string        // the live log (console when it cannot be written)
	Console    io.Writer     // also gets the log's report.ConsoleTags lines (the terminal); nil for none
	Interval   time.Duration // a [PERIODIC] line every Interval
	Duration   time.Duration // stop after this long; 0: until the target exits or ctx ends
	ReportJSON string        // the JSON report at exit, a new file; "" for none
	ReportHTML string        // the HTML report at exit, a new file; "" for none
	RecordPath string        // the recording, a new file; "" for none
	ReportsDir string        // where a report request (SIGUSR1) writes
	ReadyFile  string        // created once Start has run; "" for none

	// Rules names categories (nil: by route and destination); RulesName
	// and RulesText are its file name and YAML text, kept in recordings.
	Rules     *config.Config
	RulesName string
	RulesText string

	GrowthRSS       int64 // a [GROWTH] line for an op growing RSS this much
	GrowthExternal  int64 // a [GROWTH] line for an op growing external memory this much
	SummaryRSSRate  int64 // a [SUMMARY] block when RSS grew faster than this per minute
	SummaryExtRate  int64 // same, external memory
	KeepOps         int   // recent ops remembered per category
	ExactExternal   bool  // --exact-external
	NativeHeap      bool  // --native-heap: the exact table follows malloc, not ArrayBuffers
	TLS             bool  // --tls
	KeepQueryValues bool  // --keep-query-values

	DumpAt   []Threshold // --dump-at, unresolved
	NoDumps  bool        // thresholds are logged, never dumped
	DumpsDir string      // where dumps go (0700)
	// DiffExe is the memdiag binary that compares consecutive heap
	// snapshots of the dumps (`memdiag diff`, in a child process); "" is
	// this process's own executable.
	DiffExe string
	// Exe is the target's binary (its /proc/PID/exe), for the runtime
	// sampler's uprobes.
	Exe string
	// HeapSampling is --heap-sampling: auto, go, v8 or off ("" is off);
	// HeapInterval the V8 sampling interval in bytes.
	HeapSampling string
	HeapInterval uint64
	// Sampler attaches the runtime samplers' uprobes; nil: no sampling.
	Sampler Sampler

	// Stacks reads the sampled RSS growth by user stack of a process, for
	// a dump's profile; nil writes no profile.
	Stacks func(pid uint32) ([]dump.StackSample, error)

	// Metrics serves Prometheus metrics when not nil; the session closes it.
	Metrics net.Listener
	// Exporter, when not nil (and Metrics is nil), gets the session's
	// metrics; its owner serves it (fleet mode: one endpoint, many
	// sessions).
	Exporter *metrics.Exporter
	// Version is memdiag's version, for reports and metrics.
	Version string
	// Live, when not nil, gets the current report every liveEvery
	// flushes (memdiag's --live view).
	Live func(*report.Report)
}

// liveEvery is how many flushes (seconds) apart Live is called.
const liveEvery = 2

// tool names memdiag in reports and recordings.
func (c *Config) tool() string { return "memdiag " + c.Version }

// accountOptions are the attribution options of a session.
func (c *Config) accountOptions() attribution.Options {
	return attribution.Options{Categorizer: attribution.NewCategorizer(c.Rules), KeepOps: c.KeepOps,
		GrowthRSS: c.GrowthRSS, GrowthExternal: c.GrowthExternal, ExactExternal: c.ExactExternal, NativeHeap: c.NativeHeap}
}

// subject is what a report is about: the same for a live session and the
// replay of its recording, so both build the same report.
type subject struct {
	target report.Target
	base   report.Baseline
	tool   string
}

// report builds the report of an account's summary. It is memdiag's one
// call of report.Build.
func (s *subject) report(sum *attribution.Summary) *report.Report {
	return report.Build(sum, s.base, s.target, s.tool)
}

// newAccount makes the account a trace of target starts with.
func newAccount(target report.Target, started time.Time, opts attribution.Options) *attribution.Account {
	acct := attribution.New(target.PID, started)
	if target.Mode == "attach" {
		acct.SetComm(target.PID, target.Comm)
	}
	acct.SetOptions(opts)
	return acct
}

// Session ties one tracer to one account and its outputs.
type Session struct {
	subject
	cfg     Config
	tr      Tracer
	acct    *attribution.Account
	log     *report.Log
	started time.Time

	lastLost     uint64
	lastPeriodic time.Time
	lastGrowth   int64
	lastExternal int64
	tlsHinted    bool
	rec          *record.Writer // --record, or nil

	exp         *metrics.Exporter // --metrics-addr, or nil
	stopMetrics context.CancelFunc
	metricsDone chan struct{}
	flushes     int
	dumps       int // dumps taken

	levels    []level // --dump-at, resolved
	dumping   bool    // a dump is being written
	finishing bool    // no new dump: the tracer is going away
	dumpDone  chan dumpResult
	demand    bool  // a dump on demand waits for the dump under way
	rss       int64 // the main target's highest RSS at the last flush
	diffs     heapDiffs

	// heapSnapshot, when set, writes a dump's heap snapshot instead of
	// the inspector (tests); nil takes one of Node.js targets.
	heapSnapshot func(path string, pid int) []string

	// learn holds processes that exec'd and whose C library memdiag has
	// not found yet: pid -> flushes left to look.
	learn map[uint32]int

	sampling heapSampling // runtime heap sampler (sampling.go)

	// The loop's clocks; tests drive them by hand.
	flushTick    <-chan time.Time
	periodicTick <-chan time.Time
}

// New makes a session tracing target from started (wall time, rounded so a
// replay computes the same durations), with the target's memory at that
// moment as base. It owns tr from now on: Finish closes it.
func New(tr Tracer, cfg Config, target report.Target, base report.Baseline, started time.Time) *Session {
	return &Session{
		subject: subject{target: target, base: base, tool: cfg.tool()},
		cfg:     cfg,
		tr:      tr,
		acct:    newAccount(target, started, cfg.accountOptions()),
		started: started,
	}
}

// Validate refuses values a session cannot run with; each error names the
// flag and the range it takes.
func (c Config) Validate() error {
	switch c.HeapSampling {
	case "", "auto", "all", "go", "v8", "off":
	default:
		return fmt.Errorf("--heap-sampling %q: give auto, all, go, v8 or off", c.HeapSampling)
	}
	switch {
	case c.HeapInterval != 0 && (c.HeapInterval < 1024 || c.HeapInterval > 64<<20):
		return fmt.Errorf("--heap-sample-interval %d bytes: give a size from 1KiB to 64MiB, e.g. 64KiB", c.HeapInterval)
	case c.KeepOps < 1 || c.KeepOps > 100000:
		return fmt.Errorf("--keep-ops must be from 1 to 100000, got %d", c.KeepOps)
	case c.Interval <= 0:
		return fmt.Errorf("--interval must be positive, got %s", c.Interval)
	case c.Duration < 0:
		return fmt.Errorf("--duration must not be negative, got %s", c.Duration)
	}
	return nil
}

// CheckOutputs refuses, before anything is traced, outputs that could not
// be written at the end.
func CheckOutputs(cfg Config) error {
	for _, p := range []string{cfg.ReportJSON, cfg.ReportHTML, cfg.RecordPath, cfg.ReadyFile} {
		if p == "" {
			continue
		}
		if err := safefile.CheckNew(p); err != nil {
			return err
		}
	}
	return nil
}

// Start opens the log, logs the baseline, starts the recording and the
// metrics, and announces readiness (the ready file).
func (s *Session) Start() error {
	var warn string
	s.log, warn = report.OpenLog(s.cfg.LogPath, report.Stderr)
	if warn != "" {
		fmt.Fprintln(os.Stderr, warn)
	}
	if s.cfg.Console != nil {
		s.log.Tee(s.cfg.Console)
	}
	if err := s.startRecording(); err != nil {
		return err
	}
	s.log.Init(s.target, s.base)
	s.startMetrics()
	var levelWarn string
	s.levels, levelWarn = resolveLevels(s.cfg.DumpAt, int(s.target.PID))
	if levelWarn != "" {
		s.log.Printf("THRESHOLD", "%s", levelWarn)
	}
	s.dumpDone = make(chan dumpResult, 1)
	s.diffs.done = make(chan heapDiffResult, 1)
	s.startSampling()
	s.lastPeriodic = s.started
	if s.cfg.ReadyFile != "" {
		if err := safefile.WriteNew(s.cfg.ReadyFile, []byte(fmt.Sprintf("%d\n", os.Getpid()))); err != nil {
			s.abandonRecording()
			return fmt.Errorf("writing the ready file: %w", err)
		}
	}
	return nil
}

// Loop runs until ctx ends, done closes or --duration passes, and returns
// why it ended, as the final [SUMMARY] line says it. A value on reportNow
// (SIGUSR1) writes the current report, one on dumpNow (SIGUSR2) takes a
// dump. Finish comes next.
func (s *Session) Loop(ctx context.Context, done <-chan struct{}, reportNow, dumpNow <-chan os.Signal) string {
	if s.flushTick == nil {
		flush := time.NewTicker(flushEvery)
		defer flush.Stop()
		s.flushTick = flush.C
	}
	if s.periodicTick == nil {
		periodic := time.NewTicker(s.cfg.Interval)
		defer periodic.Stop()
		s.periodicTick = periodic.C
	}
	var timeout <-chan time.Time
	if s.cfg.Duration > 0 {
		t := time.NewTimer(s.cfg.Duration)
		defer t.Stop()
		timeout = t.C
	}
	events := s.tr.Events()
	for {
		select {
		case b, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			// A batch at once (event.BatchLen events at most, but a
			// container's first in fleet mode): the ticks still come
			// in a storm.
			for _, ev := range b.Events {
				s.event(ev)
			}
			b.Recycle()
		case <-s.flushTick:
			s.learnPending()
			s.flush()
			if s.flushes++; s.flushes%5 == 0 {
				s.updateMetrics()
			}
			if s.cfg.Live != nil && s.flushes%liveEvery == 0 {
				s.cfg.Live(s.report(s.acct.Summary()))
			}
		case <-s.periodicTick:
			s.readLive()
			s.periodic()
		case r := <-s.sampling.results:
			s.gotLive(r)
		case <-timeout:
			return fmt.Sprintf("--duration %s reached", s.cfg.Duration)
		case <-done:
			return "the target exited"
		case <-reportNow:
			s.reportNow()
		case <-dumpNow:
			s.dumpNow()
		case d := <-s.dumpDone:
			s.dumped(d)
		case r := <-s.diffs.done:
			s.heapDiffed(r)
		case <-ctx.Done():
			return "signal"
		}
	}
}

// event takes one event from the tracer.
func (s *Session) event(ev event.Event) {
	ex, _ := ev.(*event.Exec)
	s.consume(ev)
	if ex != nil {
		s.execd(ex)
	}
	s.tlsHint()
}

// flush reads the kernel's counters into the account and lets the kernel
// forget what attribution folded away.
func (s *Session) flush() {
	snap, err := s.tr.Snapshot()
	if err != nil {
		s.log.Printf("ERROR", "reading counters: %v", err)
		return
	}
	s.apply(snap)
}

// execd follows a traced process into its new image: the old mappings
// are gone, the new C library is not mapped yet.
func (s *Session) execd(ex *event.Exec) {
	if err := s.tr.ForgetOldImage(ex.PID); err != nil {
		s.log.Printf("ERROR", "%v", err)
	}
	if s.learn == nil {
		s.learn = map[uint32]int{}
	}
	s.learn[ex.PID] = 10
	s.learnPending()
}

// learnPending looks again for the C library of processes that exec'd.
func (s *Session) learnPending() {
	for pid, left := range s.learn {
		found, err := s.tr.LearnProcess(int(pid), false)
		if found || err != nil || left <= 1 {
			delete(s.learn, pid)
			continue
		}
		s.learn[pid] = left - 1
	}
}

// consume records one event and applies it to the account: neither keeps
// it, so its batch can be recycled after.
func (s *Session) consume(ev event.Event) {
	s.record(ev)
	s.acct.Apply(ev)
	if oom, ok := ev.(*event.OOM); ok {
		// The last attribution state before the kill, as the classic
		// log had it (fresh counters first), then the final report when
		// the target is gone.
		s.flush()
		s.log.Printf("OOM", "the kernel's OOM killer chose pid %d (anon %s, file %s, shmem %s)", oom.PID,
			report.MB(oom.AnonRSS, false), report.MB(oom.FileRSS, false), report.MB(oom.ShmemRSS, false))
		s.log.Summary(s.acct.Summary(), "at the OOM kill")
	}
}

// consumeBatch consumes a batch's events in order and hands it back
// with them (event.Batch.Recycle).
func (s *Session) consumeBatch(b *event.Batch) {
	for _, ev := range b.Events {
		s.consume(ev)
	}
	b.Recycle()
}

// reportNow writes the current full report to the log and to the reports
// directory (SIGUSR1), as the classic generateReport did.
func (s *Session) reportNow() {
	r := s.report(s.acct.Summary())
	for _, line := range strings.Split(strings.TrimRight(string(r.Text()), "\n"), "\n") {
		s.log.Printf("REPORT", "%s", line)
	}
	stamp := time.Now().UTC().Format("20060102-150405.000")
	base := filepath.Join(s.cfg.ReportsDir, fmt.Sprintf("memdiag-%d-%s", s.target.PID, stamp))
	var errs []error
	if data, err := r.JSON(); err == nil {
		errs = append(errs, safefile.WriteNew(base+".json", data))
	}
	if data, err := r.HTML(); err == nil {
		errs = append(errs, safefile.WriteNew(base+".html", data))
	}
	if err := errors.Join(errs...); err != nil {
		s.log.Printf("ERROR", "writing the report on SIGUSR1: %v", err)
		return
	}
	s.log.Printf("REPORT", "written to %s.json and %s.html", base, base)
}

// startMetrics serves Prometheus metrics on the listener opened early.
func (s *Session) startMetrics() {
	ln := s.cfg.Metrics
	if ln == nil {
		s.exp = s.cfg.Exporter
		s.updateMetrics() // a scrape finds the target from its start
		return
	}
	s.exp = metrics.New(metrics.Labels{ContainerID: s.target.Container, PodUID: metrics.PodUID(s.target.Cgroup), Version: s.cfg.Version})
	ctx, cancel := context.WithCancel(context.Background())
	s.stopMetrics, s.metricsDone = cancel, make(chan struct{})
	go func() {
		defer close(s.metricsDone)
		if err := s.exp.ServeListener(ctx, ln); err != nil {
			s.log.Printf("ERROR", "metrics: %v", err)
		}
	}()
	s.log.Printf("METRICS", "serving Prometheus metrics on %s/metrics", ln.Addr())
}

// updateMetrics feeds the exporter the current report.
func (s *Session) updateMetrics() {
	if s.exp != nil {
		s.exp.Update(s.report(s.acct.Summary()), s.dumps)
	}
}

// apply takes a snapshot: recorded first, then applied, then the kernel
// forgets what attribution folded away, then the lines it calls for.
func (s *Session) apply(snap *event.Snapshot) {
	s.record(snap)
	if s.rec != nil {
		if err := s.rec.Flush(); err != nil {
			s.stopRecording(err)
		}
	}
	s.acct.Apply(snap)
	if keys, pids := s.acct.Retired(); len(keys)+len(pids) > 0 {
		if err := s.tr.Forget(keys, pids); err != nil {
			s.log.Printf("ERROR", "trimming kernel tables: %v", err)
		}
	}
	for _, n := range s.acct.Notices() {
		s.log.Growth(n)
	}
	s.rss = s.highestRSS(snap)
	if len(s.levels) > 0 {
		s.checkThresholds(s.rss)
	}
	if lost := snap.Stats.LostEvents; lost > s.lastLost {
		s.log.Lost(lost-s.lastLost, lost)
		s.lastLost = lost
	}
}

// Rate is bytes per minute over d; 0 when d is not positive.
func Rate(bytes int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(bytes) / d.Minutes()
}

// periodic writes the [PERIODIC] line: current memory and the growth rate
// since the last one, and a [SUMMARY] block when the rate passes
// --summary-rss-rate or --summary-external-rate.
func (s *Session) periodic() {
	sum := s.acct.Summary()
	growth := sum.Growth.Resident()
	var external int64
	for _, c := range sum.Categories {
		external += c.ExternalBytes(sum.ExternalMode == "exact")
	}
	now := sum.End
	if now.IsZero() {
		now = s.started // no snapshot yet
	}
	current := s.base.Memory.Add(report.MemoryOf(sum.Growth))
	delta, extDelta, over := growth-s.lastGrowth, external-s.lastExternal, now.Sub(s.lastPeriodic)
	s.log.Periodic(current, external, delta, extDelta, sum.ExternalMode, over)
	if over > 0 && (Rate(delta, over) >= float64(s.cfg.SummaryRSSRate) || Rate(extDelta, over) >= float64(s.cfg.SummaryExtRate)) {
		s.log.Summary(sum, "growth rate over --summary-rss-rate or --summary-external-rate")
	}
	s.lastGrowth, s.lastExternal, s.lastPeriodic = growth, external, now
}

// tlsHint logs, once, that a served socket carries TLS which --tls would
// name.
func (s *Session) tlsHint() {
	if !s.tlsHinted && !s.cfg.TLS && s.acct.TLSSeen() {
		s.tlsHinted = true
		s.log.TLSHint()
	}
}

// Finish stops the tracer, drains what is left, takes the final snapshot,
// writes the reports and closes everything, in the order the package doc
// gives. why is what Loop returned.
func (s *Session) Finish(why string) error {
	s.finishing = true
	events := s.tr.Events()
	for s.dumping || s.diffs.running {
		// Let the dump under way finish (it reads the tracer's maps),
		// and the heap diffs of the run's dumps, taking events meanwhile
		// so the ring buffer does not fill.
		select {
		case d := <-s.dumpDone:
			s.dumped(d)
		case r := <-s.diffs.done:
			s.heapDiffed(r)
		case b, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			s.consumeBatch(b)
		}
	}
	// The last profile of the runtime heap, while the probes still run.
	s.stopSampling()
	// Stop drains the ring buffer into the events channel; take them
	// while it does, apply them in order after.
	var rest []*event.Batch
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for b := range s.tr.Events() {
			rest = append(rest, b)
		}
	}()
	stopErr := s.tr.Stop()
	<-drained
	for _, b := range rest {
		s.consumeBatch(b)
	}
	// A TLS handshake read just before the end reaches the account here,
	// after the loop: the hint is said all the same.
	s.tlsHint()
	snap, snapErr := s.tr.Snapshot()
	if snapErr == nil {
		s.apply(snap)
	}
	closeErr := s.tr.Close()
	sum := s.acct.Summary()
	r := s.report(sum)
	for _, n := range s.acct.Notices() {
		s.log.Growth(n)
	}
	s.log.Summary(sum, "final")
	s.log.Final(r, sum, why)
	if s.rec != nil {
		if err := s.rec.Close(record.Trailer{EndedAt: sum.End, Reason: why}); err != nil {
			s.log.Printf("ERROR", "closing the recording: %v", err)
		} else {
			s.log.Printf("REPORT", "recording written to %s (memdiag report %s)", s.cfg.RecordPath, s.cfg.RecordPath)
		}
	}
	var writeErr error
	for _, out := range []struct{ path, format string }{{s.cfg.ReportJSON, "json"}, {s.cfg.ReportHTML, "html"}} {
		if out.path == "" {
			continue
		}
		data, err := Render(r, out.format)
		if err == nil {
			err = safefile.WriteNew(out.path, data)
		}
		if err != nil {
			writeErr = fmt.Errorf("writing the %s report: %w", strings.ToUpper(out.format), err)
			s.log.Printf("ERROR", "%v", writeErr)
		} else {
			s.log.Printf("REPORT", "%s report written to %s", strings.ToUpper(out.format), out.path)
		}
	}
	if s.exp != nil {
		s.exp.Update(r, s.dumps)
	}
	if s.stopMetrics != nil {
		s.stopMetrics()
		<-s.metricsDone
	}
	s.log.Close()
	for _, err := range []error{snapErr, writeErr, stopErr, closeErr} {
		if err != nil {
			return err
		}
	}
	return nil
}

// Render encodes a report as text, json or html.
func Render(r *report.Report, format string) ([]byte, error) {
	switch format {
	case "json":
		return r.JSON()
	case "html":
		return r.HTML()
	case "text":
		return r.Text(), nil
	}
	return nil, fmt.Errorf("unknown report format %q: want text, json or html", format)
}
