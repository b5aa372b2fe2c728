package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/memdiag/memdiag/container"
	"github.com/memdiag/memdiag/fleet"
	"github.com/memdiag/memdiag/metrics"
	"github.com/memdiag/memdiag/procfs"
	"github.com/memdiag/memdiag/report"
	"github.com/memdiag/memdiag/session"
)

func newFleetCommand() *cli.Command {
	return &cli.Command{
		Name:      "fleet",
		Usage:     "trace every container of this Kubernetes node a selector picks, as they come and go (one memdiag per node: a DaemonSet)",
		UsageText: "memdiag fleet --select SELECTOR [--metrics-addr :9464] [flags]",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "select", Usage: "the containers to trace: comma-separated `TERMS`, all must hold: a pod label (memdiag.io/trace=true, or label:KEY[=VALUE]), annotation:KEY[=VALUE], namespace:NAME, container:NAME (values may be globs); labels and annotations need the CRI socket"},
			&cli.IntFlag{Name: "max-targets", Value: 16, Usage: "trace at most `N` containers at once (each costs one loaded BPF program; the others are counted and logged)"},
			&cli.DurationFlag{Name: "poll", Value: 2 * time.Second, Usage: "look for containers that started or went every `D`"},
			&cli.StringSliceFlag{Name: "cri-socket", Usage: "the container runtime's CRI `SOCKET` (repeatable; default: containerd's and cri-o's usual paths)"},
			&cli.StringSliceFlag{Name: "pod-logs", Usage: "the kubelet's container log links `DIR` (repeatable; default /var/log/containers)"},
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
			for _, f := range []string{"report-json", "report-html", "record", "live", "tls", "exact-external"} {
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
			// No --exact-external here: its table of live ArrayBuffers
			// (27 MiB preallocated, per trace) shrinks to one entry.
			opts.maxOutstanding = 1
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
			w := fleet.NewWatcher(sel, src, fleet.Options{Interval: c.Duration("poll"), MaxTargets: c.Int("max-targets")})
			return runFleet(c.Context, w, opts)
		},
	}
}

// runFleet traces the watcher's targets until a signal or --duration: one
// session per container, each with its own log, JSON report and metrics
// series, memdiag's own log getting the [FLEET] lines.
func runFleet(ctx context.Context, w *fleet.Watcher, opts options) (err error) {
	if container.DefaultRoots().V2 == "" {
		return usageErr("fleet mode needs the cgroup v2 hierarchy (/sys/fs/cgroup or /sys/fs/cgroup/unified) to follow containers")
	}
	var cl closers
	defer cl.closeInto(&err)
	ready := opts.ReadyFile
	opts.ReadyFile = ""
	if err := prepareOutputs(&opts, &cl); err != nil {
		return err
	}
	if ready != "" {
		if err := report.CheckNew(ready); err != nil {
			return usageErr("%v", err)
		}
	}
	// Each trace holds its own account: memdiag's soft heap limit
	// (main) grows with the number it may hold.
	debug.SetMemoryLimit(int64(12<<20 + w.MaxTargets()*(4<<20)))
	log, warn := report.OpenLog(opts.LogPath, report.Stderr)
	if warn != "" {
		fmt.Fprintln(os.Stderr, warn)
	}
	defer log.Close()
	if opts.Console != nil {
		log.Tee(opts.Console)
	}
	logDir := filepath.Dir(opts.LogPath)
	var consoleMu sync.Mutex
	r := &fleet.Runner{Watcher: w, Version: version, Logf: func(tag, format string, args ...any) {
		log.Printf(tag, format, args...)
		if opts.Console != nil && tag == "FLEET" {
			consoleMu.Lock()
			fmt.Fprintf(opts.Console, "%s [%s] %s\n", time.Now().Format("15:04:05"), tag, fmt.Sprintf(format, args...))
			consoleMu.Unlock()
		}
	}}
	if opts.Metrics != nil {
		r.Metrics = metrics.NewFleet(version)
		sctx, stopServing := context.WithCancel(context.Background())
		served := make(chan struct{})
		ln := opts.Metrics
		go func() {
			defer close(served)
			if err := r.Metrics.ServeListener(sctx, ln); err != nil {
				log.Printf("ERROR", "metrics: %v", err)
			}
		}()
		cl.add(func() error { stopServing(); <-served; return nil })
		log.Printf("METRICS", "serving Prometheus metrics on %s/metrics", ln.Addr())
	}
	r.Open = func(t fleet.Target, exp *metrics.Exporter) (fleet.Traced, error) {
		o := opts
		o.Metrics, o.Exporter = nil, exp
		base := fmt.Sprintf("%s_%s_%s-%s-%s", t.Namespace, t.Pod, t.Container, t.ID[:12], time.Now().UTC().Format("20060102T150405Z"))
		o.LogPath = filepath.Join(logDir, base+".log")
		o.ReportJSON = filepath.Join(o.ReportsDir, base+".json")
		o.DumpsDir = filepath.Join(o.DumpsDir, base)
		if o.Console != nil {
			o.Console = fleet.NewPrefixed(o.Console, &consoleMu, t.Name()+" ")
		}
		return openTarget(t, o)
	}
	if ready != "" {
		r.Ready = func() error { return report.WriteNew(ready, fmt.Appendf(nil, "%d\n", os.Getpid())) }
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if opts.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.Duration)
		defer cancel()
	}
	log.Printf("FLEET", "memdiag %s: following the containers of this node that the selector picks", version)
	if err := r.Run(ctx); err != nil {
		return usageErr("%v", err)
	}
	log.Printf("FLEET", "stopped: every trace finished")
	return nil
}

