package main

import (
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/memdiag/memdiag/attribution"
	"github.com/memdiag/memdiag/config"
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
		&cli.IntFlag{Name: "ringbuf-size", Value: 256 << 10, Usage: "lifecycle ring buffer `BYTES` (a power of two)"},
		&cli.IntFlag{Name: "max-buckets", Value: 16384, Usage: "bound on the kernel's bucket table (`N` entries)"},
		&cli.IntFlag{Name: "max-outstanding", Value: 262144, Usage: "with --exact-external, bound on the table of live ArrayBuffers (`N` entries; overflow is counted)"},
		&cli.StringFlag{Name: "config", Usage: "name operations' categories with the rules in `FILE` (YAML, see examples/classic-categories.yaml)"},
		&cli.StringFlag{Name: "growth-rss", Value: "50MB", Usage: "log [GROWTH] for an op whose RSS grows by `SIZE` or more"},
		&cli.StringFlag{Name: "growth-external", Value: "10MB", Usage: "log [GROWTH] for an op whose external memory grows by `SIZE` or more"},
		&cli.StringFlag{Name: "summary-rss-rate", Value: "100MB", Usage: "log a [SUMMARY] block at an interval whose RSS grew faster than `SIZE` per minute"},
		&cli.StringFlag{Name: "summary-external-rate", Value: "50MB", Usage: "log a [SUMMARY] block at an interval whose external memory grew faster than `SIZE` per minute"},
		&cli.BoolFlag{Name: "exact-external", Usage: "count external memory exactly with uprobes on Node.js's ArrayBuffer allocator (~3 traps per Buffer, opt-in)"},
		&cli.IntFlag{Name: "keep-ops", Value: 100, Usage: "remember the last `N` ops per category"},
		&cli.BoolFlag{Name: "tls", Usage: "name HTTPS requests of a Node.js target (uprobe on llhttp_execute: ~20 µs per parsed chunk, opt-in)"},
		&cli.StringFlag{Name: "dump-at", Value: "2GB,4GB,6GB,8GB,10GB", Usage: "dump when RSS crosses these `SIZES` (and percentages of the cgroup memory limit, like 80%)"},
		&cli.BoolFlag{Name: "no-dumps", Usage: "never dump (thresholds are still logged)"},
		&cli.StringFlag{Name: "dumps-dir", Value: "dumps", Usage: "write dumps under `DIR` (0700)"},
		&cli.StringFlag{Name: "metrics-addr", Usage: "serve Prometheus metrics on `ADDR` (e.g. :9464)"},
		&cli.BoolFlag{Name: "keep-query-values", Usage: "keep query-string values in op names (redacted by default: they carry secrets)"},
		&cli.StringFlag{Name: "heap-sampling", Value: "auto", Usage: "join the runtime's own allocation sampler with the ops, for the verdict: `MODE` auto (Go's memory profiler, or V8's sampling heap profiler over the inspector memdiag opens on loopback while it runs), go, v8, or off (never opens the inspector; the runtime heap is then a mapping estimate)"},
		&cli.StringFlag{Name: "heap-sample-interval", Value: "64KiB", Usage: "V8 heap sampling: one sample per `SIZE` allocated on average (smaller: more precise, more uprobe traps)"},
	}
}

// sessionOptions are the values of commonFlags.
type sessionOptions struct {
	logPath        string
	interval       time.Duration
	reportJSON     string
	reportHTML     string
	recordPath     string
	reportsDir     string
	cfgPath        string
	cfgText        string
	readyFile      string
	duration       time.Duration
	ringbufBytes   int
	maxBuckets     int
	maxOutstanding int
	cfg            *config.Config
	growthRSS      int64
	growthExt      int64
	summaryRate    int64
	summaryExtRate int64
	exact          bool
	keepOps        int
	keepQuery      bool
	tls            bool
	metricsAddr    string
	dumpAt         []threshold
	noDumps        bool
	dumpsDir       string
	heapSampling   string // auto, go, v8, off
	heapInterval   uint64 // V8 sampling interval, bytes
}

// tracerConfig is the tracer's configuration for a session; launcher is
// run's launcher pid (0 for attach), cgroup a cgroup v2 directory to follow.
func (o sessionOptions) tracerConfig(launcher int, cgroup string) tracer.Config {
	return tracer.Config{
		Launcher: launcher, Cgroup: cgroup,
		RingbufBytes: o.ringbufBytes, MaxBuckets: o.maxBuckets, MaxOutstanding: o.maxOutstanding,
		KeepQueryValues:  o.keepQuery,
		StackSampleBytes: o.stackSampleBytes(),
	}
}

