package session

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/memdiag/memdiag/config"
	"github.com/memdiag/memdiag/container"
	"github.com/memdiag/memdiag/dump"
	"github.com/memdiag/memdiag/event"
	"github.com/memdiag/memdiag/report"

	"github.com/memdiag/memdiag/safefile"
)

// level is one RSS threshold, resolved.
type level struct {
	bytes   int64
	label   string // as the user wrote it: "2GB", "80%"
	crossed bool
}

// Threshold is a --dump-at entry before it is resolved: a size, or a
// percentage of the target's cgroup memory limit.
type Threshold struct {
	bytes   int64
	percent float64
	label   string
}

// ParseDumpAt parses --dump-at: sizes and percentages of the target's
// cgroup memory limit, comma-separated.
func ParseDumpAt(s string) ([]Threshold, error) {
	var out []Threshold
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if p, ok := strings.CutSuffix(f, "%"); ok {
			v, err := strconv.ParseFloat(p, 64)
			if err != nil || v <= 0 || v > 100 {
				return nil, fmt.Errorf("--dump-at %q: a percentage is from 0 to 100 of the cgroup memory limit", f)
			}
			out = append(out, Threshold{percent: v, label: f})
			continue
		}
		b, err := config.ParseSize(f)
		if err != nil || b <= 0 {
			return nil, fmt.Errorf("--dump-at %q: want sizes like 2GB or percentages like 80%% of the cgroup memory limit", f)
		}
		out = append(out, Threshold{bytes: b, label: f})
	}
	return out, nil
}

// resolveLevels turns thresholds into bytes for process pid; percentages
// need its cgroup's memory limit, and are dropped (with a warning) when
// it has none.
func resolveLevels(ts []Threshold, pid int) ([]level, string) {
	var out []level
	var warn string
	limit, hasLimit := container.MemoryLimit(pid, container.DefaultRoots())
	for _, t := range ts {
		if t.percent == 0 {
			out = append(out, level{bytes: t.bytes, label: t.label})
			continue
		}
		if !hasLimit {
			warn = "the target's cgroup has no memory limit: percentage thresholds in --dump-at are ignored"
			continue
		}
		out = append(out, level{bytes: int64(float64(limit) * t.percent / 100), label: fmt.Sprintf("%s of %s", t.label, report.MB(limit, false))})
	}
	slices.SortFunc(out, func(a, b level) int { return int(a.bytes - b.bytes) })
	return out, warn
}

// dumpResult is what a dump goroutine tells the session loop.
type dumpResult struct {
	dir      string
	label    string
	lines    []string // log lines, in order
	snapshot bool     // dir has a heap snapshot
	err      error
}

// onDemand is the label of a dump taken on demand (SIGUSR2).
const onDemand = "on-demand"

// checkThresholds logs every level the target's RSS crossed since the last
// flush and starts a dump for the highest, one at a time.
func (s *Session) checkThresholds(current int64) {
	var top *level
	for i := range s.levels {
		l := &s.levels[i]
		if l.crossed || current < l.bytes {
			continue
		}
		l.crossed = true
		s.log.Printf("THRESHOLD", "RSS %s crossed %s (%s)", report.MB(current, false), report.MB(l.bytes, false), l.label)
		s.mark("threshold", fmt.Sprintf("RSS crossed %s", l.label))
		top = l
	}
	if top == nil || s.cfg.NoDumps || s.finishing {
		return
	}
	if s.dumping {
		s.log.Printf("DUMP", "not dumping at %s: the previous dump is still being written", top.label)
		return
	}
	s.startDump(top.label)
}

// dumpNow takes a dump on demand (SIGUSR2): the same dump as a threshold's,
// so that a user can compare the heap now with the last threshold's. One
// asked for while a dump is being written is taken right after it.
func (s *Session) dumpNow() {
	s.mark("demand", "a dump asked for (SIGUSR2)")
	if s.cfg.NoDumps {
		s.log.Printf("DUMP", "not dumping on demand: --no-dumps")
		return
	}
	if s.dumping {
		s.demand = true
		s.log.Printf("DUMP", "dump on demand: taken when the dump under way is written")
		return
	}
	s.log.Printf("DUMP", "dump on demand")
	s.startDump(onDemand)
}

