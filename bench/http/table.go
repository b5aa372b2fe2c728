package main

import (
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/memdiag/memdiag/bench/benchkit"
)

// Targets of the issue, for the default mode unless said.
const (
	targetThroughputLoss = 0.03 // at most 3% fewer requests per second
	targetP99Increase    = 0.05 // p99 at most 5% higher
	targetCPU            = 0.05 // memdiag at most 5% of one core
	targetPeakRSS        = 20e6 // bytes: 20 MB
	targetAttach         = 300 * time.Millisecond
)

// armStats is the medians of one arm.
type armStats struct {
	a                    arm
	runs                 []runResult
	rps, p50, p99, cpuRq float64 // req/s, ms, ms, µs
	trCPU                float64 // share of a core
	peak, peakMax        float64 // bytes
	anon, file           float64 // bytes, medians at the end of the measurement
	events               float64 // per second
	lost                 uint64
	attach, attachMax    float64 // ms
	foreign              int     // runs with another memdiag loaded
	late                 int     // runs whose tracer attached after -settle
	startCPU, startPeak  float64 // seconds, bytes: the tracer at ready, medians
	startSys             float64 // seconds: system part of startCPU, median
	trSys                float64 // share of a core: system part of trCPU, median
	errors               uint64  // wrk errors
	health               []string
}

func (b *bench) statsOf(a arm) *armStats {
	rs := b.results[a.key]
	if len(rs) == 0 {
		return nil
	}
	s := &armStats{a: a, runs: rs}
	s.rps = benchkit.Median(benchkit.Collect(rs, func(r runResult) float64 { return r.Load.RPS() }))
	s.p50 = benchkit.Median(benchkit.Collect(rs, func(r runResult) float64 { return ms(r.Load.P50) }))
	s.p99 = benchkit.Median(benchkit.Collect(rs, func(r runResult) float64 { return ms(r.Load.P99) }))
	s.cpuRq = benchkit.Median(benchkit.Collect(rs, func(r runResult) float64 { return us(r.CPUPerRequest()) }))
	s.trCPU = benchkit.Median(benchkit.Collect(rs, runResult.TracerCPUShare))
	s.peak = benchkit.Median(benchkit.Collect(rs, func(r runResult) float64 { return float64(r.Mem.HWM) }))
	s.peakMax = slices.Max(benchkit.Collect(rs, func(r runResult) float64 { return float64(r.Mem.HWM) }))
	s.anon = benchkit.Median(benchkit.Collect(rs, func(r runResult) float64 { return float64(r.Mem.Anon) }))
	s.file = benchkit.Median(benchkit.Collect(rs, func(r runResult) float64 { return float64(r.Mem.File) }))
	s.events = benchkit.Median(benchkit.Collect(rs, runResult.EventsPerSec))
	s.attach = benchkit.Median(benchkit.Collect(rs, func(r runResult) float64 { return ms(r.Attach) }))
	s.attachMax = slices.Max(benchkit.Collect(rs, func(r runResult) float64 { return ms(r.Attach) }))
	s.startCPU = benchkit.Median(benchkit.Collect(rs, func(r runResult) float64 { return r.StartCPU.Seconds() }))
	s.startSys = benchkit.Median(benchkit.Collect(rs, func(r runResult) float64 { return r.StartSys.Seconds() }))
	s.trSys = benchkit.Median(benchkit.Collect(rs, func(r runResult) float64 { return r.TracerSys.Seconds() / r.Load.Duration.Seconds() }))
	s.startPeak = benchkit.Median(benchkit.Collect(rs, func(r runResult) float64 { return float64(r.StartMem.HWM) }))
	for _, r := range rs {
		if r.LateSettle {
			s.late++
		}
		s.lost += r.Lost
		s.errors += r.Load.Errors
		if r.Foreign > 0 {
			s.foreign++
		}
		s.health = append(s.health, r.Health...)
	}
	return s
}

