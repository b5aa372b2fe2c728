//go:build privileged

package fleet

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/memdiag/memdiag/container"
	"github.com/memdiag/memdiag/internal/proctest"
)

// podContainer is a Kubernetes container emulated on this host as the
// kubelet and containerd lay it out: a process in a cgroup
// …/…-pod<uid>.slice/cri-containerd-<id>.scope and a link
// <pod>_<ns>_<name>-<id>.log in a kubelet-like links directory. The
// top slice is this test's own (not kubepods.slice) and the links
// directory a temporary one, so that tests of other packages running at
// the same time never share a directory with it.
type podContainer struct {
	id, cgroup, link string
	cmd              *exec.Cmd
}

func startPodContainer(t *testing.T, links, ns, pod, name string) *podContainer {
	t.Helper()
	roots := container.DefaultRoots()
	b := make([]byte, 32)
	rand.Read(b)
	c := &podContainer{id: hex.EncodeToString(b)}
	top := filepath.Join(roots.V2, fmt.Sprintf("memdiag-fleet-test-%d.slice", os.Getpid()))
	slice := filepath.Join(top, "kubepods-pod"+pod+".slice")
	for _, d := range []string{top, slice} {
		if os.Mkdir(d, 0o755) == nil {
			t.Cleanup(func() { os.Remove(d) })
		}
	}
	c.cgroup = filepath.Join(slice, "cri-containerd-"+c.id+".scope")
	if err := os.Mkdir(c.cgroup, 0o755); err != nil {
		t.Fatal(err)
	}
	c.link = filepath.Join(links, pod+"_"+ns+"_"+name+"-"+c.id+".log")
	if err := os.Symlink("/var/log/pods/"+ns+"_"+pod+"_uid/"+name+"/0.log", c.link); err != nil {
		t.Fatal(err)
	}
	// sh says "joined" once it has moved itself into the cgroup.
	c.cmd = exec.Command("sh", "-c", fmt.Sprintf("echo $$ > %s/cgroup.procs && echo joined && exec sleep 600", c.cgroup))
	out, _ := c.cmd.StdoutPipe()
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.stop)
	line, _ := bufio.NewReader(out).ReadString('\n')
	if pids, _ := container.Procs(c.cgroup); line != "joined\n" || !slices.Contains(pids, c.cmd.Process.Pid) {
		t.Fatalf("the container's process did not join its cgroup (%q, %v)", line, pids)
	}
	return c
}

// stop ends the container as the runtime does: its process dies, its
// cgroup goes; the kubelet's link stays until the container is collected.
func (c *podContainer) stop() {
	if c.cmd.ProcessState == nil {
		c.cmd.Process.Kill()
		c.cmd.Wait()
	}
	proctest.RemoveCgroup(c.cgroup, 10*time.Second) // the kernel frees it once its last process is reaped
	os.Remove(c.link)
}

// TestWatcherOnHost: containers emulated on the real cgroup tree come and
// go; the Watcher reports each once, with its cgroup holding its process.
func TestWatcherOnHost(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: run `sudo make test`")
	}
	if container.DefaultRoots().V2 == "" {
		t.Skip("no cgroup v2 hierarchy on this host")
	}
	ns := "shop"
	links := t.TempDir()
	src := container.Sources{Roots: container.DefaultRoots(), PodLogs: []string{links}}
	sel, _ := ParseSelector("namespace:" + ns)
	w := NewWatcher(sel, src, Options{})
	poll := func() map[string]EventKind {
		t.Helper()
		evs, err := w.Poll(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]EventKind{}
		for _, e := range evs {
			if _, dup := got[e.Target.ID]; dup {
				t.Errorf("two events for %s in one poll", e.Target.ID[:12])
			}
			got[e.Target.ID] = e.Kind
		}
		return got
	}
	a := startPodContainer(t, links, ns, "web-0", "app")
	b := startPodContainer(t, links, ns, "web-1", "app")
	c := startPodContainer(t, links, ns, "web-1", "sidecar")
	other := startPodContainer(t, links, ns+"-other", "web-0", "app")
	if got := poll(); len(got) != 3 || got[a.id] != Added || got[b.id] != Added || got[c.id] != Added {
		t.Fatalf("first poll %v, want a, b, c added (not %s, another namespace)", got, other.id[:12])
	}
	for _, tg := range w.Targets() {
		pids, _ := container.Procs(tg.Cgroup)
		if len(pids) != 1 || !strings.HasSuffix(tg.Cgroup, tg.ID+".scope") {
			t.Errorf("%s: cgroup %s holds %v", tg.Name(), tg.Cgroup, pids)
		}
	}
	if got := poll(); len(got) != 0 {
		t.Errorf("a poll with nothing changed reported %v", got)
	}
	// b exits and restarts under a new id; c goes.
	b.stop()
	c.stop()
	b2 := startPodContainer(t, links, ns, "web-1", "app")
	if got := poll(); len(got) != 3 || got[b.id] != Removed || got[c.id] != Removed || got[b2.id] != Added {
		t.Errorf("after a restart and an exit: %v", got)
	}
	if n := len(w.Targets()); n != 2 {
		t.Errorf("%d targets followed, want 2 (state of the gone ones freed)", n)
	}
}
