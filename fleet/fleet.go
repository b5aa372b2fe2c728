package fleet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/memdiag/memdiag/container"
)

// Requirement is one term of a selector: a key that must be present, with
// a value when Value is set (a glob: "web-*").
type Requirement struct {
	Key, Value string
	HasValue   bool
}

// Selector picks containers: every term must hold (an empty selector
// picks every pod container of the node).
type Selector struct {
	Namespaces  []string      // any of these namespaces (globs), when set
	Labels      []Requirement // pod labels
	Annotations []Requirement // pod annotations
	Containers  []string      // any of these container names (globs), when set
}

// ParseSelector reads a selector: comma-separated terms,
//
//	memdiag.io/trace=true          a pod label (key alone: the label is present)
//	label:app=web                  the same, explicitly
//	annotation:memdiag.io/trace=true   a pod annotation
//	namespace:shop                 the pod's namespace (a glob; repeat for several)
//	container:app                  the container's name (a glob; repeat for several)
func ParseSelector(s string) (Selector, error) {
	var sel Selector
	if strings.TrimSpace(s) == "" {
		return sel, errors.New("empty selector: give e.g. memdiag.io/trace=true, annotation:memdiag.io/trace=true or namespace:shop")
	}
	for _, term := range strings.Split(s, ",") {
		term = strings.TrimSpace(term)
		kind, rest, hasKind := strings.Cut(term, ":")
		if !hasKind || strings.ContainsAny(kind, "=/") {
			kind, rest = "label", term
		}
		switch kind {
		case "namespace", "container":
			if rest == "" || strings.Contains(rest, "=") {
				return sel, fmt.Errorf("selector term %q: want %s:NAME", term, kind)
			}
			if _, err := path.Match(rest, ""); err != nil {
				return sel, fmt.Errorf("selector term %q: bad glob: %v", term, err)
			}
			if kind == "namespace" {
				sel.Namespaces = append(sel.Namespaces, rest)
			} else {
				sel.Containers = append(sel.Containers, rest)
			}
		case "label", "annotation":
			k, v, hasValue := strings.Cut(rest, "=")
			if k == "" || strings.ContainsAny(k, " \t") {
				return sel, fmt.Errorf("selector term %q: want KEY=VALUE or KEY", term)
			}
			if _, err := path.Match(v, ""); err != nil {
				return sel, fmt.Errorf("selector term %q: bad glob: %v", term, err)
			}
			r := Requirement{Key: k, Value: v, HasValue: hasValue}
			if kind == "label" {
				sel.Labels = append(sel.Labels, r)
			} else {
				sel.Annotations = append(sel.Annotations, r)
			}
		default:
			return sel, fmt.Errorf("selector term %q: unknown kind %q (want label:, annotation:, namespace: or container:)", term, kind)
		}
	}
	return sel, nil
}

// NeedsPodMetadata tells whether the selector reads pod labels or
// annotations, which only a CRI socket gives.
func (s Selector) NeedsPodMetadata() bool { return len(s.Labels)+len(s.Annotations) > 0 }

// Matches tells whether a Kubernetes container is selected.
func (s Selector) Matches(n container.Named) bool {
	if n.Runtime != "kubernetes" {
		return false
	}
	glob := func(pats []string, v string) bool {
		if len(pats) == 0 {
			return true
		}
		return slices.ContainsFunc(pats, func(p string) bool { ok, _ := path.Match(p, v); return ok })
	}
	has := func(reqs []Requirement, m map[string]string) bool {
		for _, r := range reqs {
			v, ok := m[r.Key]
			if !ok {
				return false
			}
			if r.HasValue {
				if ok, _ := path.Match(r.Value, v); !ok {
					return false
				}
			}
		}
		return true
	}
	return glob(s.Namespaces, n.Namespace) && glob(s.Containers, n.Container) && has(s.Labels, n.Labels) && has(s.Annotations, n.Annotations)
}

// Target is a selected running container.
type Target struct {
	Namespace, Pod, PodUID, Container string
	ID                                string // container id
	Cgroup                            string // its cgroup v2 directory, "" on v1-only hosts
	CgroupV1Memory                    string // its v1 memory cgroup, "" without one
}

// Name is namespace/pod/container.
func (t Target) Name() string { return t.Namespace + "/" + t.Pod + "/" + t.Container }

// List returns the running containers of the node the selector picks,
// sorted by name. A selector on labels or annotations needs a CRI socket
// in src.
func List(ctx context.Context, sel Selector, src container.Sources) ([]Target, error) {
	out, _, err := listAll(ctx, sel, src)
	return out, err
}