// startDump writes a dump off the loop, with the report of this moment.
func (s *Session) startDump(label string) {
	s.dumping = true
	r := s.report(s.acct.Summary())
	rss := s.rss
	go func() { s.dumpDone <- s.dump(label, r, rss) }()
}

// mark records a marker on the timeline (and in the recording).
func (s *Session) mark(kind, label string) {
	s.consume(&event.Marker{Header: event.Header{Time: time.Now().Round(0), PID: s.target.PID}, Kind: kind, Label: label})
}

// dumped takes a finished dump into the session.
func (s *Session) dumped(d dumpResult) {
	s.dumping = false
	defer func() {
		if s.demand {
			s.demand = false
			s.log.Printf("DUMP", "dump on demand")
			s.startDump(onDemand)
		}
	}()
	at := "at " + d.label
	if d.label == onDemand {
		at = "on demand"
	}
	for _, l := range d.lines {
		s.log.Printf("DUMP", "%s", l)
	}
	if d.err != nil {
		s.log.Printf("DUMP", "refused %s: %v", at, d.err)
		s.mark("dump", "dump refused "+at)
		return
	}
	s.dumps++
	s.log.Printf("DUMP", "written to %s", d.dir)
	s.mark("dump", "dump "+at)
	if d.snapshot {
		s.snapshotTaken(d.dir)
	}
}

// secretsWarning goes into every dump directory.
const secretsWarning = `This directory is a memdiag dump. Its heap snapshot (heap.heapsnapshot), when
present, holds the traced service's memory: tokens, keys, passwords and personal
data. Keep it private (memdiag made it 0700/0600), share it only with people who
may see those secrets, and delete it when you are done.
`

// dump writes a dump directory: the attribution state, smaps, a pprof
// profile of RSS growth by user stack and, for Node.js, a heap snapshot.
// It runs off the session loop; everything it reads is safe there.
func (s *Session) dump(label string, r *report.Report, rss int64) dumpResult {
	res := dumpResult{label: label}
	pid := int(s.target.PID)
	root := s.cfg.DumpsDir
	if err := safefile.MkdirPrivate(root); err != nil {
		res.err = fmt.Errorf("dumps directory: %w", err)
		return res
	}
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err == nil {
		free := int64(st.Bavail) * int64(st.Bsize)
		if need := rss + 64<<20; free < need {
			res.err = fmt.Errorf("only %s free in %s, a dump needs about %s (the process's RSS): free some space or use --dumps-dir", report.MB(free, false), root, report.MB(need, false))
			return res
		}
	}
	stamp := time.Now().UTC().Format("20060102-150405")
	safe := strings.NewReplacer("%", "pct", " ", "_", "/", "_").Replace(label)
	// Two dumps in one second (one on demand right after another) get
	// -2, -3, … after the time.
	name := fmt.Sprintf("%d-%s-%s", pid, safe, stamp)
	for n := 2; ; n++ {
		res.dir = filepath.Join(root, name)
		err := os.Mkdir(res.dir, 0o700)
		if err == nil {
			break
		}
		if !errors.Is(err, os.ErrExist) || n > 100 {
			res.err = fmt.Errorf("creating the dump directory: %w", err)
			return res
		}
		name = fmt.Sprintf("%d-%s-%s-%d", pid, safe, stamp, n)
	}
	var errs []error
	write := func(name string, data []byte) {
		if err := safefile.WriteNew(filepath.Join(res.dir, name), data); err != nil {
			errs = append(errs, err)
		}
	}
	write("SECRETS-WARNING.txt", []byte(secretsWarning))
	if data, err := r.JSON(); err == nil {
		write("attribution.json", data)
	}
	if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid)); err == nil {
		write("smaps", data)
	} else {
		res.lines = append(res.lines, fmt.Sprintf("smaps not copied: %v", err))
	}
	if err := s.writeProfile(filepath.Join(res.dir, "growth.pb.gz"), pid); err != nil {
		res.lines = append(res.lines, fmt.Sprintf("growth profile not written: %v", err))
	}
	heap := filepath.Join(res.dir, heapFile)
	switch {
	case s.heapSnapshot != nil:
		res.lines = append(res.lines, s.heapSnapshot(heap, pid)...)
	case isNode(pid):
		res.lines = append(res.lines, s.writeHeapSnapshot(heap, pid)...)
	}
	if _, err := os.Stat(heap); err == nil {
		res.snapshot = true
	}
	if err := errors.Join(errs...); err != nil {
		res.lines = append(res.lines, fmt.Sprintf("some files were not written: %v", err))
	}
	return res
}

