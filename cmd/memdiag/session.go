package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/memdiag/memdiag/attribution"
	"github.com/memdiag/memdiag/event"
	"github.com/memdiag/memdiag/metrics"
	"github.com/memdiag/memdiag/record"
	"github.com/memdiag/memdiag/report"
	"github.com/memdiag/memdiag/tracer"
)

// flushEvery is how often the kernel's counters are read.
const flushEvery = time.Second

// session ties one tracer to one account and its outputs.
type session struct {
	opts    sessionOptions
	exe     string // the target's binary (/proc/PID/exe)
	tr      *tracer.Tracer
	acct    *attribution.Account
	log     *report.Log
	target  report.Target
	base    report.Baseline
	started time.Time

	lastLost     uint64
	lastPeriodic time.Time
	lastGrowth   int64
	lastExternal int64
	tlsHinted    bool
	rec          *record.Writer // --record, or nil

	metricsLn   net.Listener      // --metrics-addr, opened before tracing
	exp         *metrics.Exporter // --metrics-addr, or nil
	stopMetrics context.CancelFunc
	metricsDone chan struct{}
	flushes     int
	dumps       int // dumps taken

	levels    []level // --dump-at, resolved
	dumping   bool    // a dump is being written
	finishing bool    // no new dump: the tracer is going away
	dumpDone  chan dumpResult

	// learn holds processes that exec'd and whose C library memdiag has
	// not found yet: pid -> flushes left to look.
	learn map[uint32]int

	sampling heapSampling // runtime heap sampler (sampling.go)
}

// checkOutputs refuses, before anything is traced, outputs that could not
// be written at the end.
func checkOutputs(o sessionOptions) error {
	for _, p := range []string{o.reportJSON, o.reportHTML, o.recordPath, o.readyFile} {
		if p == "" {
			continue
		}
		if err := report.CheckNew(p); err != nil {
			return usageErr("%v", err)
		}
	}
	return nil
}

// start opens the log, logs the baseline and announces readiness.
func (s *session) start() error {
	var warn string
	s.log, warn = report.OpenLog(s.opts.logPath, report.Stderr)
	if warn != "" {
		fmt.Fprintln(os.Stderr, warn)
	}
	if err := s.startRecording(); err != nil {
		return err
	}
	s.log.Init(s.target, s.base)
	s.startMetrics()
	var levelWarn string
	s.levels, levelWarn = resolveLevels(s.opts.dumpAt, int(s.target.PID))
	if levelWarn != "" {
		s.log.Printf("THRESHOLD", "%s", levelWarn)
	}
	s.dumpDone = make(chan dumpResult, 1)
	s.startSampling(s.exe)
	s.lastPeriodic = s.started
	if s.opts.readyFile != "" {
		if err := report.WriteNew(s.opts.readyFile, []byte(fmt.Sprintf("%d\n", os.Getpid()))); err != nil {
			s.abandonRecording()
			return fmt.Errorf("writing the ready file: %w", err)
		}
	}
	return nil
}

// abandonRecording removes a recording a session that never ran began.
func (s *session) abandonRecording() {
	if s.rec != nil {
		s.rec.Close(record.Trailer{EndedAt: time.Now(), Reason: "memdiag did not start"})
		os.Remove(s.opts.recordPath)
		s.rec = nil
	}
}

// loop runs until ctx ends or done closes, then stops the tracer and
// returns why it ended.
func (s *session) loop(ctx context.Context, done <-chan struct{}) string {
	flush := time.NewTicker(flushEvery)
	defer flush.Stop()
	periodic := time.NewTicker(s.opts.interval)
	defer periodic.Stop()
	var timeout <-chan time.Time
	if s.opts.duration > 0 {
		t := time.NewTimer(s.opts.duration)
		defer t.Stop()
		timeout = t.C
	}
	events := s.tr.Events()
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			s.consume(ev)
			if ex, ok := ev.(*event.Exec); ok {
				s.execd(ex)
			}
			if !s.tlsHinted && !s.opts.tls && s.acct.TLSSeen() {
				s.tlsHinted = true
				s.log.TLSHint()
			}
		case <-flush.C:
			s.learnPending()
			s.flush()
			if s.flushes++; s.flushes%5 == 0 {
				s.updateMetrics()
			}
		case <-periodic.C:
			s.readLive()
			s.periodic()
		case r := <-s.sampling.results:
			s.gotLive(r)
		case <-timeout:
			return fmt.Sprintf("--duration %s reached", s.opts.duration)
		case <-done:
			return "the target exited"
		case <-usr1:
			s.reportNow()
		case d := <-s.dumpDone:
			s.dumped(d)
		case <-ctx.Done():
			return "signal"
		}
	}
}

