package main

import (
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/memdiag/memdiag/config"
	"github.com/memdiag/memdiag/report"
	"github.com/memdiag/memdiag/session"
	"github.com/memdiag/memdiag/target"
	"github.com/memdiag/memdiag/tracer"
)

// commonFlags are shared by attach and run.
func commonFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "log", Value: "logs/memory-diagnostics.log", Usage: "append the live log to `FILE` (console if it cannot be written)"},
		&cli.DurationFlag{Name: "interval", Value: 60 * time.Second, Usage: "write a [PERIODIC] line every `D`"},
		&cli.StringFlag{Name: "report-json", Usage: "write the JSON report to `FILE` at exit (a new file)"},
		&cli.StringFlag{Name: "report-html", Usage: "write the HTML report to `FILE` at exit (a new file; opens offline)"},
		&cli.StringFlag{Name: "record", Usage: "record the event stream to `FILE` (a new file): `memdiag report FILE` rebuilds every report later, without root"},
		&cli.StringFlag{Name: "reports-dir", Value: "reports", Usage: "where SIGUSR1 writes the current report (JSON and HTML)"},
		&cli.StringFlag{Name: "ready-file", Usage: "create `FILE` once every probe is attached (for scripts and tests)"},
		&cli.DurationFlag{Name: "duration", Usage: "stop tracing after `D` (0: until the target exits or a signal)"},
		&cli.IntFlag{Name: "ringbuf-size", Value: tracer.DefaultRingbufBytes, Usage: "lifecycle ring buffer `BYTES` (a power of two)"},
		&cli.IntFlag{Name: "max-buckets", Value: 16384, Usage: "bound on the kernel's bucket table (`N` entries, 64 to 1048576) and on live operations (N rounded up to a power of two)"},
		&cli.IntFlag{Name: "max-outstanding", Value: 262144, Usage: "with --exact-external or --native-heap, bound on the table of live blocks (`N` entries; overflow is counted)"},
		&cli.StringFlag{Name: "config", Usage: "name operations' categories with the rules in `FILE` (YAML, see examples/classic-categories.yaml)"},
		&cli.StringFlag{Name: "growth-rss", Value: "50MB", Usage: "log [GROWTH] for an op whose RSS grows by `SIZE` or more"},
		&cli.StringFlag{Name: "growth-external", Value: "10MB", Usage: "log [GROWTH] for an op whose external memory grows by `SIZE` or more"},
		&cli.StringFlag{Name: "summary-rss-rate", Value: "100MB", Usage: "log a [SUMMARY] block at an interval whose RSS grew faster than `SIZE` per minute"},
		&cli.StringFlag{Name: "summary-external-rate", Value: "50MB", Usage: "log a [SUMMARY] block at an interval whose external memory grew faster than `SIZE` per minute"},
		&cli.BoolFlag{Name: "exact-external", Usage: "count external memory exactly with uprobes on Node.js's ArrayBuffer allocator (~3 traps per Buffer, opt-in)"},
		&cli.BoolFlag{Name: "native-heap", Usage: "follow the native heap with uprobes on libc's malloc, calloc, realloc and free (allocations of 4 KiB and more all, smaller ones sampled): right native-heap verdicts (Python objects over 512 B, C extensions, Node.js Buffers from the malloc heap), at a diagnosis tool's cost (every malloc and free traps: see BENCHMARKS.md); opt-in, excludes --exact-external"},
		&cli.IntFlag{Name: "keep-ops", Value: 100, Usage: "remember the last `N` ops per category"},
		&cli.BoolFlag{Name: "tls", Usage: "name HTTPS requests: of a Node.js target (uprobe on llhttp_execute: ~20 µs per parsed chunk), or of a target linked with OpenSSL, e.g. Python (uprobes on SSL_read/SSL_read_ex in its libssl: two per read); opt-in"},
		&cli.StringFlag{Name: "dump-at", Value: "2GB,4GB,6GB,8GB,10GB", Usage: "dump when RSS crosses these `SIZES` (and percentages of the cgroup memory limit, like 80%)"},
		&cli.BoolFlag{Name: "no-dumps", Usage: "never dump (thresholds are still logged)"},
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "write nothing on the terminal: the log file gets every line (by default [INIT], [GROWTH], [SUMMARY], [VERDICT], errors and the like go to stderr too)"},
		&cli.BoolFlag{Name: "live", Usage: "redraw a per-category table of growth, retained memory and rate on the terminal every 2 s, the latest log lines under it"},
		&cli.StringFlag{Name: "dumps-dir", Value: "dumps", Usage: "write dumps under `DIR` (0700); SIGUSR2 to memdiag takes one now"},
		&cli.StringFlag{Name: "metrics-addr", Usage: "serve Prometheus metrics on `ADDR` (e.g. :9464)"},
		&cli.BoolFlag{Name: "keep-query-values", Usage: "keep query-string values in op names (redacted by default: they carry secrets)"},
		&cli.StringFlag{Name: "heap-sampling", Value: "auto", Usage: "join the runtime's own allocation sampler with the ops, for the verdict: `MODE` auto (Go's memory profiler: uprobes, about one hit per 512 KiB allocated; where Go's linker turned it off, memdiag sets runtime.MemProfileRate to Go's default for the session and back to 0 at exit), v8 (V8's sampling heap profiler over the inspector memdiag opens on loopback while it runs: right JS-heap verdicts, +12% CPU per request on the reference service at the 64 KiB interval, +2% at 1 MiB), all (Go or V8), go, or off (the runtime heap is then a mapping estimate)"},
		&cli.StringFlag{Name: "heap-sample-interval", Value: "64KiB", Usage: "V8 heap sampling: one sample per `SIZE` allocated on average (smaller: more precise, more uprobe traps)"},
	}
}