// stackSampleBytes samples user stacks for dumps' profiles, when dumps
// can happen.
func (o sessionOptions) stackSampleBytes() uint64 {
	if o.noDumps || len(o.dumpAt) == 0 {
		return 0
	}
	return 64 << 10
}

// accountOptions are the attribution options of a session.
func (o sessionOptions) accountOptions() attribution.Options {
	return attribution.Options{Categorizer: attribution.NewCategorizer(o.cfg), KeepOps: o.keepOps,
		GrowthRSS: o.growthRSS, GrowthExternal: o.growthExt, ExactExternal: o.exact}
}

func optionsFrom(c *cli.Context) (sessionOptions, error) {
	o := sessionOptions{
		logPath:        c.String("log"),
		interval:       c.Duration("interval"),
		reportJSON:     c.String("report-json"),
		reportHTML:     c.String("report-html"),
		recordPath:     c.String("record"),
		reportsDir:     c.String("reports-dir"),
		readyFile:      c.String("ready-file"),
		duration:       c.Duration("duration"),
		ringbufBytes:   c.Int("ringbuf-size"),
		maxBuckets:     c.Int("max-buckets"),
		maxOutstanding: c.Int("max-outstanding"),
		keepOps:        c.Int("keep-ops"),
		keepQuery:      c.Bool("keep-query-values"),
		tls:            c.Bool("tls"),
		metricsAddr:    c.String("metrics-addr"),
		noDumps:        c.Bool("no-dumps"),
		dumpsDir:       c.String("dumps-dir"),
	}
	var err error
	if o.growthRSS, err = config.ParseSize(c.String("growth-rss")); err != nil {
		return o, usageErr("--growth-rss: %v", err)
	}
	if o.summaryRate, err = config.ParseSize(c.String("summary-rss-rate")); err != nil {
		return o, usageErr("--summary-rss-rate: %v", err)
	}
	if o.growthExt, err = config.ParseSize(c.String("growth-external")); err != nil {
		return o, usageErr("--growth-external: %v", err)
	}
	if o.summaryExtRate, err = config.ParseSize(c.String("summary-external-rate")); err != nil {
		return o, usageErr("--summary-external-rate: %v", err)
	}
	o.exact = c.Bool("exact-external")
	switch o.heapSampling = c.String("heap-sampling"); o.heapSampling {
	case "auto", "go", "v8", "off":
	default:
		return o, usageErr("--heap-sampling %q: give auto, go, v8 or off", o.heapSampling)
	}
	iv, err := config.ParseSize(c.String("heap-sample-interval"))
	if err != nil || iv < 1024 || iv > 64<<20 {
		return o, usageErr("--heap-sample-interval %q: give a size from 1KiB to 64MiB, e.g. 64KiB", c.String("heap-sample-interval"))
	}
	o.heapInterval = uint64(iv)
	if o.dumpAt, err = parseDumpAt(c.String("dump-at")); err != nil {
		return o, usageErr("%v", err)
	}
	if path := c.String("config"); path != "" {
		if o.cfg, err = config.Load(path); err != nil {
			return o, usageErr("%v", err)
		}
		text, _ := os.ReadFile(path)
		o.cfgPath, o.cfgText = path, string(text)
	}
	switch {
	case o.keepOps < 1 || o.keepOps > 100000:
		return o, usageErr("--keep-ops must be from 1 to 100000, got %d", o.keepOps)
	case o.interval <= 0:
		return o, usageErr("--interval must be positive, got %s", o.interval)
	case o.duration < 0:
		return o, usageErr("--duration must not be negative, got %s", o.duration)
	case o.ringbufBytes < 4096 || o.ringbufBytes&(o.ringbufBytes-1) != 0:
		return o, usageErr("--ringbuf-size must be a power of two of at least 4096, got %d", o.ringbufBytes)
	case o.maxBuckets < 64:
		return o, usageErr("--max-buckets must be at least 64, got %d", o.maxBuckets)
	case o.maxOutstanding < 1:
		return o, usageErr("--max-outstanding must be at least 1, got %d", o.maxOutstanding)
	}
	return o, nil
}
