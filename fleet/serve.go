package fleet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/memdiag/memdiag/container"
	"github.com/memdiag/memdiag/metrics"
	"github.com/memdiag/memdiag/procfs"
	"github.com/memdiag/memdiag/report"
	"github.com/memdiag/memdiag/safefile"
	"github.com/memdiag/memdiag/session"
	"github.com/memdiag/memdiag/target"
	"github.com/memdiag/memdiag/tracer"
)

// OpenShared loads the one tracer of fleet mode: it follows the cgroup v2
// directory root (the node's pods cgroup), every process that execs below
// it traced from its exec; unknown is called when a process execs in a
// cgroup no target claims (tracer.OpenShared). cmd/memdiag supplies it.
type OpenShared func(root string, unknown func(cgroup uint64)) (*tracer.Shared, error)

// PendingGrace is how long the processes of a cgroup below the root that
// no container named are traced, waiting for their container's metadata,
// before they are dropped (their state freed).
const PendingGrace = 10 * time.Second

// Config is fleet mode's settings.
type Config struct {
	// Session is every container's session settings, as a template:
	// LogPath is memdiag's own log ([FLEET] lines), whose directory gets
	// each container's log; each container's JSON report goes under
	// ReportsDir and its dumps under DumpsDir, in files and directories
	// named <namespace>_<pod>_<container>-<id>-<time>. Metrics, when set,
	// serves every container's series; ReadyFile is created once the
	// containers running at the start are traced.
	Session session.Config
	// Root is the cgroup v2 directory the node's containers run under
	// (kubepods.slice): a process that execs below it is traced from its
	// exec, before any poll names its container.
	Root string
	// Open loads the tracer every container shares.
	Open OpenShared
}

// Serve traces the watcher's targets until ctx ends: one session per
// container, memdiag's own log getting the [FLEET] lines. It returns once
// every trace is finished; an error only when nothing could start (the
// first poll, the ready file).
func Serve(ctx context.Context, w *Watcher, cfg Config) error {
	sc := cfg.Session
	log, warn := report.OpenLog(sc.LogPath, report.Stderr)
	if warn != "" {
		fmt.Fprintln(os.Stderr, warn)
	}
	defer log.Close()
	if sc.Console != nil {
		log.Tee(sc.Console)
	}
	var consoleMu sync.Mutex
	r := &Runner{Watcher: w, Version: sc.Version, Logf: func(tag, format string, args ...any) {
		log.Printf(tag, format, args...)
		if sc.Console != nil && tag == "FLEET" {
			consoleMu.Lock()
			fmt.Fprintf(sc.Console, "%s [%s] %s\n", time.Now().Format("15:04:05"), tag, fmt.Sprintf(format, args...))
			consoleMu.Unlock()
		}
	}}
	if sc.Metrics != nil {
		r.Metrics = metrics.NewFleet(sc.Version)
		defer serveMetrics(r.Metrics, sc.Metrics, log)()
	}
	// Loaded before the first poll: a container starting while memdiag
	// starts is traced from its first exec too.
	shared, err := cfg.Open(cfg.Root, func(uint64) { w.Wake() })
	if err != nil {
		return err
	}
	// Closed last: every trace's Finish reads it.
	defer shared.Close()
	w.afterPoll = func() { resolvePending(shared, w, r.Logf) }
	r.Open = func(t Target, exp *metrics.Exporter) (Traced, error) {
		c := sc
		// --duration ends memdiag (ctx), not each container's trace.
		c.Metrics, c.Exporter, c.ReadyFile, c.Duration = nil, exp, "", 0
		base := fmt.Sprintf("%s_%s_%s-%s-%s", t.Namespace, t.Pod, t.Container, t.ID[:12], time.Now().UTC().Format("20060102T150405Z"))
		c.LogPath = filepath.Join(filepath.Dir(sc.LogPath), base+".log")
		c.ReportJSON = filepath.Join(sc.ReportsDir, base+".json")
		c.DumpsDir = filepath.Join(sc.DumpsDir, base)
		if c.Console != nil {
			c.Console = NewPrefixed(c.Console, &consoleMu, t.Name()+" ")
		}
		return openTarget(t, c, shared)
	}
	if sc.ReadyFile != "" {
		r.Ready = func() error {
			return safefile.WriteNew(sc.ReadyFile, fmt.Appendf(nil, "%d\n", os.Getpid()))
		}
	}
	log.Printf("FLEET", "memdiag %s: following the containers of this node that the selector picks, at most %d at once, each from its first exec under %s (one tracer for all)", sc.Version, w.MaxTargets(), cfg.Root)
	if err := r.Run(ctx); err != nil {
		return err
	}
	log.Printf("FLEET", "stopped: every trace finished")
	return nil
}