// listAll is List, and the cgroup v2 directories of the containers the
// runtime names that the selector does not pick (others).
func listAll(ctx context.Context, sel Selector, src container.Sources) (out []Target, others []string, err error) {
	// Only Kubernetes containers are selected: read the Kubernetes sources.
	src.Docker, src.Storage, src.Nerdctl = nil, nil, nil
	if sel.NeedsPodMetadata() && !slices.ContainsFunc(src.CRI, isSocket) {
		return nil, nil, errors.New("selecting by pod label or annotation needs the node's CRI socket (mount /run/containerd/containerd.sock or /run/crio/crio.sock), or select by namespace: and container: only")
	}
	named, err := src.List(ctx)
	if err != nil && (sel.NeedsPodMetadata() || len(named) == 0) {
		return nil, nil, fmt.Errorf("listing the node's containers: %s", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	cgroups, cgErr := container.Cgroups(src.Roots)
	if cgErr != nil {
		return nil, nil, cgErr
	}
	for _, n := range named {
		c, ok := cgroups[n.ID]
		if !ok {
			continue
		}
		if !sel.Matches(n) {
			if c.V2 != "" {
				others = append(others, c.V2)
			}
			continue
		}
		out = append(out, Target{Namespace: n.Namespace, Pod: n.Pod, PodUID: n.PodUID, Container: n.Container, ID: n.ID, Cgroup: c.V2, CgroupV1Memory: c.V1Memory})
	}
	slices.SortFunc(out, func(a, b Target) int { return strings.Compare(a.Name()+"\x00"+a.ID, b.Name()+"\x00"+b.ID) })
	slices.Sort(others)
	return out, others, nil
}

// EventKind says what happened to a target.
type EventKind int

const (
	// Added: a selected container is running: trace it.
	Added EventKind = iota + 1
	// Removed: a traced container is gone (exited, restarted under a new
	// id, deleted, or no longer selected): stop tracing it, free its state.
	Removed
)

func (k EventKind) String() string {
	switch k {
	case Added:
		return "added"
	case Removed:
		return "removed"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is a change of the target set.
type Event struct {
	Kind   EventKind
	Target Target
}

// Options bound a Watcher.
type Options struct {
	Interval   time.Duration // between polls; 0 means 2 s
	MaxTargets int           // targets followed at once; 0 means 64
}

// Watcher follows the targets of a selector by polling.
type Watcher struct {
	sel     Selector
	src     container.Sources
	opts    Options
	current map[string]Target // by container id
	dropped map[string]bool   // selected but over the bound, by id
	others  []string          // cgroups of the named containers the last poll did not select
	wake    chan struct{}     // Wake's
	// afterPoll, when set, is called by Run after each poll's events.
	afterPoll func()
}

// NewWatcher makes a Watcher; it lists nothing until Poll or Run.
func NewWatcher(sel Selector, src container.Sources, opts Options) *Watcher {
	if opts.Interval <= 0 {
		opts.Interval = 2 * time.Second
	}
	if opts.MaxTargets <= 0 {
		opts.MaxTargets = 64
	}
	return &Watcher{sel: sel, src: src, opts: opts, current: map[string]Target{}, dropped: map[string]bool{}, wake: make(chan struct{}, 1)}
}

// Poll lists the targets once and returns what changed since the last
// poll: removals first (their state can be freed before new targets
// take room), then additions in name order. Targets beyond MaxTargets are
// not added (see Dropped); they are added by a later poll once room frees.
func (w *Watcher) Poll(ctx context.Context) ([]Event, error) {
	now, others, err := listAll(ctx, w.sel, w.src)
	if err != nil {
		return nil, err
	}
	w.others = others
	live := map[string]Target{}
	for _, t := range now {
		live[t.ID] = t
	}
	var evs []Event
	for _, id := range sortedKeys(w.current) {
		if _, ok := live[id]; !ok {
			evs = append(evs, Event{Removed, w.current[id]})
			delete(w.current, id)
		}
	}
	clear(w.dropped)
	for _, t := range now {
		if _, ok := w.current[t.ID]; ok {
			continue
		}
		if len(w.current) >= w.opts.MaxTargets {
			w.dropped[t.ID] = true
			continue
		}
		w.current[t.ID] = t
		evs = append(evs, Event{Added, t})
	}
	return evs, nil
}

// Targets returns the targets followed now, by name.
func (w *Watcher) Targets() []Target {
	var out []Target
	for _, id := range sortedKeys(w.current) {
		out = append(out, w.current[id])
	}
	slices.SortFunc(out, func(a, b Target) int { return strings.Compare(a.Name(), b.Name()) })
	return out
}

// Forget drops a target, as if it had not been seen: the next poll that
// finds it reports it Added again (a trace that could not start is
// retried).
func (w *Watcher) Forget(id string) { delete(w.current, id) }

// Others returns the cgroup v2 directories of the containers the last poll
// found named but not selected.
func (w *Watcher) Others() []string { return w.others }

// Wake makes Run poll at once (a process started in a cgroup no target
// claims: its container's metadata may be there now). It never blocks.
func (w *Watcher) Wake() {
	select {
	case w.wake <- struct{}{}:
	default: // a poll is due already
	}
}

// MaxTargets is the bound on the targets followed at once.
func (w *Watcher) MaxTargets() int { return w.opts.MaxTargets }

// Dropped is how many selected containers the last poll left untraced
// because MaxTargets were followed already.
func (w *Watcher) Dropped() int { return len(w.dropped) }

// Run polls every Interval until ctx ends, calling on for each event (in
// this goroutine) and onErr for a failed poll (the next poll retries).
// A link the kubelet makes or removes in a PodLogs directory (it makes one
// as it starts a container) wakes a poll at once, so a container named
// there is found within milliseconds of its start rather than within an
// Interval. It returns ctx's error.
func (w *Watcher) Run(ctx context.Context, on func(Event), onErr func(error)) error {
	t := time.NewTicker(w.opts.Interval)
	defer t.Stop()
	wake := w.watchLinks(ctx)
	for {
		evs, err := w.Poll(ctx)
		if err != nil && onErr != nil {
			onErr(err)
		}
		for _, e := range evs {
			on(e)
		}
		if err == nil && w.afterPoll != nil {
			w.afterPoll()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		case <-wake:
		case <-w.wake:
		}
	}
}

// watchLinks returns a channel that receives when an entry is created,
// moved in or removed in one of the PodLogs directories, until ctx ends.
// Directories that are absent are not watched (polls still read them);
// without inotify the channel never receives.
func (w *Watcher) watchLinks(ctx context.Context) <-chan struct{} {
	wake := make(chan struct{}, 1)
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return wake
	}
	watched := 0
	for _, d := range w.src.PodLogs {
		if _, err := unix.InotifyAddWatch(fd, d, unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_DELETE|unix.IN_ONLYDIR); err == nil {
			watched++
		}
	}
	if watched == 0 {
		unix.Close(fd)
		return wake
	}
	go func() {
		defer unix.Close(fd)
		buf := make([]byte, 4096)
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for ctx.Err() == nil {
			// Wake every 200 ms at most to notice ctx ending.
			n, _ := unix.Poll(fds, 200)
			if n <= 0 {
				continue
			}
			for {
				if k, err := unix.Read(fd, buf); k <= 0 || err != nil {
					break
				}
			}
			select {
			case wake <- struct{}{}:
			default: // a poll is already due
			}
		}
	}()
	return wake
}

func isSocket(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().Type() == os.ModeSocket
}

func sortedKeys(m map[string]Target) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// CgroupRoot returns the cgroup v2 directory fleet mode follows: dir when
// given (it must be a directory of the cgroup v2 hierarchy), else the
// kubelet's pods cgroup under roots.V2 (kubepods.slice with the systemd
// cgroup driver, kubepods with cgroupfs).
func CgroupRoot(roots container.Roots, dir string) (string, error) {
	if dir != "" {
		if _, err := os.Stat(filepath.Join(dir, "cgroup.procs")); err != nil {
			return "", fmt.Errorf("--cgroup-root %s: not a cgroup v2 directory (no cgroup.procs)", dir)
		}
		return dir, nil
	}
	if roots.V2 == "" {
		return "", errors.New("fleet mode needs the cgroup v2 hierarchy (/sys/fs/cgroup or /sys/fs/cgroup/unified) to follow containers")
	}
	for _, name := range []string{"kubepods.slice", "kubepods"} {
		d := filepath.Join(roots.V2, name)
		if _, err := os.Stat(filepath.Join(d, "cgroup.procs")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("no kubepods.slice nor kubepods under %s: give the cgroup the node's pods run under with --cgroup-root", roots.V2)
}