// roundRatios returns the per-round ratios f(arm)/f(base) over the rounds
// both ran in.
func roundRatios(arm, base []runResult, f func(runResult) float64) []float64 {
	byRound := map[int]runResult{}
	for _, r := range base {
		byRound[r.Round] = r
	}
	var qs []float64
	for _, r := range arm {
		if br, found := byRound[r.Round]; found && f(br) != 0 {
			qs = append(qs, f(r)/f(br))
		}
	}
	return qs
}

// ratioRange returns the smallest and largest per-round ratio f(arm)/f(base)
// over the rounds both ran in.
func ratioRange(arm, base []runResult, f func(runResult) float64) (lo, hi float64, ok bool) {
	qs := roundRatios(arm, base, f)
	if len(qs) == 0 {
		return 0, 0, false
	}
	return slices.Min(qs), slices.Max(qs), true
}

// versus formats an arm's median against its base's, as the ratio of the
// medians and, in brackets, the median and range of the per-round ratios
// (each round runs both, close in time).
func versus(s, base *armStats, med func(*armStats) float64, f func(runResult) float64) string {
	out := pct(med(s) / med(base))
	if qs := roundRatios(s.runs, base.runs, f); len(qs) > 0 {
		out += fmt.Sprintf(" (rounds %s: %s … %s)", pct(benchkit.Median(qs)), pct(slices.Min(qs)), pct(slices.Max(qs)))
	}
	return out
}

func rpsOf(r runResult) float64   { return r.Load.RPS() }
func p99Of(r runResult) float64   { return ms(r.Load.P99) }
func cpuRqOf(r runResult) float64 { return us(r.CPUPerRequest()) }

func pct(ratio float64) string { return fmt.Sprintf("%+.1f%%", (ratio-1)*100) }