// serveMetrics serves f on ln until the returned function is called.
func serveMetrics(f *metrics.Fleet, ln net.Listener, log *report.Log) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := f.ServeListener(ctx, ln); err != nil {
			log.Printf("ERROR", "metrics: %v", err)
		}
	}()
	log.Printf("METRICS", "serving Prometheus metrics on %s/metrics", ln.Addr())
	return func() { cancel(); <-served }
}

// resolvePending runs after each poll: cgroups made below a traced
// container's become its own (processes pending there adopted), the
// cgroups of containers the runtime names and the selector does not pick
// are ignored by the kernel
// (their processes dropped), and processes of cgroups no container named
// within PendingGrace are dropped.
func resolvePending(sh *tracer.Shared, w *Watcher, logf func(tag, format string, args ...any)) {
	// Cgroups made below a traced container's are its.
	sh.Nest()
	var ids []uint64
	for _, d := range w.Others() {
		if id, err := tracer.CgroupID(d); err == nil {
			ids = append(ids, id)
		}
	}
	n, err := sh.SetIgnored(ids)
	if err != nil {
		logf("ERROR", "ignoring the containers not selected: %s", oneLine(err))
	}
	if n > 0 {
		logf("FLEET", "stopped following %d processes started in containers the selector does not pick (their kernel state freed)", n)
	}
	for cg, since := range sh.Pending() {
		if time.Since(since) < PendingGrace {
			continue
		}
		n, err := sh.Drop(cg)
		if err != nil {
			logf("ERROR", "%s", oneLine(err))
		}
		logf("FLEET", "stopped following %d processes of cgroup %d: no container of the node named it within %s (their kernel state freed)", n, cg, PendingGrace)
	}
}

// openTarget starts the trace of one container: its share of the tracer
// claims its cgroup, so the processes traced from their exec there are
// its (all of their memory is growth); its processes running before are
// traced from here (their memory now is the baseline); a session starts.
func openTarget(t Target, c session.Config, sh *tracer.Shared) (Traced, error) {
	dir := t.Cgroup
	if dir == "" {
		return Traced{}, errors.New("no cgroup v2 directory")
	}
	pids, err := container.Procs(dir)
	if err != nil || len(pids) == 0 {
		return Traced{}, fmt.Errorf("no process in %s", dir)
	}
	main := container.Main(pids)
	proc, err := target.Watch(main)
	if err != nil {
		return Traced{}, err
	}
	v, fromExec, err := sh.NewView(dir, pids)
	if err != nil {
		proc.Close()
		return Traced{}, err
	}
	fail := func(err error) (Traced, error) {
		v.Close()
		proc.Close()
		return Traced{}, err
	}
	// The runtime heap samplers' uprobes would stay attached to the
	// shared tracer after the container goes: not in fleet mode.
	c.Sampler, c.Stacks, c.Exe = nil, target.Stacks(sh.Tracer()), fmt.Sprintf("/proc/%d/exe", main)
	// The baseline is read after the processes are targets, so no change
	// falls between the two; processes traced from their exec have none.
	st, err := procfs.ReadStatus(main)
	if err != nil || st.Zombie || proc.Exited() {
		return fail(fmt.Errorf("process %d exited while memdiag was attaching", main))
	}
	var base report.Baseline
	for _, p := range pids {
		if slices.Contains(fromExec, p) {
			continue
		}
		if p == main {
			b := target.Baseline(st)
			base.Memory, base.HWM = base.Memory.Add(b.Memory), b.HWM
		} else if st, err := procfs.ReadStatus(p); err == nil {
			base.Memory = base.Memory.Add(target.Baseline(st).Memory)
		}
	}
	tgt := report.Target{PID: uint32(main), Comm: st.Name, Exe: procfs.Exe(main), Cmdline: procfs.Cmdline(main), Mode: "attach",
		Container: t.ID, ContainerName: t.Name(), Cgroup: dir}
	s := session.New(v, c, tgt, base, time.Now().Round(0))
	if err := s.Start(); err != nil {
		return fail(err)
	}
	done := proc.Done()
	go func() {
		<-done
		proc.Close()
	}()
	return Traced{Session: s, Exited: done}, nil
}
