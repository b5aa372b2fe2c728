package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/memdiag/memdiag/bench/benchkit"
)

// row is every measured round of one workload.
type row struct {
	w        workload
	untraced []result
	traced   []tracedResult
	foreign  int // pairs kept although another memdiag was loaded during them
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// rate formats a throughput: "512k faults/s".
func rate(perSec float64, what string) string {
	if perSec >= 1e6 {
		return fmt.Sprintf("%.2fM %s/s", perSec/1e6, what)
	}
	return fmt.Sprintf("%.0fk %s/s", perSec/1e3, what)
}

// pct formats a traced/untraced ratio as a signed percentage.
func pct(ratio float64) string { return fmt.Sprintf("%+.1f%%", (ratio-1)*100) }

// tableInfo is what the caption line says about the run.
type tableInfo struct {
	rounds                int
	bystander             bool
	version               string // memdiag version
	loadBefore, loadAfter string // 1-minute load averages
}

// printTable writes the results as a caption line and a markdown table.
func printTable(out io.Writer, rows []row, info tableInfo) {
	w := bufio.NewWriter(out)
	defer w.Flush()
	mode := "memdiag attached to the workload"
	if info.bystander {
		mode = "bystander: in \"traced\" runs memdiag is attached to another, idle process"
	}
	fmt.Fprintf(w, "%s, %s; %d interleaved untraced/traced rounds per workload, medians; %s; load average %s before, %s after.\n\n",
		info.version, mode, info.rounds, machine(), info.loadBefore, info.loadAfter)
	fmt.Fprintln(w, "| workload | untraced | traced | slowdown (elapsed) | slowdown (CPU time) | CPU added per fault or syscall | memdiag peak RSS | memdiag CPU | attach time | lost events |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rows {
		elapsed := func(x result) float64 { return x.Elapsed.Seconds() }
		cpu := func(x result) float64 { return x.CPU.Seconds() }
		uEl, tEl := benchkit.Median(benchkit.Collect(r.untraced, elapsed)), benchkit.Median(benchkit.Collect(results(r.traced), elapsed))
		uCPU, tCPU := benchkit.Median(benchkit.Collect(r.untraced, cpu)), benchkit.Median(benchkit.Collect(results(r.traced), cpu))
		var pairs []float64
		for i := range r.traced {
			pairs = append(pairs, r.traced[i].Elapsed.Seconds()/r.untraced[i].Elapsed.Seconds())
		}
		peaks := benchkit.Collect(r.traced, func(t tracedResult) float64 { return float64(t.usage.PeakRSS) })
		var lost, undecodable uint64
		for _, t := range r.traced {
			lost += t.lost
			undecodable += t.undecodable
		}
		lostCell := fmt.Sprint(lost)
		if undecodable > 0 {
			lostCell += fmt.Sprintf(" (and %d undecodable)", undecodable)
		}
		work := float64(r.untraced[0].count(r.w))
		// The CPU time each event adds, per pair (traced minus untraced
		// CPU time over the events), so machines whose faults cost
		// different amounts compare.
		var added []float64
		for i := range r.traced {
			added = append(added, (r.traced[i].CPU-r.untraced[i].CPU).Seconds()/work*1e9)
		}
		fmt.Fprintf(w, "| %s: %s, %.0f %s | %.3f s (%s) | %.3f s (%s) | %s (per round %s … %s) | %s | %s (median of pairs; %s) | %s (max %s) | %.2f s | %s (max %s) | %s |\n",
			r.w.name, r.w.desc, work, r.w.rate,
			uEl, rate(work/uEl, r.w.rate),
			tEl, rate(work/tEl, r.w.rate),
			pct(tEl/uEl), pct(slices.Min(pairs)), pct(slices.Max(pairs)),
			pct(tCPU/uCPU),
			nsPer(benchkit.Median(added)), nsRange(added),
			mib(int64(benchkit.Median(peaks))), mib(int64(slices.Max(peaks))),
			benchkit.Median(benchkit.Collect(r.traced, func(t tracedResult) float64 { return t.usage.CPU.Seconds() })),
			ms(benchkit.Median(benchkit.Collect(r.traced, func(t tracedResult) float64 { return t.attach.Seconds() }))),
			ms(slices.Max(benchkit.Collect(r.traced, func(t tracedResult) float64 { return t.attach.Seconds() }))),
			lostCell)
	}
	for _, r := range rows {
		if r.foreign > 0 {
			fmt.Fprintf(w, "\n%s: another memdiag was loaded on the machine during %d of %d pairs, even after reruns; its programs ran on the workload's faults in both arms.\n",
				r.w.name, r.foreign, len(r.traced))
		}
	}
}

// nsPer formats nanoseconds per event.
func nsPer(ns float64) string { return fmt.Sprintf("%+.0f ns", ns) }

// nsRange formats the quartiles of per-pair figures: "IQR -3 … +12 ns".
func nsRange(xs []float64) string {
	s := slices.Clone(xs)
	slices.Sort(s)
	q := func(f float64) float64 { return s[int(f*float64(len(s)-1)+0.5)] }
	return fmt.Sprintf("quartiles %+.0f … %+.0f ns", q(0.25), q(0.75))
}

// results returns the workload results of traced runs.
func results(ts []tracedResult) []result {
	out := make([]result, len(ts))
	for i, t := range ts {
		out[i] = t.result
	}
	return out
}

// ms formats seconds as a duration rounded to the millisecond.
func ms(secs float64) string {
	return time.Duration(secs * float64(time.Second)).Round(time.Millisecond).String()
}

// machine describes the machine: CPU model, CPU count, kernel release.
func machine() string {
	model := "unknown CPU"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		s := bufio.NewScanner(f)
		for s.Scan() {
			if k, v, ok := strings.Cut(s.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	var u unix.Utsname
	release := "?"
	if unix.Uname(&u) == nil {
		release = unix.ByteSliceToString(u.Release[:])
	}
	return fmt.Sprintf("%s, %d CPUs, Linux %s", model, runtime.NumCPU(), release)
}