// flush reads the kernel's counters into the account and lets the kernel
// forget what attribution folded away.
func (s *session) flush() {
	snap, err := s.tr.Snapshot()
	if err != nil {
		s.log.Printf("ERROR", "reading counters: %v", err)
		return
	}
	s.apply(snap)
}

// execd follows a traced process into its new image: the old mappings
// are gone, the new C library is not mapped yet.
func (s *session) execd(ex *event.Exec) {
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
func (s *session) learnPending() {
	for pid, left := range s.learn {
		found, err := s.tr.LearnProcess(int(pid), false)
		if found || err != nil || left <= 1 {
			delete(s.learn, pid)
			continue
		}
		s.learn[pid] = left - 1
	}
}

// consume records one event and applies it to the account.
func (s *session) consume(ev event.Event) {
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

// record writes an event to the recording; a failed write stops the
// recording (tracing goes on) with one log line.
func (s *session) record(ev event.Event) {
	if s.rec == nil {
		return
	}
	if err := s.rec.Write(ev); err != nil {
		s.log.Printf("ERROR", "recording stopped: %v", err)
		s.rec.Close(record.Trailer{EndedAt: time.Now(), Reason: "recording failed: " + err.Error()})
		s.rec = nil
	}
}

// reportNow writes the current full report to the log and to the reports
// directory (SIGUSR1), as the classic generateReport did.
func (s *session) reportNow() {
	r := report.Build(s.acct.Summary(), s.base, s.target, "memdiag "+version)
	for _, line := range strings.Split(strings.TrimRight(string(r.Text()), "\n"), "\n") {
		s.log.Printf("REPORT", "%s", line)
	}
	stamp := time.Now().UTC().Format("20060102-150405.000")
	base := filepath.Join(s.opts.reportsDir, fmt.Sprintf("memdiag-%d-%s", s.target.PID, stamp))
	var errs []error
	if data, err := r.JSON(); err == nil {
		errs = append(errs, report.WriteNew(base+".json", data))
	}
	if data, err := r.HTML(); err == nil {
		errs = append(errs, report.WriteNew(base+".html", data))
	}
	if err := errors.Join(errs...); err != nil {
		s.log.Printf("ERROR", "writing the report on SIGUSR1: %v", err)
		return
	}
	s.log.Printf("REPORT", "written to %s.json and %s.html", base, base)
}

// prepareOutputs refuses, before anything is traced or written, outputs
// that could not be written at the end (checkOutputs), and opens
// --metrics-addr so a busy address is refused too. The listener (nil
// without --metrics-addr) is the session's to serve; done closes it if
// the session never did.
func prepareOutputs(o sessionOptions) (ln net.Listener, done func(), err error) {
	if err := checkOutputs(o); err != nil {
		return nil, nil, err
	}
	done = func() {}
	if o.metricsAddr == "" {
		return nil, done, nil
	}
	if ln, err = metrics.Listen(o.metricsAddr); err != nil {
		return nil, nil, usageErr("%v", err)
	}
	return ln, func() { ln.Close() }, nil
}

// startMetrics serves Prometheus metrics on the listener opened early.
func (s *session) startMetrics() {
	ln := s.metricsLn
	if ln == nil {
		return
	}
	s.exp = metrics.New(metrics.Labels{ContainerID: s.target.Container, PodUID: metrics.PodUID(s.target.Cgroup), Version: version})
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

// highestRSS is the main target's highest resident memory so far: the
// kernel's peak, so that a spike between two reads still crosses a
// threshold, with counters not seen since attach at their baseline.
func (s *session) highestRSS(snap *event.Snapshot) int64 {
	for _, p := range snap.Processes {
		if p.PID == s.target.PID {
			return max(p.Peak, s.base.RSS+(p.Peak-s.baselineSeen(snap)))
		}
	}
	return s.base.RSS
}

// baselineSeen is the part of the baseline the kernel has seen so far.
func (s *session) baselineSeen(snap *event.Snapshot) int64 {
	var b int64
	for _, bk := range snap.Buckets {
		if bk.Key.PID == s.target.PID && bk.Key.Kind == event.BucketBaseline {
			b += bk.Resident()
		}
	}
	return b
}

// updateMetrics feeds the exporter the current report.
func (s *session) updateMetrics() {
	if s.exp != nil {
		s.exp.Update(report.Build(s.acct.Summary(), s.base, s.target, "memdiag "+version), s.dumps)
	}
}

func (s *session) apply(snap *event.Snapshot) {
	s.record(snap)
	if s.rec != nil {
		if err := s.rec.Flush(); err != nil {
			s.log.Printf("ERROR", "recording stopped: %v", err)
			s.rec.Close(record.Trailer{EndedAt: time.Now(), Reason: "recording failed: " + err.Error()})
			s.rec = nil
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
	if len(s.levels) > 0 {
		s.checkThresholds(s.highestRSS(snap))
	}
	if lost := snap.Stats.LostEvents; lost > s.lastLost {
		s.log.Lost(lost-s.lastLost, lost)
		s.lastLost = lost
	}
}

func (s *session) periodic() {
	sum := s.acct.Summary()
	growth := sum.Growth.Resident()
	var external int64
	for _, c := range sum.Categories {
		external += c.ExternalBytes(sum.ExternalMode == "exact")
	}
	now := sum.End
	current := s.base.Memory.Add(report.MemoryOf(sum.Growth))
	delta, extDelta, over := growth-s.lastGrowth, external-s.lastExternal, now.Sub(s.lastPeriodic)
	s.log.Periodic(current, external, delta, extDelta, sum.ExternalMode, over)
	if over > 0 && (float64(delta)/over.Minutes() >= float64(s.opts.summaryRate) ||
		float64(extDelta)/over.Minutes() >= float64(s.opts.summaryExtRate)) {
		s.log.Summary(sum, "growth rate over --summary-rss-rate or --summary-external-rate")
	}
	s.lastGrowth, s.lastExternal, s.lastPeriodic = growth, external, now
}

// finish stops the tracer, drains what is left, takes the final snapshot,
// writes the report and closes everything.
func (s *session) finish(why string) error {
	s.finishing = true
	events := s.tr.Events()
	for s.dumping {
		// Let the dump under way finish (it reads the tracer's maps),
		// taking events meanwhile so the ring buffer does not fill.
		select {
		case d := <-s.dumpDone:
			s.dumped(d)
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			s.consume(ev)
		}
	}
	// The last profile of the runtime heap, while the probes still run.
	s.stopSampling()
	// Stop drains the ring buffer into the events channel; take them
	// while it does, apply them in order after.
	var rest []event.Event
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for ev := range s.tr.Events() {
			rest = append(rest, ev)
		}
	}()
	stopErr := s.tr.Stop()
	<-drained
	for _, ev := range rest {
		s.consume(ev)
	}
	snap, snapErr := s.tr.Snapshot()
	if snapErr == nil {
		s.apply(snap)
	}
	closeErr := s.tr.Close()
	sum := s.acct.Summary()
	r := report.Build(sum, s.base, s.target, "memdiag "+version)
	for _, n := range s.acct.Notices() {
		s.log.Growth(n)
	}
	s.log.Summary(sum, "final")
	s.log.Final(r, sum, why)
	if s.rec != nil {
		if err := s.rec.Close(record.Trailer{EndedAt: sum.End, Reason: why}); err != nil {
			s.log.Printf("ERROR", "closing the recording: %v", err)
		} else {
			s.log.Printf("REPORT", "recording written to %s (memdiag report %s)", s.opts.recordPath, s.opts.recordPath)
		}
	}
	var writeErr error
	for _, out := range []struct{ path, format string }{{s.opts.reportJSON, "json"}, {s.opts.reportHTML, "html"}} {
		if out.path == "" {
			continue
		}
		data, err := render(r, out.format)
		if err == nil {
			err = report.WriteNew(out.path, data)
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