// openTarget starts the trace of one container: its cgroup followed (a
// process it starts later is traced from its exec), its processes now
// traced from here, a session started.
func openTarget(t fleet.Target, o options) (_ fleet.Traced, err error) {
	dir := t.Cgroup
	if dir == "" {
		return fleet.Traced{}, fmt.Errorf("no cgroup v2 directory")
	}
	pids, err := container.Procs(dir)
	if err != nil || len(pids) == 0 {
		return fleet.Traced{}, fmt.Errorf("no process in %s", dir)
	}
	main := container.Main(pids)
	if _, err := checkProcess(main); err != nil {
		return fleet.Traced{}, err
	}
	var cl closers
	defer func() {
		if err != nil {
			cl.close()
		}
	}()
	pidfd, err := unix.PidfdOpen(main, 0)
	if err != nil {
		return fleet.Traced{}, fmt.Errorf("watching process %d: %w", main, err)
	}
	exe := fmt.Sprintf("/proc/%d/exe", main)
	tr, others, err := openTracer(&o, probes{cgroup: dir, main: main, pids: pids, exe: exe, uprobe: main}, &cl)
	if err != nil {
		unix.Close(pidfd)
		return fleet.Traced{}, err
	}
	st, err := checkProcess(main)
	if err != nil || exited(pidfd) {
		unix.Close(pidfd)
		return fleet.Traced{}, fmt.Errorf("process %d exited while memdiag was attaching", main)
	}
	baseline := baselineOf(st)
	for _, p := range others {
		if st, err := checkProcess(p); err == nil {
			baseline.Memory = baseline.Memory.Add(baselineOf(st).Memory)
		}
	}
	target := report.Target{PID: uint32(main), Comm: st.Name, Exe: procfs.Exe(main), Cmdline: procfs.Cmdline(main), Mode: "attach",
		Container: t.ID, ContainerName: t.Name(), Cgroup: dir}
	s := session.New(tr, o.Config, target, baseline, now())
	if err := s.Start(); err != nil {
		unix.Close(pidfd)
		return fleet.Traced{}, err
	}
	exitedCh := waitExit(pidfd)
	go func() { <-exitedCh; unix.Close(pidfd) }()
	return fleet.Traced{Session: s, Exited: exitedCh}, nil
}
