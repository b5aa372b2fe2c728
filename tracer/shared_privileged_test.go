//go:build privileged

package tracer

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/memdiag/memdiag/container"
	"github.com/memdiag/memdiag/event"
	"github.com/memdiag/memdiag/internal/proctest"
)

// inCgroup starts a process that joins cgroup dir and then execs cat
// (which waits on its stdin); it returns once the exec is done.
func inCgroup(t *testing.T, dir string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sh", "-c", fmt.Sprintf("echo $$ > %s/cgroup.procs && exec cat", dir))
	stdin, out := startPiped(t, cmd)
	// cat echoes a line once it runs: the exec is done.
	fmt.Fprintln(stdin, "hello")
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "hello\n" {
		t.Fatalf("the process in %s said %q", dir, line)
	}
	return cmd
}

// TestShared: one tracer follows a parent cgroup; processes that exec in
// its children are traced from their exec and kept pending until a View
// claims their cgroup (the View gets their records first) or Drop frees
// them; an ignored cgroup's execs make no target; a View's Close frees its
// processes' kernel entries.
func TestShared(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads and attaches the BPF program")
	}
	v2 := container.DefaultRoots().V2
	if v2 == "" {
		t.Skip("no cgroup v2 hierarchy on this host")
	}
	b := make([]byte, 4)
	rand.Read(b)
	root := filepath.Join(v2, "memdiag-shared-"+hex.EncodeToString(b)+".slice")
	a, c := filepath.Join(root, "a.scope"), filepath.Join(root, "c.scope")
	for _, d := range []string{root, a, c} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, d := range []string{a, c, root} {
			proctest.RemoveCgroup(d, 10*time.Second)
		}
	})
	unknown := make(chan uint64, 16)
	s, err := OpenShared(Config{Cgroup: root}, func(cg uint64) { unknown <- cg })
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	idA, _ := CgroupID(a)
	idC, _ := CgroupID(c)
	targets := func() map[uint32]bool {
		out := map[uint32]bool{}
		var k uint32
		var v memdiagTarget
		it := s.t.objs.Targets.Iterate()
		for it.Next(&k, &v) {
			out[k] = true
		}
		return out
	}

	pa := inCgroup(t, a)
	pc := inCgroup(t, c)
	if tg := targets(); !tg[uint32(pa.Process.Pid)] || !tg[uint32(pc.Process.Pid)] {
		t.Fatalf("processes exec'd below the followed cgroup are not targets: %v", tg)
	}
	got := map[uint64]bool{<-unknown: true, <-unknown: true}
	if !got[idA] || !got[idC] {
		t.Fatalf("unknown cgroups reported %v, want %d and %d", got, idA, idC)
	}

	// a is claimed: its process's exec record comes first.
	v, fromExec, err := s.NewView(a, []int{pa.Process.Pid})
	if err != nil {
		t.Fatal(err)
	}
	if len(fromExec) != 1 || fromExec[0] != pa.Process.Pid {
		t.Errorf("fromExec %v, want [%d]", fromExec, pa.Process.Pid)
	}
	events := unbatched(t, v.Events())
	ev := <-events
	if ex, ok := ev.(*event.Exec); !ok || ex.PID != uint32(pa.Process.Pid) || !strings.HasSuffix(ex.Filename, "cat") {
		t.Fatalf("the view's first event is %#v, want the exec of cat by %d", ev, pa.Process.Pid)
	}
	snap, err := v.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range snap.Buckets {
		if b.Key.PID != uint32(pa.Process.Pid) {
			t.Errorf("the view's snapshot has a bucket of process %d", b.Key.PID)
		}
	}

	// c is not claimed: dropped, then ignored.
	if n, err := s.Drop(idC); err != nil || n != 1 {
		t.Fatalf("Drop: %d processes, %v; want 1", n, err)
	}
	if targets()[uint32(pc.Process.Pid)] {
		t.Error("a dropped process is still a target")
	}
	if _, err := s.SetIgnored([]uint64{idC}); err != nil {
		t.Fatal(err)
	}
	pc2 := inCgroup(t, c)
	if targets()[uint32(pc2.Process.Pid)] {
		t.Error("a process that exec'd in an ignored cgroup is a target")
	}

	// A cgroup below a's: one made before a process execs there is a's
	// at once (Nest, as fleet mode calls it after each poll), one a
	// process exec'd in first is adopted with its records.
	early := filepath.Join(a, "early")
	if err := os.Mkdir(early, 0o755); err != nil {
		t.Fatal(err)
	}
	s.Nest()
	pe := inCgroup(t, early)
	late := filepath.Join(a, "late")
	if err := os.Mkdir(late, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		proctest.RemoveCgroup(late, 10*time.Second)
		proctest.RemoveCgroup(early, 10*time.Second)
	})
	pl := inCgroup(t, late)
	idLate, _ := CgroupID(late)
	if got := <-unknown; got != idLate {
		t.Errorf("unknown cgroup %d reported, want %d (the nested one made after Nest)", got, idLate)
	}
	s.Nest()
	execs := map[uint32]bool{}
	for len(execs) < 2 {
		select {
		case ev := <-events:
			if ex, ok := ev.(*event.Exec); ok {
				execs[ex.PID] = true
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("the view got the execs of %v within 30 s, want %d and %d", execs, pe.Process.Pid, pl.Process.Pid)
		}
	}
	if !execs[uint32(pe.Process.Pid)] || !execs[uint32(pl.Process.Pid)] {
		t.Errorf("the view got the execs of %v, want %d and %d", execs, pe.Process.Pid, pl.Process.Pid)
	}
	pe.Process.Kill()
	pe.Wait()
	pl.Process.Kill()
	pl.Wait()

	// Closing the view frees its process's kernel entries.
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if targets()[uint32(pa.Process.Pid)] {
		t.Error("the closed view's process is still a target")
	}
	for _, b := range snapBuckets(t, s) {
		if b == uint32(pa.Process.Pid) || b == uint32(pc.Process.Pid) {
			t.Errorf("process %d still has buckets", b)
		}
	}
	if c := s.Counts(); c.Views != 0 || c.Pending != 0 || c.Routes != 0 {
		t.Errorf("state left: %+v", c)
	}
}

