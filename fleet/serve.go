package fleet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/memdiag/memdiag/container"
	"github.com/memdiag/memdiag/metrics"
	"github.com/memdiag/memdiag/procfs"
	"github.com/memdiag/memdiag/report"
	"github.com/memdiag/memdiag/safefile"
	"github.com/memdiag/memdiag/session"
	"github.com/memdiag/memdiag/target"
)

// OpenTracer loads a tracer for one container: it follows the cgroup v2
// directory cgroup (a process that execs there becomes a target), traces
// pids now (main among them), and fills cfg with what the session needs of
// it (runtime samplers, stacks). others are the pids other than main that
// it traces. cmd/memdiag supplies it.
type OpenTracer func(cfg *session.Config, cgroup string, main int, pids []int) (tr session.Tracer, others []int, err error)

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
	// Open loads each container's tracer.
	Open OpenTracer
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
		return openTarget(t, c, cfg.Open)
	}
	if sc.ReadyFile != "" {
		r.Ready = func() error {
			return safefile.WriteNew(sc.ReadyFile, fmt.Appendf(nil, "%d\n", os.Getpid()))
		}
	}
	log.Printf("FLEET", "memdiag %s: following the containers of this node that the selector picks, at most %d at once", sc.Version, w.MaxTargets())
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

// openTarget starts the trace of one container: its cgroup followed, its
// processes now traced from here (their memory now is the baseline), a
// session started.
func openTarget(t Target, c session.Config, open OpenTracer) (Traced, error) {
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
	fail := func(err error) (Traced, error) {
		proc.Close()
		return Traced{}, err
	}
	tr, others, err := open(&c, dir, main, pids)
	if err != nil {
		return fail(err)
	}
	// The baseline is read after the processes are targets, so no change
	// falls between the two.
	st, err := procfs.ReadStatus(main)
	if err != nil || st.Zombie || proc.Exited() {
		tr.Close()
		return fail(fmt.Errorf("process %d exited while memdiag was attaching", main))
	}
	base := target.Baseline(st)
	for _, p := range others {
		if st, err := procfs.ReadStatus(p); err == nil {
			base.Memory = base.Memory.Add(target.Baseline(st).Memory)
		}
	}
	tgt := report.Target{PID: uint32(main), Comm: st.Name, Exe: procfs.Exe(main), Cmdline: procfs.Cmdline(main), Mode: "attach",
		Container: t.ID, ContainerName: t.Name(), Cgroup: dir}
	s := session.New(tr, c, tgt, base, time.Now().Round(0))
	if err := s.Start(); err != nil {
		tr.Close()
		return fail(err)
	}
	done := proc.Done()
	go func() {
		<-done
		proc.Close()
	}()
	return Traced{Session: s, Exited: done}, nil
}
