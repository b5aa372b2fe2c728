package fleet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/memdiag/memdiag/container"
	"github.com/memdiag/memdiag/container/critest"
)

func TestParseSelector(t *testing.T) {
	sel, err := ParseSelector("memdiag.io/trace=true, annotation:team=pay*,namespace:shop,namespace:pay-*,container:app,label:tier")
	if err != nil {
		t.Fatal(err)
	}
	want := Selector{
		Namespaces:  []string{"shop", "pay-*"},
		Labels:      []Requirement{{Key: "memdiag.io/trace", Value: "true", HasValue: true}, {Key: "tier"}},
		Annotations: []Requirement{{Key: "team", Value: "pay*", HasValue: true}},
		Containers:  []string{"app"},
	}
	if fmt.Sprint(sel) != fmt.Sprint(want) {
		t.Errorf("ParseSelector = %+v, want %+v", sel, want)
	}
	for _, bad := range []string{"", "namespace:", "namespace:a=b", "pod:x", "label:=x", "annotation:a=[", "container:"} {
		if _, err := ParseSelector(bad); err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseSelector(%q) = %v, want a one-line error", bad, err)
		}
	}
}

// node is a Kubernetes node as discovery sees it: a CRI runtime and a
// cgroup tree.
type node struct {
	t   *testing.T
	cri *critest.Server
	v2  string
	n   int
}

func newNode(t *testing.T) *node {
	return &node{t: t, cri: critest.Start(t), v2: t.TempDir()}
}

func (n *node) src() container.Sources {
	return container.Sources{Roots: container.Roots{V2: n.v2}, CRI: []string{n.cri.Socket}}
}

func (n *node) pod(ns, name string, annotations map[string]string) string {
	n.n++
	id := fmt.Sprintf("%064x", n.n)
	n.cri.SetPod(critest.Pod{ID: id, Namespace: ns, Name: name, UID: fmt.Sprintf("00000000-0000-4000-8000-%012x", n.n), Labels: map[string]string{"app": strings.Split(name, "-")[0]}, Annotations: annotations})
	return id
}

func (n *node) cgroup(podID, id string) string {
	return filepath.Join(n.v2, "kubepods.slice", "kubepods-pod"+podID[:8]+".slice", "cri-containerd-"+id+".scope")
}

// start runs a container: the runtime lists it, its cgroup exists.
func (n *node) start(podID, name string) string {
	n.n++
	id := fmt.Sprintf("%064x", 1<<40+n.n)
	n.cri.SetContainer(critest.Container{ID: id, PodID: podID, Name: name, Running: true})
	if err := os.MkdirAll(n.cgroup(podID, id), 0o755); err != nil {
		n.t.Fatal(err)
	}
	return id
}

// stop ends a container: exited in the runtime, its cgroup gone.
func (n *node) stop(podID, id, name string) {
	n.cri.SetContainer(critest.Container{ID: id, PodID: podID, Name: name, Running: false})
	os.Remove(n.cgroup(podID, id))
}

func names(evs []Event) string {
	var s []string
	for _, e := range evs {
		s = append(s, e.Kind.String()+" "+e.Target.Name()+" "+e.Target.ID[len(e.Target.ID)-4:])
	}
	return strings.Join(s, "; ")
}