// snapBuckets lists the processes with buckets in the kernel.
func snapBuckets(t *testing.T, s *Shared) []uint32 {
	t.Helper()
	var out []uint32
	var k memdiagBucketKey
	var v memdiagCounters
	it := s.t.objs.Buckets.Iterate()
	for it.Next(&k, &v) {
		if k.Tgid != 0 {
			out = append(out, k.Tgid)
		}
	}
	if err := s.t.heldOpSlots(func(o *memdiagOpSlot) { out = append(out, o.Tgid) }); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSharedThreads: a routed process's threads come and go (memwork's
// "threads": 8 threads, each maps and writes, joined); once their exits
// are routed, the View's set and the routes are what they were (thread
// churn does not grow them), and the threads' growth is the process's.
func TestSharedThreads(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads and attaches the BPF program")
	}
	v2 := container.DefaultRoots().V2
	if v2 == "" {
		t.Skip("no cgroup v2 hierarchy on this host")
	}
	memwork := buildC(t, "../testdata/workload/memwork.c")
	b := make([]byte, 4)
	rand.Read(b)
	root := filepath.Join(v2, "memdiag-shared-"+hex.EncodeToString(b)+".slice")
	a := filepath.Join(root, "a.scope")
	for _, d := range []string{root, a} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		proctest.RemoveCgroup(a, 10*time.Second)
		proctest.RemoveCgroup(root, 10*time.Second)
	})
	s, err := OpenShared(Config{Cgroup: root}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	cmd := exec.Command("sh", "-c", fmt.Sprintf("echo $$ > %s/cgroup.procs && exec %s", a, memwork))
	in, out := startPiped(t, cmd)
	lines := bufio.NewScanner(out)
	say := func(c string) string {
		t.Helper()
		if c != "" {
			fmt.Fprintln(in, c)
		}
		if !lines.Scan() {
			t.Fatalf("memwork ended after %q", c)
		}
		return lines.Text()
	}
	if l := say(""); !strings.HasPrefix(l, "ready ") {
		t.Fatalf("memwork says %q", l)
	}
	pid := uint32(cmd.Process.Pid)
	v, fromExec, err := s.NewView(a, []int{cmd.Process.Pid})
	if err != nil || len(fromExec) != 1 {
		t.Fatalf("NewView: %v (from exec: %v)", err, fromExec)
	}
	exits := make(chan uint32, 64)
	go func() {
		for b := range v.Events() {
			for _, ev := range b.Events {
				if e, ok := ev.(*event.Exit); ok && e.TID != e.PID {
					exits <- e.TID
				}
			}
			b.Recycle()
		}
	}()
	routes := s.Counts().Routes
	if l := say("threads 1M 8"); !strings.HasPrefix(l, "ok ") {
		t.Fatalf("memwork: %q", l)
	}
	for i := 0; i < 8; i++ {
		select {
		case <-exits:
		case <-time.After(30 * time.Second):
			t.Fatalf("%d of 8 thread exits routed to the view within 30 s", i)
		}
	}
	if got := s.Counts().Routes; got != routes {
		t.Errorf("%d routes after 8 threads came and went, %d before", got, routes)
	}
	s.mu.Lock()
	n := len(v.pids)
	s.mu.Unlock()
	if n != 1 {
		t.Errorf("the view follows %d ids after the threads went, want 1 (the process)", n)
	}
	snap, err := v.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var grew int64
	for _, b := range snap.Buckets {
		if b.Key.PID != pid {
			t.Errorf("a bucket of %d in the view's snapshot", b.Key.PID)
		}
		grew += b.Counters.RSS[event.RSSAnon]
	}
	if grew < 8<<20 {
		t.Errorf("the view's buckets hold %d bytes of anon growth, want at least the threads' 8 MiB", grew)
	}
	// Stopped but not closed (a session takes its final snapshot in
	// between) while its process runs on: its records are dropped, not
	// sent on the closed channel.
	if err := v.Stop(); err != nil {
		t.Fatal(err)
	}
	dropped := s.Counts().Dropped
	if l := say("threads 64K 2"); !strings.HasPrefix(l, "ok ") {
		t.Fatalf("memwork: %q", l)
	}
	for end := time.Now().Add(30 * time.Second); s.Counts().Dropped < dropped+4; {
		if time.Now().After(end) {
			t.Fatalf("%d records dropped after the view stopped, want the 2 threads' fork and exit records", s.Counts().Dropped-dropped)
		}
		time.Sleep(10 * time.Millisecond) // the router takes the records within a read poll
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
}