// optionsFrom reads and checks commonFlags' values.
func optionsFrom(c *cli.Context) (target.Options, error) {
	o := target.Options{
		Config: session.Config{
			LogPath:         c.String("log"),
			Interval:        c.Duration("interval"),
			ReportJSON:      c.String("report-json"),
			ReportHTML:      c.String("report-html"),
			RecordPath:      c.String("record"),
			ReportsDir:      c.String("reports-dir"),
			ReadyFile:       c.String("ready-file"),
			Duration:        c.Duration("duration"),
			KeepOps:         c.Int("keep-ops"),
			KeepQueryValues: c.Bool("keep-query-values"),
			TLS:             c.Bool("tls"),
			ExactExternal:   c.Bool("exact-external"),
			NativeHeap:      c.Bool("native-heap"),
			NoDumps:         c.Bool("no-dumps"),
			DumpsDir:        c.String("dumps-dir"),
			Version:         version,
		},
		RingbufBytes:   c.Int("ringbuf-size"),
		MaxBuckets:     c.Int("max-buckets"),
		MaxOutstanding: c.Int("max-outstanding"),
		MetricsAddr:    c.String("metrics-addr"),
	}
	if o.NativeHeap && o.ExactExternal {
		return o, usageErr("--native-heap already follows Node.js's ArrayBuffers (they come from malloc): give one of --native-heap and --exact-external")
	}
	if !c.Bool("quiet") {
		o.Console = os.Stderr // the log's main lines also go to the terminal
	}
	if c.Bool("live") {
		if c.Bool("quiet") {
			return o, usageErr("--live draws on the terminal and --quiet keeps it silent: give one of them")
		}
		v := report.NewLiveView(os.Stderr)
		o.Console, o.Live = v, v.Update
	}
	var iv int64
	for _, f := range []struct {
		name string
		v    *int64
	}{{"growth-rss", &o.GrowthRSS}, {"summary-rss-rate", &o.SummaryRSSRate}, {"growth-external", &o.GrowthExternal}, {"summary-external-rate", &o.SummaryExtRate}, {"heap-sample-interval", &iv}} {
		v, err := config.ParseSize(c.String(f.name))
		if err != nil {
			return o, usageErr("--%s %s: give a size, e.g. 50MB, 512KiB or 1.5GiB", f.name, c.String(f.name))
		}
		*f.v = v
	}
	o.HeapSampling, o.HeapInterval = c.String("heap-sampling"), uint64(iv)
	var err error
	if o.DumpAt, err = session.ParseDumpAt(c.String("dump-at")); err != nil {
		return o, usageErr("%v", err)
	}
	if path := c.String("config"); path != "" {
		if o.Rules, err = config.Load(path); err != nil {
			return o, usageErr("%v", err)
		}
		text, _ := os.ReadFile(path)
		o.RulesName, o.RulesText = path, string(text)
	}
	return o, o.Validate()
}