// TestWatcher: containers appear and go — new replicas, a restart under
// a new id, deletions — and each is reported added once and removed once,
// with its namespace, pod, container and cgroup; the bound holds.
func TestWatcher(t *testing.T) {
	n := newNode(t)
	trace := map[string]string{"memdiag.io/trace": "true"}
	web0 := n.pod("shop", "web-0", trace)
	web1 := n.pod("shop", "web-1", trace)
	db0 := n.pod("shop", "db-0", nil)
	a0 := n.start(web0, "app")
	n.start(web0, "istio-proxy")
	a1 := n.start(web1, "app")
	n.start(db0, "db")

	sel, err := ParseSelector("annotation:memdiag.io/trace=true,container:app")
	if err != nil {
		t.Fatal(err)
	}
	w := NewWatcher(sel, n.src(), Options{MaxTargets: 3})
	ctx := context.Background()
	poll := func(want string) {
		t.Helper()
		evs, err := w.Poll(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := names(evs); got != want {
			t.Errorf("events:\n got %s\nwant %s", got, want)
		}
	}
	poll("added shop/web-0/app " + a0[60:] + "; added shop/web-1/app " + a1[60:])
	got := w.Targets()
	if len(got) != 2 || got[0].Cgroup != n.cgroup(web0, a0) || got[0].PodUID == "" || got[1].Pod != "web-1" {
		t.Errorf("targets %+v", got)
	}
	poll("")

	// web-0's app restarts: a new id in the same pod.
	n.stop(web0, a0, "app")
	a0b := n.start(web0, "app")
	poll("removed shop/web-0/app " + a0[60:] + "; added shop/web-0/app " + a0b[60:])

	// Two new replicas: the bound (3) takes one, drops the other until
	// room frees.
	web2 := n.pod("shop", "web-2", trace)
	web3 := n.pod("shop", "web-3", trace)
	a2 := n.start(web2, "app")
	a3 := n.start(web3, "app")
	poll("added shop/web-2/app " + a2[60:])
	if w.Dropped() != 1 || len(w.Targets()) != 3 {
		t.Errorf("dropped %d, targets %d; want 1 and 3", w.Dropped(), len(w.Targets()))
	}
	// web-1 is deleted: its container goes, web-3 gets the room.
	n.stop(web1, a1, "app")
	n.cri.Remove(a1)
	poll("removed shop/web-1/app " + a1[60:] + "; added shop/web-3/app " + a3[60:])
	if w.Dropped() != 0 {
		t.Errorf("dropped %d after room freed", w.Dropped())
	}
	// The annotation goes (pod updated): no longer selected.
	n.cri.SetPod(critest.Pod{ID: web2, Namespace: "shop", Name: "web-2", UID: "u"})
	poll("removed shop/web-2/app " + a2[60:])
}

// TestWatcherRun: Run reports changes made while it polls, and stops
// with its context.
func TestWatcherRun(t *testing.T) {
	n := newNode(t)
	p := n.pod("shop", "web-0", nil)
	sel, _ := ParseSelector("namespace:shop")
	w := NewWatcher(sel, n.src(), Options{Interval: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	evs := make(chan Event, 16)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, func(e Event) { evs <- e }, func(err error) { t.Errorf("poll: %v", err) }) }()
	next := func() Event {
		t.Helper()
		select {
		case e := <-evs:
			return e
		case <-time.After(10 * time.Second):
			t.Fatal("no event within 10 s")
		}
		return Event{}
	}
	id := n.start(p, "app")
	if e := next(); e.Kind != Added || e.Target.ID != id {
		t.Errorf("first event %v %+v", e.Kind, e.Target)
	}
	n.stop(p, id, "app")
	if e := next(); e.Kind != Removed || e.Target.ID != id {
		t.Errorf("second event %v %+v", e.Kind, e.Target)
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Errorf("Run returned %v", err)
	}
}

// TestWatcherWakeAndOthers: Wake makes Run poll at once (an hour between
// polls here), each poll is followed by afterPoll, and Others lists the
// cgroups of the named containers the selector does not pick (fleet mode
// has the kernel ignore them).
func TestWatcherWakeAndOthers(t *testing.T) {
	n := newNode(t)
	shop, other := n.pod("shop", "web-0", nil), n.pod("other", "web-0", nil)
	sel, _ := ParseSelector("namespace:shop")
	w := NewWatcher(sel, n.src(), Options{Interval: time.Hour})
	polled := make(chan []string, 16)
	w.afterPoll = func() { polled <- slices.Clone(w.Others()) }
	ctx, cancel := context.WithCancel(context.Background())
	evs := make(chan Event, 16)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, func(e Event) { evs <- e }, func(err error) { t.Errorf("poll: %v", err) }) }()
	wait := func() []string {
		t.Helper()
		select {
		case o := <-polled:
			return o
		case <-time.After(10 * time.Second):
			t.Fatal("no poll within 10 s")
		}
		return nil
	}
	if o := wait(); len(o) != 0 {
		t.Errorf("others %v on an empty node", o)
	}
	a := n.start(shop, "app")
	b := n.start(other, "app")
	w.Wake()
	if o := wait(); len(o) != 1 || o[0] != n.cgroup(other, b) {
		t.Errorf("others %v, want [%s]", o, n.cgroup(other, b))
	}
	if e := <-evs; e.Kind != Added || e.Target.ID != a {
		t.Errorf("event %v %+v, want %s added", e.Kind, e.Target, a)
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Errorf("Run returned %v", err)
	}
}