func yes(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

// print writes the tables.
func (b *bench) print(w io.Writer, rounds int) {
	st := map[string]*armStats{}
	for _, a := range b.arms {
		st[a.key] = b.statsOf(a)
	}
	fmt.Fprintf(w, "%s; reference service (examples/leaky-service, %s, fresh per run) on CPU %d; wrk -t1 -c%d, %s warm-up then %s per run, on CPU %d with the tracer; %d rounds, arms interleaved (order rotated per round), medians; %s, %d CPUs, %s; load average (1, 5, 15 min) %s before, %s after.\n\n",
		orDash(b.version), nodeVersion(b.node), serviceCPU, b.conns, b.warmup, b.duration, loadCPU, rounds,
		cpuModel(), runtime.NumCPU(), kernel(), b.loadBefore, b.loadAfter)

	fmt.Fprintln(w, "| arm | req/s | vs untraced | p50 | p99 | p99 vs untraced | service CPU per request | vs untraced | tracer CPU (% of a core) | tracer peak RSS (max) | ring buffer events/s | lost events | attach (max) |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, a := range b.arms {
		s, base := st[a.key], st[a.base]
		if msg, failed := b.failed[a.key]; failed && s == nil {
			fmt.Fprintf(w, "| %s | failed: %s | — | — | — | — | — | — | — | — | — | — | — |\n", a.name, mdEscape(msg))
			continue
		}
		if s == nil {
			continue
		}
		vs, p99vs, cpuvs := "—", "—", "—"
		if a.key != a.base && base != nil {
			vs = versus(s, base, func(s *armStats) float64 { return s.rps }, rpsOf)
			p99vs = versus(s, base, func(s *armStats) float64 { return s.p99 }, p99Of)
			cpuvs = versus(s, base, func(s *armStats) float64 { return s.cpuRq }, cpuRqOf)
		}
		tracerCols := "— | — | — | — | —"
		switch a.tracer {
		case "memdiag":
			tracerCols = fmt.Sprintf("%.1f%% | %s (%s) | %.0f | %d | %.0f ms (%.0f ms)",
				100*s.trCPU, mib(int64(s.peak)), mib(int64(s.peakMax)), s.events, s.lost, s.attach, s.attachMax)
		case "memleak":
			tracerCols = fmt.Sprintf("%.1f%% | %s (%s) | — | — | %.0f ms (%.0f ms)",
				100*s.trCPU, mib(int64(s.peak)), mib(int64(s.peakMax)), s.attach, s.attachMax)
		}
		fmt.Fprintf(w, "| %s | %.0f | %s | %.2f ms | %.2f ms | %s | %.0f µs | %s | %s |\n",
			a.name, s.rps, vs, s.p50, s.p99, p99vs, s.cpuRq, cpuvs, tracerCols)
	}
	fmt.Fprintln(w)
	b.printNotes(w, st)
	b.printTargets(w, st)
	b.printCosts(w, st)
	b.printProfile(w)
}

func (b *bench) printNotes(w io.Writer, st map[string]*armStats) {
	for _, a := range b.arms {
		if msg, ok := b.failed[a.key]; ok {
			fmt.Fprintf(w, "- **%s** could not run here, in its own words: `%s`\n", a.name, msg)
		}
	}
	for _, a := range b.arms {
		s := st[a.key]
		if s == nil {
			continue
		}
		if s.foreign > 0 {
			fmt.Fprintf(w, "- %s: another memdiag (someone else's) had its programs loaded during %d of %d runs; they run on every syscall and fault of the service whoever traces it.\n", a.name, s.foreign, len(s.runs))
		}
		if s.errors > 0 {
			fmt.Fprintf(w, "- %s: wrk counted %d errors (socket errors or non-2xx answers).\n", a.name, s.errors)
		}
		if len(s.health) > 0 {
			fmt.Fprintf(w, "- %s: health counters set in memdiag's reports: %s.\n", a.name, strings.Join(s.health, ", "))
		}
		if a.tracer == "memdiag" {
			fmt.Fprintf(w, "- %s: memdiag at ready: %.2f s CPU (%.2f s of it system), VmHWM %s; during the measurement %.1f%% of a core (%.1f%% system); at its end %s anonymous + %s file-backed resident (medians).\n",
				a.name, s.startCPU, s.startSys, mib(int64(s.startPeak)), 100*s.trCPU, 100*s.trSys, mib(int64(s.anon)), mib(int64(s.file)))
		}
		if s.late > 0 {
			fmt.Fprintf(w, "- %s: the tracer attached after the %s settle time in %d of %d runs (its measurement started later than the others').\n", a.name, b.settle, s.late, len(s.runs))
		}
	}
	if b.reruns > 0 {
		fmt.Fprintf(w, "- %d runs were done again: memdiag was killed by a signal the benchmark did not send, or did not attach within %s.\n", b.reruns, readyTimeout)
	}
	if b.memdiagExitLonger > 0 {
		fmt.Fprintf(w, "- memdiag's longest exit after SIGTERM: %s.\n", b.memdiagExitLonger.Round(10*time.Millisecond))
	}
	fmt.Fprintln(w)
}

func (b *bench) printTargets(w io.Writer, st map[string]*armStats) {
	d, u := st["default"], st["untraced"]
	if d == nil || u == nil {
		return
	}
	fmt.Fprintln(w, "| target (default mode) | measured | |")
	fmt.Fprintln(w, "|---|---|---|")
	// Met only when both the ratio of the medians and the median of the
	// per-round ratios are within the target.
	loss := 1 - d.rps/u.rps
	roundLoss := 1 - benchkit.Median(roundRatios(d.runs, u.runs, rpsOf))
	fmt.Fprintf(w, "| throughput loss ≤ 3%% | throughput %s (%.0f vs %.0f req/s); median of per-round ratios %s; service CPU per request %s | %s |\n",
		pct(1-loss), d.rps, u.rps, pct(1-roundLoss), versus(d, u, func(s *armStats) float64 { return s.cpuRq }, cpuRqOf),
		yes(max(loss, roundLoss) <= targetThroughputLoss))
	inc := d.p99/u.p99 - 1
	roundInc := benchkit.Median(roundRatios(d.runs, u.runs, p99Of)) - 1
	fmt.Fprintf(w, "| p99 increase ≤ 5%% | %+.1f%% (%.2f vs %.2f ms); median of per-round ratios %+.1f%% | %s |\n",
		100*inc, d.p99, u.p99, 100*roundInc, yes(max(inc, roundInc) <= targetP99Increase))
	cpuMax := slices.Max(benchkit.Collect(d.runs, runResult.TracerCPUShare))
	fmt.Fprintf(w, "| memdiag CPU ≤ 5%% of a core | %.1f%% median, %.1f%% max, at %.0f ring buffer events/s | %s |\n",
		100*d.trCPU, 100*cpuMax, d.events, yes(d.trCPU <= targetCPU))
	fmt.Fprintf(w, "| memdiag peak RSS ≤ 20 MB | %.1f MB = %s median, %.1f MB max | %s |\n",
		d.peak/1e6, mib(int64(d.peak)), d.peakMax/1e6, yes(d.peakMax <= targetPeakRSS))
	var lost uint64
	for _, k := range []string{"default", "exact", "tls"} {
		if s := st[k]; s != nil {
			lost += s.lost
		}
	}
	fmt.Fprintf(w, "| 0 lost events | %d (all memdiag runs) | %s |\n", lost, yes(lost == 0))
	over := 0
	for _, r := range d.runs {
		if r.Attach > targetAttach {
			over++
		}
	}
	fmt.Fprintf(w, "| attach ≤ 300 ms | %.0f ms median, %.0f ms max; over 300 ms in %d of %d runs | %s |\n",
		d.attach, d.attachMax, over, len(d.runs), yes(d.attach <= ms(targetAttach)))
	if c := st["classic"]; c != nil {
		fmt.Fprintf(w, "| ahead of the classic middleware | memdiag %.0f req/s vs classic %.0f: ×%.3f; service CPU per request %.0f vs %.0f µs | %s |\n",
			d.rps, c.rps, d.rps/c.rps, d.cpuRq, c.cpuRq, yes(d.rps > c.rps))
	}
	if m := st["memleak"]; m != nil {
		fmt.Fprintf(w, "| ahead of memleak-bpfcc | memdiag %.0f req/s vs memleak %.0f: ×%.3f; service CPU per request %.0f vs %.0f µs | %s |\n",
			d.rps, m.rps, d.rps/m.rps, d.cpuRq, m.cpuRq, yes(d.rps > m.rps))
	} else if msg, ok := b.failed["memleak"]; ok {
		fmt.Fprintf(w, "| ahead of memleak-bpfcc | memleak cannot run here (%s): no ratio | n/a |\n", mdEscape(firstClause(msg)))
	}
	fmt.Fprintln(w)
}

// printCosts writes the per-call cost of the uprobe modes: the extra
// service CPU per request over the arm without the uprobes, divided by the
// uprobe hits per request the profile counted.
func (b *bench) printCosts(w io.Writer, st map[string]*armStats) {
	type cost struct {
		key, over, label string
		progs            []string
	}
	costs := []cost{
		{"exact", "default", "--exact-external", []string{"on_ab_allocate", "on_ab_allocate_ret", "on_ab_free"}},
		{"tls", "untraced-https", "--tls", []string{"on_llhttp_execute"}},
	}
	d, u := st["default"], st["untraced"]
	for _, c := range costs {
		s, over := st[c.key], st[c.over]
		if s == nil || over == nil {
			continue
		}
		extra := s.cpuRq - over.cpuRq        // µs per request
		tput := (1/s.rps - 1/over.rps) * 1e6 // µs per request, if the service had its CPU to itself
		what := fmt.Sprintf("over %s", over.a.name)
		if c.key == "tls" && d != nil && u != nil {
			// Take out what the default mode costs over HTTP: the rest is
			// the llhttp uprobe.
			extra -= d.cpuRq - u.cpuRq
			tput -= (1/d.rps - 1/u.rps) * 1e6
			what = "over untraced HTTPS, less the default mode's cost over untraced HTTP"
		}
		fmt.Fprintf(w, "- **%s**: %s req/s vs %s; service CPU per request %.0f vs %.0f µs. Extra CPU per request %s: %.1f µs (from throughput: %.1f µs).",
			c.label, fmt.Sprintf("%.0f", s.rps), fmt.Sprintf("%.0f", over.rps), s.cpuRq, over.cpuRq, what, extra, tput)
		if p := b.stats[c.key]; p != nil && p.res.Load.Requests > 0 {
			var hits, ns uint64
			var parts []string
			for _, name := range c.progs {
				if d, ok := p.progs[name]; ok {
					hits += d.Runs
					ns += d.TotalNS
					parts = append(parts, fmt.Sprintf("%s %.2f/request at %.0f ns", name, float64(d.Runs)/float64(p.res.Load.Requests), d.NSPerRun()))
				}
			}
			if hits > 0 {
				perReq := float64(hits) / float64(p.res.Load.Requests)
				fmt.Fprintf(w, " Uprobe hits (profile run): %.2f per request (%s). So **%.1f µs per uprobe hit** (%.1f µs from throughput), of which the BPF program itself is %.2f µs; the rest is the uprobe trap and its return.",
					perReq, strings.Join(parts, ", "), extra/perReq, tput/perReq, float64(ns)/float64(hits)/1e3)
			}
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)
}

// printProfile writes the run times of memdiag's programs in the profiling
// runs. Tracepoint programs run for every process on the machine (they
// return early for the untraced ones), so their counts are the machine's;
// uprobe programs are filtered to the service.
func (b *bench) printProfile(w io.Writer) {
	if len(b.stats) == 0 {
		return
	}
	fmt.Fprintln(w, "BPF run times with kernel.bpf_stats_enabled=1, one extra run per memdiag arm (not in the medians); programs by total time, the top 10 and every uprobe program:")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| arm | req/s | program | runs/s (machine-wide) | runs per request | ns per run | ms per second | µs per request |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
	for _, a := range b.arms {
		p := b.stats[a.key]
		if p == nil {
			continue
		}
		secs := p.res.Load.Duration.Seconds()
		reqs := float64(p.res.Load.Requests)
		ds := slices.Collect(maps.Values(p.progs))
		slices.SortFunc(ds, func(x, y progDelta) int { return int(int64(y.TotalNS) - int64(x.TotalNS)) })
		var total uint64
		for _, d := range ds {
			total += d.TotalNS
		}
		first := true
		for i, d := range ds {
			if d.Runs == 0 || i >= 10 && !strings.HasPrefix(d.Name, "on_ab_") && d.Name != "on_llhttp_execute" {
				continue
			}
			label, rps := "", ""
			if first {
				label, rps, first = a.name, fmt.Sprintf("%.0f", p.res.Load.RPS()), false
			}
			fmt.Fprintf(w, "| %s | %s | %s | %.0f | %.2f | %.0f | %.1f | %.2f |\n", label, rps, d.Name,
				float64(d.Runs)/secs, float64(d.Runs)/reqs, d.NSPerRun(), float64(d.TotalNS)/1e6/secs, float64(d.TotalNS)/1e3/reqs)
		}
		fmt.Fprintf(w, "| | | **all %d programs** | | | | %.1f | %.2f |\n", len(ds), float64(total)/1e6/secs, float64(total)/1e3/reqs)
	}
	fmt.Fprintln(w)
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

// firstClause cuts a long failure message to its first part.
func firstClause(s string) string {
	if i := strings.Index(s, " / "); i > 0 {
		return s[:i] + " …"
	}
	return s
}

// mdEscape keeps a message from breaking a table row.
func mdEscape(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

func nodeVersion(node string) string {
	out, err := exec.Command(node, "--version").Output()
	if err != nil {
		return "node ?"
	}
	return "node " + strings.TrimSpace(string(out))
}

func kernel() string {
	data, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "Linux ?"
	}
	return "Linux " + strings.TrimSpace(string(data))
}

func cpuModel() string {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
		}
	}
	return "?"
}
