package session

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/memdiag/memdiag/event"
	"github.com/memdiag/memdiag/heapsnap"
	"github.com/memdiag/memdiag/report"

	"github.com/memdiag/memdiag/safefile"
)

// heapFile is the heap snapshot of a dump directory; heapDiffJSON and
// heapDiffText are the diff with the previous dump's snapshot, written
// into the later dump's directory.
const (
	heapFile     = "heap.heapsnapshot"
	heapDiffJSON = "heapdiff.json"
	heapDiffText = "heapdiff.txt"
	heapDiffTop  = 10 // groups kept in a run's diffs
)

// heapDiffs compares consecutive heap snapshots of a run's dumps, one diff
// at a time, off the session loop. A diff runs `memdiag diff` in a child
// process: the snapshot arrays are the live heap there, and memdiag's own
// process keeps its small memory limit while it traces.
type heapDiffs struct {
	dirs    []string // dump directories with a heap snapshot, in order
	next    int      // dirs[next-1] → dirs[next] is the next diff to run
	running bool
	done    chan heapDiffResult
}

// heapDiffResult is what a diff goroutine tells the session loop.
type heapDiffResult struct {
	from, to string // dump directories
	diff     *report.HeapDiffJSON
	err      error
}

// snapshotTaken queues the diff of a dump's heap snapshot with the
// previous one, and starts it when no diff runs.
func (s *Session) snapshotTaken(dir string) {
	s.diffs.dirs = append(s.diffs.dirs, dir)
	s.startHeapDiff()
}

// startHeapDiff starts the next diff of consecutive snapshots, if any and
// if none runs.
func (s *Session) startHeapDiff() {
	h := &s.diffs
	if h.next == 0 {
		h.next = 1
	}
	if h.running || h.next >= len(h.dirs) {
		return
	}
	from, to := h.dirs[h.next-1], h.dirs[h.next]
	h.next++
	h.running = true
	exe := s.cfg.DiffExe
	go func() { h.done <- runHeapDiff(exe, from, to) }()
}

// heapDiffed takes a finished diff into the session: the [DIFF] line, with
// the verdict beside it, and the diff in the timeline (a marker the
// recording keeps, so a replay's report has it too).
func (s *Session) heapDiffed(r heapDiffResult) {
	s.diffs.running = false
	defer s.startHeapDiff()
	if r.err != nil {
		s.log.Printf("DIFF", "%s → %s not compared: %v", filepath.Base(r.from), filepath.Base(r.to), r.err)
		return
	}
	d := r.diff
	d.Time = time.Now().Round(0)
	d.Beside = "" // the report puts the final verdict beside it
	s.consume(&event.Marker{Header: event.Header{Time: d.Time, PID: s.target.PID}, Kind: report.HeapDiffMarker, Label: d.MarkerLabel()})
	rep := s.report(s.acct.Summary())
	d.Beside = report.Beside(rep.Verdict.Culprit, rep.Categories, d)
	s.log.Printf("DIFF", "%s", report.HeapDiffLine(d))
	s.log.Printf("DIFF", "written to %s and %s", filepath.Join(r.to, heapDiffJSON), heapDiffText)
}

// runHeapDiff runs `exe diff --format json` on the snapshots of two dump
// directories and writes heapdiff.json and heapdiff.txt into the later.
// exe "" is memdiag itself.
func runHeapDiff(exe, from, to string) heapDiffResult {
	res := heapDiffResult{from: from, to: to}
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			res.err = fmt.Errorf("finding memdiag's binary: %w", err)
			return res
		}
	}
	cmd := exec.Command(exe, "diff", "--format", "json", "--top", fmt.Sprint(heapDiffTop),
		filepath.Join(from, heapFile), filepath.Join(to, heapFile))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// Its own process group: a Ctrl-C on memdiag's terminal lets the diff
	// under way finish (Finish waits for it); memdiag's death kills it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
			msg = msg[i+1:]
		}
		if msg != "" {
			err = fmt.Errorf("%w: %s", err, msg)
		}
		res.err = fmt.Errorf("memdiag diff: %w", err)
		return res
	}
	var d heapsnap.Diff
	if err := json.Unmarshal(stdout.Bytes(), &d); err != nil {
		res.err = fmt.Errorf("reading memdiag diff's output: %w", err)
		return res
	}
	res.err = errors.Join(
		safefile.WriteNew(filepath.Join(to, heapDiffJSON), stdout.Bytes()),
		safefile.WriteNew(filepath.Join(to, heapDiffText), d.Text()))
	if res.err != nil {
		return res
	}
	res.diff = reportDiff(&d, from, to)
	return res
}

// reportDiff is a diff as the reports keep it.
func reportDiff(d *heapsnap.Diff, from, to string) *report.HeapDiffJSON {
	out := &report.HeapDiffJSON{From: from, To: to, ReachableFrom: int64(d.Snapshots[0].TotalBytes),
		ReachableTo: int64(d.Snapshots[1].TotalBytes), NewObjects: d.NewObjects, Groups: []report.HeapGroupJSON{}}
	for _, g := range d.Groups {
		out.Groups = append(out.Groups, report.HeapGroupJSON{Name: g.Name, GrewBytes: g.Grew, RetainedDelta: g.RetainedDelta(),
			CountDelta: g.CountDelta(), New: g.New, Path: g.PathText(), Holder: holder(g.Name, g.Path)})
	}
	return out
}

// holder is the first two holders on a group's retainer path, after the
// group's own object (a path may start inside it, at a Map's table):
// "Cache.sessions ← Object.cache".
func holder(name string, path []heapsnap.Step) string {
	from := 1
	if i := slices.IndexFunc(path, func(st heapsnap.Step) bool { return st.Object == name }); i >= 0 {
		from = i + 1
	}
	if from >= len(path) {
		return ""
	}
	g := heapsnap.Group{Path: append([]heapsnap.Step{{}}, path[from:min(len(path), from+2)]...)}
	return strings.TrimPrefix(g.PathText(), " ← ")
}