// TestListWithoutCRI: the kubelet's links alone serve namespace and
// container selectors; label and annotation selectors say what to mount.
func TestListWithoutCRI(t *testing.T) {
	logs, v2 := t.TempDir(), t.TempDir()
	id := strings.Repeat("ab", 32)
	os.Symlink("/var/log/pods/shop_web-0_0b1c/app/0.log", filepath.Join(logs, "web-0_shop_app-"+id+".log"))
	os.MkdirAll(filepath.Join(v2, "kubepods", "pod0b1c", id), 0o755)
	src := container.Sources{Roots: container.Roots{V2: v2}, PodLogs: []string{logs}, CRI: []string{filepath.Join(logs, "none.sock")}}
	sel, _ := ParseSelector("namespace:shop")
	ts, err := List(context.Background(), sel, src)
	if err != nil || len(ts) != 1 || ts[0].Name() != "shop/web-0/app" || ts[0].Cgroup != filepath.Join(v2, "kubepods", "pod0b1c", id) || ts[0].PodUID != "0b1c" {
		t.Errorf("List = %+v, %v", ts, err)
	}
	sel, _ = ParseSelector("memdiag.io/trace=true")
	_, err = List(context.Background(), sel, src)
	if err == nil || !strings.Contains(err.Error(), "CRI socket") || strings.Contains(err.Error(), "\n") {
		t.Errorf("label selector without CRI: %v", err)
	}
}

// TestPrefixed: lines written in pieces come out whole, one Write each,
// with their target's name in front.
func TestPrefixed(t *testing.T) {
	var out lineRecorder
	var mu sync.Mutex
	a := NewPrefixed(&out, &mu, "shop/web-0/app ")
	b := NewPrefixed(&out, &mu, "shop/web-1/app ")
	a.Write([]byte("10:00:00 [INIT] Base"))
	b.Write([]byte("10:00:00 [INIT] other\n10:00:01 [GROWTH] x\n"))
	a.Write([]byte("line: RSS 1MB\n"))
	want := []string{"shop/web-1/app 10:00:00 [INIT] other\n", "shop/web-1/app 10:00:01 [GROWTH] x\n", "shop/web-0/app 10:00:00 [INIT] Baseline: RSS 1MB\n"}
	if fmt.Sprint(out.writes) != fmt.Sprint(want) {
		t.Errorf("writes %q, want %q", out.writes, want)
	}
}

type lineRecorder struct{ writes []string }

func (l *lineRecorder) Write(b []byte) (int, error) {
	l.writes = append(l.writes, string(b))
	return len(b), nil
}

// TestWatcherWakesOnLinks: a link the kubelet makes wakes a poll at once,
// however long the interval.
func TestWatcherWakesOnLinks(t *testing.T) {
	logs, v2 := t.TempDir(), t.TempDir()
	src := container.Sources{Roots: container.Roots{V2: v2}, PodLogs: []string{logs}}
	run := func(pod, id string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(v2, "kubepods", "pod"+pod, id), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("/var/log/pods/shop_"+pod+"_u/app/0.log", filepath.Join(logs, pod+"_shop_app-"+id+".log")); err != nil {
			t.Fatal(err)
		}
	}
	sel, _ := ParseSelector("namespace:shop")
	w := NewWatcher(sel, src, Options{Interval: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	evs := make(chan Event, 4)
	done := make(chan error, 1)
	first, second := strings.Repeat("cd", 32), strings.Repeat("ef", 32)
	run("web-0", first)
	go func() {
		done <- w.Run(ctx, func(e Event) { evs <- e }, func(err error) { t.Errorf("poll: %v", err) })
	}()
	next := func(what string) Event {
		t.Helper()
		select {
		case e := <-evs:
			return e
		case <-time.After(30 * time.Second):
			t.Fatalf("no event for %s within 30 s (the interval is an hour)", what)
		}
		return Event{}
	}
	// The first poll reports the container already there; the second
	// comes only from the link's creation.
	if e := next("the first poll"); e.Target.ID != first {
		t.Fatalf("first event %v %+v", e.Kind, e.Target)
	}
	run("web-1", second)
	if e := next("the new link"); e.Kind != Added || e.Target.ID != second {
		t.Errorf("event %v %+v, want web-1 added", e.Kind, e.Target)
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Errorf("Run returned %v", err)
	}
}
