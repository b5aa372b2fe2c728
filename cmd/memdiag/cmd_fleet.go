package main

import (
	"context"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/memdiag/memdiag/container"
	"github.com/memdiag/memdiag/fleet"
	"github.com/memdiag/memdiag/target"
)

func newFleetCommand() *cli.Command {
	return &cli.Command{
		Name:      "fleet",
		Usage:     "trace every container of this Kubernetes node a selector picks, as they come and go (one memdiag per node: a DaemonSet)",
		UsageText: "memdiag fleet --select SELECTOR [--metrics-addr :9464] [flags]",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "select", Usage: "the containers to trace: comma-separated `TERMS`, all must hold: a pod label (memdiag.io/trace=true, or label:KEY[=VALUE]), annotation:KEY[=VALUE], namespace:NAME, container:NAME (values may be globs); labels and annotations need the CRI socket"},
			&cli.IntFlag{Name: "max-targets", Value: 16, Usage: "trace at most `N` containers at once (one BPF program serves them all; each costs a session's account; the others are counted and logged)"},
			&cli.DurationFlag{Name: "poll", Value: 2 * time.Second, Usage: "look for containers that started or went every `D`"},
			&cli.StringSliceFlag{Name: "cri-socket", Usage: "the container runtime's CRI `SOCKET` (repeatable; default: containerd's and cri-o's usual paths)"},
			&cli.StringSliceFlag{Name: "pod-logs", Usage: "the kubelet's container log links `DIR` (repeatable; default /var/log/containers)"},
			&cli.StringFlag{Name: "cgroup-root", Usage: "the cgroup v2 `DIR` the node's pods run under: a process that starts below it is traced from its exec, before its container is named (default: kubepods.slice or kubepods under the cgroup v2 root)"},
		}, commonFlags()...),
		Action: func(c *cli.Context) error {
			if c.Args().Len() > 0 {
				return usageErr("fleet takes no arguments, got %q (give the containers with --select)", c.Args().First())
			}
			if !c.IsSet("select") {
				return usageErr("fleet needs --select, e.g. --select memdiag.io/trace=true or --select namespace:shop")
			}
			sel, err := fleet.ParseSelector(c.String("select"))
			if err != nil {
				return usageErr("--select: %v", err)
			}
			for _, f := range []string{"report-json", "report-html", "record", "live", "tls", "exact-external", "native-heap"} {
				if c.IsSet(f) {
					return usageErr("--%s traces one target: fleet mode writes each container's reports under --reports-dir", f)
				}
			}
			switch n := c.Int("max-targets"); {
			case n < 1 || n > 256:
				return usageErr("--max-targets must be from 1 to 256, got %d", n)
			case c.Duration("poll") < 100*time.Millisecond:
				return usageErr("--poll must be at least 100ms, got %s", c.Duration("poll"))
			}
			opts, err := optionsFrom(c)
			if err != nil {
				return err
			}
			// No --exact-external nor --native-heap here: their table of
			// live blocks (27 MiB preallocated, per trace) shrinks to one
			// entry.
			opts.MaxOutstanding = 1
			// The samplers' uprobes would outlive each container on the
			// one tracer all share.
			if v := c.String("heap-sampling"); c.IsSet("heap-sampling") && v != "off" {
				return usageErr("--heap-sampling %s: fleet mode does not sample runtime heaps yet (the runtime heap is the mapping estimate); give off or leave it out", v)
			}
			opts.HeapSampling = "off"
			src := container.DefaultSources()
			src.Docker, src.Storage, src.Nerdctl = nil, nil, nil
			if s := c.StringSlice("cri-socket"); len(s) > 0 {
				src.CRI = s
			}
			if d := c.StringSlice("pod-logs"); len(d) > 0 {
				src.PodLogs = d
			}
			// A selector this node cannot answer fails now, before
			// anything is written.
			if _, err := fleet.List(c.Context, sel, src); err != nil {
				return usageErr("%v", err)
			}
			root, err := fleet.CgroupRoot(src.Roots, c.String("cgroup-root"))
			if err != nil {
				return usageErr("%v", err)
			}
			w := fleet.NewWatcher(sel, src, fleet.Options{Interval: c.Duration("poll"), MaxTargets: c.Int("max-targets")})
			return runFleet(c.Context, w, root, opts)
		},
	}
}

// runFleet runs fleet mode until a signal or --duration (package fleet
// does the work); cmd supplies the tracer's open sequence.
func runFleet(ctx context.Context, w *fleet.Watcher, root string, opts target.Options) (err error) {
	if container.DefaultRoots().V2 == "" {
		return usageErr("fleet mode needs the cgroup v2 hierarchy (/sys/fs/cgroup or /sys/fs/cgroup/unified) to follow containers")
	}
	var cl target.Closers
	defer cl.CloseInto(&err)
	if err := opts.PrepareOutputs(&cl); err != nil {
		return err
	}
	// Each trace holds its own account (the tracer is shared): memdiag's
	// soft heap limit grows with the number it may hold.
	debug.SetMemoryLimit(int64(12<<20 + w.MaxTargets()*(4<<20)))
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if opts.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.Duration)
		defer cancel()
	}
	opts.Version = version
	if err := fleet.Serve(ctx, w, fleet.Config{Session: opts.Config, Root: root, Open: opts.SharedOpener()}); err != nil {
		return usageErr("%v", err)
	}
	return nil
}
