package main

import (
	"time"

	"github.com/urfave/cli/v2"
)

// commonFlags are shared by attach and run.
func commonFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "log", Value: "logs/memory-diagnostics.log", Usage: "append the live log to `FILE` (console if it cannot be written)"},
		&cli.DurationFlag{Name: "interval", Value: 60 * time.Second, Usage: "write a [PERIODIC] line every `D`"},
		&cli.StringFlag{Name: "report-json", Usage: "write the JSON report to `FILE` at exit (a new file)"},
		&cli.StringFlag{Name: "ready-file", Usage: "create `FILE` once every probe is attached (for scripts and tests)"},
		&cli.DurationFlag{Name: "duration", Usage: "stop tracing after `D` (0: until the target exits or a signal)"},
		&cli.IntFlag{Name: "ringbuf-size", Value: 256 << 10, Usage: "lifecycle ring buffer `BYTES` (a power of two)"},
		&cli.IntFlag{Name: "max-buckets", Value: 16384, Usage: "bound on the kernel's bucket table (`N` entries)"},
	}
}

// sessionOptions are the values of commonFlags.
type sessionOptions struct {
	logPath      string
	interval     time.Duration
	reportJSON   string
	readyFile    string
	duration     time.Duration
	ringbufBytes int
	maxBuckets   int
}

func optionsFrom(c *cli.Context) (sessionOptions, error) {
	o := sessionOptions{
		logPath:      c.String("log"),
		interval:     c.Duration("interval"),
		reportJSON:   c.String("report-json"),
		readyFile:    c.String("ready-file"),
		duration:     c.Duration("duration"),
		ringbufBytes: c.Int("ringbuf-size"),
		maxBuckets:   c.Int("max-buckets"),
	}
	switch {
	case o.interval <= 0:
		return o, usageErr("--interval must be positive, got %s", o.interval)
	case o.duration < 0:
		return o, usageErr("--duration must not be negative, got %s", o.duration)
	case o.ringbufBytes < 4096 || o.ringbufBytes&(o.ringbufBytes-1) != 0:
		return o, usageErr("--ringbuf-size must be a power of two of at least 4096, got %d", o.ringbufBytes)
	case o.maxBuckets < 64:
		return o, usageErr("--max-buckets must be at least 64, got %d", o.maxBuckets)
	}
	return o, nil
}