// writeProfile writes the pprof profile of RSS growth by user stack.
func (s *Session) writeProfile(path string, pid int) error {
	if s.cfg.Stacks == nil {
		return errors.New("no stack samples to read")
	}
	samples, err := s.cfg.Stacks(uint32(pid))
	if err != nil {
		return err
	}
	sym, err := dump.NewSymbolizer(pid, fmt.Sprintf("/proc/%d/root", pid))
	if err != nil {
		return err
	}
	p, err := dump.BuildProfile(samples, sym, s.started, time.Since(s.started))
	if err != nil {
		return err
	}
	f, err := safefile.CreateNew(path)
	if err != nil {
		return err
	}
	if err := dump.WriteProfile(f, p); err != nil {
		f.Close()
		os.Remove(path) // nothing half-written
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

// writeHeapSnapshot takes a V8 heap snapshot through the inspector.
func (s *Session) writeHeapSnapshot(path string, pid int) []string {
	f, err := safefile.CreateNew(path)
	if err != nil {
		return []string{fmt.Sprintf("heap snapshot not taken: %v", err)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	progress := func(done, total int) {}
	if isTerminal(os.Stderr) {
		progress = func(done, total int) {
			if total > 0 {
				fmt.Fprintf(os.Stderr, "\rmemdiag: heap snapshot %3d%%", done*100/total)
			}
		}
	}
	var ignore func(port int) error
	if s.cfg.Sampler != nil {
		// memdiag's connections to the inspector are not the target's ops.
		ignore = func(port int) error { return s.cfg.Sampler.IgnorePort(uint16(port)) }
	}
	res, err := dump.HeapSnapshotIgnoring(ctx, pid, f, progress, ignore)
	if isTerminal(os.Stderr) {
		fmt.Fprintln(os.Stderr)
	}
	cerr := f.Close()
	if err != nil {
		os.Remove(path)
		lines := []string{fmt.Sprintf("heap snapshot failed: %v", err)}
		if errors.Is(err, dump.ErrNoInspector) {
			lines = []string{fmt.Sprintf("heap snapshot skipped: %v", err)}
		}
		if res.OpenedByUs && !res.InspectorClosed {
			lines = append(lines, "warning: the inspector memdiag opened could not be closed: it stays open on loopback")
		}
		return lines
	}
	if cerr != nil {
		return []string{fmt.Sprintf("heap snapshot not saved: %v", cerr)}
	}
	lines := []string{fmt.Sprintf("heap snapshot of %s through the inspector on port %d (it contains the service's secrets)", report.MB(res.Bytes, false), res.Port)}
	switch {
	case res.OpenedByUs && res.InspectorClosed:
		lines = append(lines, "the inspector memdiag opened with SIGUSR1 is closed again")
	case res.OpenedByUs:
		lines = append(lines, "warning: the inspector memdiag opened could not be closed: it stays open on loopback")
	}
	return lines
}

// isNode says whether process pid runs Node.js.
func isNode(pid int) bool {
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	base := filepath.Base(strings.TrimSuffix(exe, " (deleted)"))
	return base == "node" || strings.HasPrefix(base, "node") && !strings.Contains(base, ".")
}

// isTerminal says whether f is a terminal.
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// highestRSS is the main target's highest resident memory so far: the
// kernel's peak, so that a spike between two reads still crosses a
// threshold, with counters not seen since attach at their baseline.
func (s *Session) highestRSS(snap *event.Snapshot) int64 {
	for _, p := range snap.Processes {
		if p.PID == s.target.PID {
			return max(p.Peak, s.base.RSS+(p.Peak-s.baselineSeen(snap)))
		}
	}
	return s.base.RSS
}

// baselineSeen is the part of the baseline the kernel has seen so far.
func (s *Session) baselineSeen(snap *event.Snapshot) int64 {
	var b int64
	for _, bk := range snap.Buckets {
		if bk.Key.PID == s.target.PID && bk.Key.Kind == event.BucketBaseline {
			b += bk.Resident()
		}
	}
	return b
}
