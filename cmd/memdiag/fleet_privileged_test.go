//go:build privileged

package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sys/unix"

	"github.com/memdiag/memdiag/container"
	"github.com/memdiag/memdiag/container/critest"
	"github.com/memdiag/memdiag/internal/proctest"
	"github.com/memdiag/memdiag/procfs"
	"github.com/memdiag/memdiag/report"
)

// podCtr is a Kubernetes container emulated as runc, containerd and the
// kubelet lay it out, in their order: create (a cgroup
// .../kubepods-pod<uid>.slice/cri-containerd-<id>.scope holding runc's
// init, waiting), start (the init execs the container's program, here
// memwork), then the kubelet's link <pod>_<ns>_<name>-<id>.log (made after
// StartContainer), which is where memdiag learns the container's name. The
// top slice is this test's own and the links directory a temporary one, so
// tests running at the same time never share them.
type podCtr struct {
	ns, pod, name string
	id, cgroup    string
	link          string
	w             *workload
	started       bool
}

// fleetNode is the emulated node: its cgroup slice and kubelet links.
type fleetNode struct {
	t     *testing.T
	top   string // this test's slice under the v2 root
	links string // the kubelet's links directory
}

func newFleetNode(t *testing.T) *fleetNode {
	t.Helper()
	requireRoot(t)
	roots := container.DefaultRoots()
	if roots.V2 == "" {
		t.Skip("no cgroup v2 hierarchy on this host")
	}
	b := make([]byte, 4)
	rand.Read(b)
	n := &fleetNode{t: t, top: filepath.Join(roots.V2, "memdiag-fleet-"+hex.EncodeToString(b)+".slice"), links: t.TempDir()}
	if err := os.Mkdir(n.top, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(n.top) })
	return n
}

// create makes a container up to runc's exec: its init runs in its
// cgroup, waiting for start; its program is memwork.
func (n *fleetNode) create(ns, pod, name string) *podCtr {
	return n.createProgram(ns, pod, name, memworkBin)
}

// createProgram is create with the container's program: a shell command.
func (n *fleetNode) createProgram(ns, pod, name, program string) *podCtr {
	t := n.t
	t.Helper()
	b := make([]byte, 32)
	rand.Read(b)
	c := &podCtr{ns: ns, pod: pod, name: name, id: hex.EncodeToString(b)}
	slice := filepath.Join(n.top, "kubepods-pod"+pod+".slice")
	if os.Mkdir(slice, 0o755) == nil {
		t.Cleanup(func() { os.Remove(slice) })
	}
	c.cgroup = filepath.Join(slice, "cri-containerd-"+c.id+".scope")
	if err := os.Mkdir(c.cgroup, 0o755); err != nil {
		t.Fatal(err)
	}
	// runc's init: joins the cgroup, says so, waits for start, execs.
	cmd := exec.Command("sh", "-c", fmt.Sprintf("echo $$ > %s/cgroup.procs && echo joined && read start && exec %s", c.cgroup, program))
	c.w = newWorkload(t, cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.stop)
	if line := c.w.line(); line != "joined" {
		t.Fatalf("container init: %q", line)
	}
	c.link = filepath.Join(n.links, pod+"_"+ns+"_"+name+"-"+c.id+".log")
	return c
}

// run creates and starts a container, then makes the kubelet's link.
func (n *fleetNode) run(ns, pod, name string) *podCtr {
	n.t.Helper()
	c := n.create(ns, pod, name)
	c.start()
	n.name(c)
	return c
}

// name makes the kubelet's link of a started container: from here the
// node's metadata names it.
func (n *fleetNode) name(c *podCtr) {
	n.t.Helper()
	if err := os.Symlink("/var/log/pods/"+c.ns+"_"+c.pod+"_"+podUID(c.pod)+"/"+c.name+"/0.log", c.link); err != nil {
		n.t.Fatal(err)
	}
}

// exec starts another program in the container, as `kubectl exec` does
// (runc exec: a process joins the cgroup, then execs).
func (c *podCtr) exec(t *testing.T) *workload {
	t.Helper()
	cmd := exec.Command("sh", "-c", fmt.Sprintf("echo $$ > %s/cgroup.procs && exec %s", c.cgroup, memworkBin))
	w := newWorkload(t, cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	w.ready()
	w.first = w.do("status")
	return w
}

// podUID is the emulated pod's UID, the same for its containers.
func podUID(pod string) string {
	return fmt.Sprintf("%08x-0000-4000-8000-000000000000", len(pod)*7919+int(pod[len(pod)-1]))
}

// start execs the container's program.
func (c *podCtr) start() {
	c.w.t.Helper()
	fmt.Fprintln(c.w.in, "start")
	c.w.ready()
	c.w.first = c.w.do("status")
	c.started = true
}

func (c *podCtr) fullName() string { return c.ns + "/" + c.pod + "/" + c.name }

// stop ends the container as the runtime does: its process dies, its
// cgroup goes; the kubelet's link stays until the container is collected
// (here: removed too, as the kubelet's garbage collection would).
func (c *podCtr) stop() {
	if c.w.cmd.ProcessState == nil {
		c.w.cmd.Process.Kill()
		c.w.cmd.Wait()
	}
	proctest.RemoveCgroup(c.cgroup, 10*time.Second) // the kernel frees it once its last process is reaped
	os.Remove(c.link)
}

// fleetRun is `memdiag fleet` under test.
type fleetRun struct {
	*tracerRun
	reports string
	metrics string // the metrics URL
}

func startFleet(t *testing.T, n *fleetNode, args ...string) *fleetRun {
	t.Helper()
	dir := t.TempDir()
	r := &fleetRun{tracerRun: &tracerRun{dir: dir, log: filepath.Join(dir, "memdiag.log")}, reports: filepath.Join(dir, "reports")}
	port := freePort(t)
	r.metrics = fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	ready := filepath.Join(dir, "ready")
	full := append([]string{"fleet", "--ready-file", ready, "--log", r.log, "--reports-dir", r.reports, "--dumps-dir", filepath.Join(dir, "dumps"),
		"--pod-logs", n.links, "--cgroup-root", n.top, "--metrics-addr", fmt.Sprintf("127.0.0.1:%d", port), "--heap-sampling", "off", "--interval", "1h"}, args...)
	r.cmd = exec.Command(memdiagBin, full...)
	r.cmd.Stderr = &r.stderr
	r.done = proctest.Start(t, r.cmd, &r.waitErr)
	if err := proctest.WaitFile(ready, proctest.AttachDeadline, r.done); err != nil {
		t.Fatalf("%v; memdiag stderr: %s", err, r.stderr.String())
	}
	return r
}

// waitLog waits until memdiag's log has a line containing each of want,
// watching the file with inotify (no sleeping), within deadline.
func (r *fleetRun) waitLog(t *testing.T, want ...string) string {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if _, err := unix.InotifyAddWatch(fd, r.log, unix.IN_MODIFY); err != nil {
		t.Fatal(err)
	}
	end := time.Now().Add(60 * time.Second)
	buf := make([]byte, 4096)
	for {
		data, _ := os.ReadFile(r.log)
		missing := false
		for _, w := range want {
			if !strings.Contains(string(data), w) {
				missing = true
			}
		}
		if !missing {
			return string(data)
		}
		select {
		case <-r.done:
			t.Fatalf("memdiag exited waiting for %q: %s\nlog:\n%s", want, r.stderr.String(), data)
		default:
		}
		left := time.Until(end)
		if left <= 0 {
			t.Fatalf("the log has no %q within 60s:\n%s", want, data)
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		unix.Poll(fds, int(min(left, 100*time.Millisecond)/time.Millisecond))
		unix.Read(fd, buf)
	}
}

// scrapeFleet returns the series of one family, by container id.
func (r *fleetRun) scrape(t *testing.T, family string) map[string]*dto.Metric {
	t.Helper()
	resp, err := http.Get(r.metrics)
	if err != nil {
		t.Fatalf("scraping: %v", err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing the scrape: %v", err)
	}
	out := map[string]*dto.Metric{}
	for _, m := range fams[family].GetMetric() {
		l := map[string]string{}
		for _, p := range m.GetLabel() {
			l[p.GetName()] = p.GetValue()
		}
		if _, dup := out[l["container_id"]]; dup {
			t.Errorf("%s: two series for container %s", family, l["container_id"])
		}
		out[l["container_id"]] = m
	}
	return out
}

// bpfFDs counts memdiag's open BPF programs and maps.
func bpfFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); strings.HasPrefix(l, "anon_inode:bpf-") {
			n++
		}
	}
	return n
}

// reports reads the per-container reports memdiag wrote, by container id.
func (r *fleetRun) readReports(t *testing.T) map[string][]*report.Report {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(r.reports, "*.json"))
	out := map[string][]*report.Report{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var rep report.Report
		if err := json.Unmarshal(data, &rep); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[rep.Target.Container] = append(out[rep.Target.Container], &rep)
	}
	return out
}

// TestFleet: `memdiag fleet --select namespace:shop` on a node whose
// containers come and go while it runs: one running before it starts, two
// started while it runs (one allocating before anything names it), one
// restarted under a new id, one that goes, two in another namespace never
// traced (one running before, one started while memdiag runs: followed
// from its exec until its name is known, then dropped), and a program
// started in a traced container (kubectl exec). One BPF program serves
// them all. Each selected container gets exactly one trace and one
// report; a container started while memdiag runs is measured from its
// first exec (its program's whole memory is growth, none is baseline); the
// early one from the poll that found it (what it had before is its
// baseline); its metrics are labelled with its namespace, pod and
// container; a container that goes loses its series and the kernel's
// entries of its processes.
func TestFleet(t *testing.T) {
	n := newFleetNode(t)
	const mib = 1 << 20
	early := n.run("shop", "web-0", "app")
	early.w.do("anon 16M") // before memdiag: baseline, not growth
	outsider := n.run("other", "web-0", "app")

	// An hour between polls: every container after the first poll is
	// found through the kubelet's link or its first exec waking a poll.
	r := startFleet(t, n, "--select", "namespace:shop", "--poll", "1h")
	r.waitLog(t, "[FLEET] tracing "+early.fullName()+" ("+early.id[:12]+")")
	objs := bpfFDs(t, r.cmd.Process.Pid)
	if objs == 0 {
		t.Fatal("memdiag traces a container with no BPF program or map open")
	}

	// Two containers of a new replica start while memdiag runs; web-1's
	// app allocates 3 MiB before the kubelet's link names it.
	web1 := n.create("shop", "web-1", "app")
	web1.start()
	web1.w.do("anon 3M")
	n.name(web1)
	linked := time.Now()
	r.waitLog(t, "[FLEET] tracing "+web1.fullName()+" ("+web1.id[:12]+")")
	t.Logf("from the kubelet's link to the trace: %s", time.Since(linked).Round(time.Millisecond))
	side := n.run("shop", "web-1", "sidecar")
	r.waitLog(t, "[FLEET] tracing "+side.fullName()+" ("+side.id[:12]+")")
	// A container another namespace starts: followed from its exec until
	// a poll names it, then dropped.
	late := n.run("other", "web-1", "app")
	late.w.do("anon 5M")
	for end := time.Now().Add(60 * time.Second); kernelPIDs(t, r.cmd.Process.Pid, "targets")[uint32(late.w.pid)]; {
		if time.Now().After(end) {
			t.Fatalf("process %d of a container not selected still traced 60s after it started", late.w.pid)
		}
		select {
		case <-r.done:
			t.Fatalf("memdiag exited: %s", r.stderr.String())
		case <-time.After(100 * time.Millisecond): // the drop comes with the poll its link wakes
		}
	}
	early.w.do("anon 8M")
	web1.w.do("anon 24M")
	side.w.do("anon 4M")
	// A program started in the early container after memdiag found it:
	// traced from its exec, its whole image is growth.
	shell := early.exec(t)
	shell.do("anon 6M")
	if got := bpfFDs(t, r.cmd.Process.Pid); got != objs {
		t.Errorf("%d BPF objects open for 3 containers, want %d: the one tracer's", got, objs)
	}
	if st, err := procfs.ReadStatus(r.cmd.Process.Pid); err == nil {
		t.Logf("memdiag fleet tracing 3 containers: RSS %.1f MiB, %d BPF objects (programs, maps, links) for all", float64(st.RssAnon+st.RssFile+st.RssShmem)/mib, objs)
	}
	if pids := kernelPIDs(t, r.cmd.Process.Pid, "targets"); pids[uint32(late.w.pid)] || pids[uint32(outsider.w.pid)] || kernelPIDs(t, r.cmd.Process.Pid, "buckets")[uint32(late.w.pid)] {
		t.Errorf("the kernel still traces a container that is not selected (targets %v; late %d, outsider %d)", pids, late.w.pid, outsider.w.pid)
	}

	// Metrics: one series per container, labelled with its names; the
	// growth of each reaches what it allocated.
	want := map[string]*podCtr{early.id: early, web1.id: web1, side.id: side}
	alloc := map[string]int64{early.id: 14 * mib, web1.id: 27 * mib, side.id: 4 * mib}
	deadline := time.Now().Add(60 * time.Second)
	for {
		series := r.scrape(t, "memdiag_target_growth_rss_bytes")
		ok := len(series) == 3
		for id, m := range series {
			c := want[id]
			if c == nil {
				t.Fatalf("a series for container %s, which is not selected (the outsiders are %s, %s)", id[:12], outsider.id[:12], late.id[:12])
			}
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			if l["namespace"] != c.ns || l["pod"] != c.pod || l["container"] != c.name {
				t.Fatalf("container %s labelled %v, want %s", id[:12], l, c.fullName())
			}
			if l["pod_uid"] != podUID(c.pod) {
				t.Fatalf("container %s: pod_uid %q, want %q", id[:12], l["pod_uid"], podUID(c.pod))
			}
			if m.GetGauge().GetValue() < 0.95*float64(alloc[id]) {
				ok = false
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the metrics did not reach every container's growth within 60s: %v", series)
		}
		select {
		case <-r.done:
			t.Fatalf("memdiag exited: %s", r.stderr.String())
		case <-time.After(200 * time.Millisecond): // the exporter is fed every 5 s
		}
	}

	// web-1's app restarts under a new id; the sidecar's pod goes.
	last := map[*podCtr]status{web1: web1.w.do("anon 2M"), side: side.w.do("status")}
	gone := []uint32{uint32(web1.w.pid), uint32(side.w.pid)}
	web1.stop()
	side.stop()
	web1b := n.run("shop", "web-1", "app")
	r.waitLog(t, "stopped tracing "+web1.fullName()+" ("+web1.id[:12]+")", "stopped tracing "+side.fullName()+" ("+side.id[:12]+")", "[FLEET] tracing "+web1b.fullName()+" ("+web1b.id[:12]+")")
	last[web1b] = web1b.w.do("anon 12M")
	if got := bpfFDs(t, r.cmd.Process.Pid); got != objs {
		t.Errorf("%d BPF objects open after 2 containers went and one came, want %d", got, objs)
	}
	// The kernel's entries of the gone containers' processes are freed.
	targets, buckets := kernelPIDs(t, r.cmd.Process.Pid, "targets"), kernelPIDs(t, r.cmd.Process.Pid, "buckets")
	for _, p := range gone {
		if targets[p] || buckets[p] {
			t.Errorf("process %d of a gone container still has kernel entries (targets %v, buckets %v)", p, targets[p], buckets[p])
		}
	}
	if !targets[uint32(web1b.w.pid)] || !targets[uint32(early.w.pid)] {
		t.Errorf("the traced containers' processes %d, %d are not in the kernel's targets %v", web1b.w.pid, early.w.pid, targets)
	}
	series := r.scrape(t, "memdiag_target_rss_bytes")
	if _, ok := series[web1.id]; ok || len(series) != 2 {
		t.Errorf("series after the restart and the exit: %d, the old id's still there: %v", len(series), ok)
	}
	if _, ok := series[web1b.id]; !ok {
		t.Errorf("no series for the restarted container %s", web1b.id[:12])
	}

	r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.wait(t); code != 0 {
		t.Fatalf("memdiag fleet: exit %d: %s", code, r.stderr.String())
	}
	log, _ := os.ReadFile(r.log)
	for _, c := range []*podCtr{early, web1, side, web1b} {
		if k := strings.Count(string(log), "[FLEET] tracing "+c.fullName()+" ("+c.id[:12]+")"); k != 1 {
			t.Errorf("%s (%s) traced %d times, want once", c.fullName(), c.id[:12], k)
		}
	}
	for _, o := range []*podCtr{outsider, late} {
		if strings.Contains(string(log), o.id[:12]) {
			t.Errorf("the container %s of another namespace was traced:\n%s", o.id[:12], log)
		}
	}

	// One report per container. The early one is measured from the poll
	// that found it: what it had then (memwork's image, its 16 MiB) is
	// its baseline; the program exec'd in it after counts whole. The
	// others started while memdiag ran: their program's whole memory,
	// from its exec, is growth (its last status line's RSS), the 3 MiB
	// allocated before the link named web-1 included.
	reps := r.readReports(t)
	if len(reps) != 4 {
		t.Fatalf("reports for %d containers, want 4", len(reps))
	}
	grew := map[*podCtr]int64{early: 14*mib + shell.first.RSS, web1: last[web1].RSS, side: last[side].RSS, web1b: last[web1b].RSS}
	for c, g := range grew {
		rs := reps[c.id]
		if len(rs) != 1 {
			t.Errorf("%s: %d reports, want 1", c.fullName(), len(rs))
			continue
		}
		rep := rs[0]
		if rep.Target.ContainerName != c.fullName() {
			t.Errorf("report of %s names %q", c.id[:12], rep.Target.ContainerName)
		}
		t.Logf("%s: growth %d, want %d (off by %d); baseline %d", c.fullName(), rep.Growth.RSS, g, rep.Growth.RSS-g, rep.Baseline.Memory.RSS)
		if c == early {
			// 1 MiB of slack for the shell that execs the program in
			// early: once in a run of an earlier version of this test,
			// its pages given back by the exec were not counted.
			within(t, c.fullName()+" growth", rep.Growth.RSS, g, 1, mib)
			if rep.Baseline.Memory.RSS < 16*mib {
				t.Errorf("early container's baseline %d: its 16 MiB from before memdiag belong there", rep.Baseline.Memory.RSS)
			}
			continue
		}
		within(t, c.fullName()+" growth", rep.Growth.RSS, g, 1, 16<<10) // exact to the byte in the runs made
		if rep.Baseline.Memory.RSS != 0 {
			t.Errorf("%s: baseline %d, want 0: traced from its first exec", c.fullName(), rep.Baseline.Memory.RSS)
		}
	}
	// Each container's own log ends with why its trace ended.
	for c, why := range map[*podCtr]string{early: "memdiag stopped (signal or --duration)", side: "", web1b: "memdiag stopped"} {
		logs, _ := filepath.Glob(filepath.Join(r.dir, c.ns+"_"+c.pod+"_"+c.name+"-"+c.id[:12]+"-*.log"))
		if len(logs) != 1 {
			t.Errorf("%s: %d logs of its own, want 1", c.fullName(), len(logs))
			continue
		}
		data, _ := os.ReadFile(logs[0])
		if !strings.Contains(string(data), why) || !strings.Contains(string(data), "[INIT]") {
			t.Errorf("%s's log has no [INIT] or no %q", c.fullName(), why)
		}
	}
}

// kernelPIDs reads the map called name among the BPF maps process pid
// holds open (through bpftool) and returns the pids its keys name: the
// key itself (targets) or its tgid field (buckets).
func kernelPIDs(t *testing.T, pid int, name string) map[uint32]bool {
	t.Helper()
	bpftool, err := exec.LookPath("bpftool")
	if err != nil {
		t.Skip("needs bpftool to read memdiag's maps (apt install bpftool)")
	}
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, e := range ents {
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, e.Name()))
		if err != nil {
			continue
		}
		var id string
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "map_id:"); ok {
				id = strings.TrimSpace(v)
			}
		}
		if id == "" {
			continue
		}
		var m struct{ Name string }
		out, err := exec.Command(bpftool, "-j", "map", "show", "id", id).Output()
		if err != nil || json.Unmarshal(out, &m) != nil || m.Name != name {
			continue
		}
		out, err = exec.Command(bpftool, "-j", "map", "dump", "id", id).Output()
		if err != nil {
			t.Fatalf("bpftool map dump id %s: %v", id, err)
		}
		var dump []struct {
			Formatted struct {
				Key json.RawMessage
			}
		}
		if err := json.Unmarshal(out, &dump); err != nil {
			t.Fatalf("bpftool map dump id %s: %v", id, err)
		}
		pids := map[uint32]bool{}
		for _, d := range dump {
			var k uint32
			var s struct{ Tgid uint32 }
			if json.Unmarshal(d.Formatted.Key, &k) == nil {
				pids[k] = true
			} else if json.Unmarshal(d.Formatted.Key, &s) == nil {
				pids[s.Tgid] = true
			}
		}
		return pids
	}
	t.Fatalf("process %d holds no BPF map called %s", pid, name)
	return nil
}

// pyServer is an HTTP service for a container: it listens on a port the
// kernel picks and says which; GET /keep/N keeps 1 MiB (written, so
// resident), anything else keeps nothing.
const pyServer = `
import os
from http.server import BaseHTTPRequestHandler, HTTPServer
kept = []
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path.startswith("/keep"):
            kept.append(b"x" * (1 << 20))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
s = HTTPServer(("127.0.0.1", 0), H)
print("listening", s.server_address[1], flush=True)
s.serve_forever()
`

// TestFleetFirstOp: a container started while memdiag fleet runs serves
// its first request before anything names it (no kubelet link yet, so no
// poll can know it is selected): that request is counted, in its
// category, with the bytes it kept, as are the ones after.
func TestFleetFirstOp(t *testing.T) {
	n := newFleetNode(t)
	python := "/usr/bin/python3" // the system's, not a version manager's shim (a shell script)
	if _, err := os.Stat(python); err != nil {
		if python, err = exec.LookPath("python3"); err != nil {
			t.Skip("needs python3 for the container's HTTP service")
		}
	}
	script := filepath.Join(t.TempDir(), "server.py")
	if err := os.WriteFile(script, []byte(pyServer), 0o644); err != nil {
		t.Fatal(err)
	}
	r := startFleet(t, n, "--select", "namespace:shop", "--poll", "1h")
	c := n.createProgram("shop", "api-0", "app", python+" -u "+script)
	fmt.Fprintln(c.w.in, "start")
	var port int
	if line := c.w.line(); !strings.HasPrefix(line, "listening ") {
		t.Fatalf("the service says %q", line)
	} else {
		fmt.Sscanf(line, "listening %d", &port)
	}
	hc := client(1)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	get(t, hc, "GET", base+"/keep/1", nil) // before the container is named
	n.name(c)
	r.waitLog(t, "[FLEET] tracing "+c.fullName()+" ("+c.id[:12]+")")
	get(t, hc, "GET", base+"/keep/2", nil)
	get(t, hc, "GET", base+"/keep/3", nil)
	get(t, hc, "GET", base+"/other", nil)
	hc.CloseIdleConnections()
	r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.wait(t); code != 0 {
		t.Fatalf("memdiag fleet: exit %d: %s", code, r.stderr.String())
	}
	reps := r.readReports(t)[c.id]
	if len(reps) != 1 {
		t.Fatalf("%d reports for %s, want 1", len(reps), c.fullName())
	}
	rep := reps[0]
	for _, cat := range rep.Categories {
		t.Logf("category %q: %d ops, rss %d", cat.Name, cat.Ops, cat.RSSBytes)
	}
	keep, ok := category(rep, "GET /keep/:id")
	if !ok || keep.Ops != 3 {
		t.Fatalf("GET /keep/:id: %+v, want 3 ops (the first, served before the container was named, included)", keep)
	}
	within(t, "GET /keep/:id growth", keep.RSSBytes, 3<<20, 0.10, 3<<20)
	if other, ok := category(rep, "GET /other"); !ok || other.Ops != 1 {
		t.Errorf("GET /other: %+v, want 1 op", other)
	}
	if rep.Baseline.Memory.RSS != 0 {
		t.Errorf("baseline %d, want 0: traced from its first exec", rep.Baseline.Memory.RSS)
	}
}

// TestFleetAnnotation: `memdiag fleet --select
// annotation:memdiag.io/trace=true` reads the pods' annotations through the
// runtime's CRI socket (a CRI server with containerd's answers: this
// machine runs no container runtime) and follows them as they change: a
// pod annotated while memdiag runs is traced, one whose annotation is
// taken away is finished and freed; a container whose cgroup exists
// before its first process is retried until it can be traced.
func TestFleetAnnotation(t *testing.T) {
	n := newFleetNode(t)
	cri := critest.Start(t)
	on := map[string]string{"memdiag.io/trace": "true"}
	pod := func(name string, ann map[string]string) critest.Pod {
		p := critest.Pod{ID: "sandbox-" + name, Namespace: "shop", Name: name, UID: podUID(name), Annotations: ann}
		cri.SetPod(p)
		return p
	}
	ctr := func(p critest.Pod, name string) *podCtr {
		c := n.create(p.Namespace, p.Name, name)
		c.start()
		cri.SetContainer(critest.Container{ID: c.id, PodID: p.ID, Name: name, Running: true})
		return c
	}
	web := pod("web-0", on)
	db := pod("db-0", nil)
	webApp := ctr(web, "app")
	dbApp := ctr(db, "postgres")

	r := startFleet(t, n, "--select", "annotation:memdiag.io/trace=true", "--cri-socket", cri.Socket, "--poll", "200ms")
	r.waitLog(t, "[FLEET] tracing "+webApp.fullName()+" ("+webApp.id[:12]+")")
	if series := r.scrape(t, "memdiag_target_rss_bytes"); len(series) != 1 || series[webApp.id] == nil {
		t.Errorf("series for %d containers, want only %s", len(series), webApp.fullName())
	}

	// A container whose cgroup exists before its first process (runc
	// create): not traceable yet, retried, traced once a process runs.
	pending := &podCtr{ns: web.Namespace, pod: web.Name, name: "cache"}
	{
		b := make([]byte, 32)
		rand.Read(b)
		pending.id = hex.EncodeToString(b)
		pending.cgroup = filepath.Join(n.top, "kubepods-pod"+web.Name+".slice", "cri-containerd-"+pending.id+".scope")
		if err := os.Mkdir(pending.cgroup, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(pending.cgroup) })
	}
	cri.SetContainer(critest.Container{ID: pending.id, PodID: web.ID, Name: "cache", Running: true})
	r.waitLog(t, "not tracing "+pending.fullName()+" ("+pending.id[:12]+") yet")
	pw := pending.exec(t)
	r.waitLog(t, "[FLEET] tracing "+pending.fullName()+" ("+pending.id[:12]+")")
	pw.do("anon 2M")

	// The annotation moves from web-0 to db-0.
	db.Annotations, web.Annotations = on, nil
	cri.SetPod(db)
	cri.SetPod(web)
	r.waitLog(t, "[FLEET] tracing "+dbApp.fullName()+" ("+dbApp.id[:12]+")", "stopped tracing "+webApp.fullName()+" ("+webApp.id[:12]+")")
	dbApp.w.do("anon 4M")
	r.waitLog(t, "stopped tracing "+pending.fullName()+" ("+pending.id[:12]+")")
	if series := r.scrape(t, "memdiag_target_rss_bytes"); len(series) != 1 || series[dbApp.id] == nil {
		t.Errorf("series for %d containers after the annotation moved, want only %s", len(series), dbApp.fullName())
	}

	r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.wait(t); code != 0 {
		t.Fatalf("memdiag fleet: exit %d: %s", code, r.stderr.String())
	}
	reps := r.readReports(t)
	if len(reps[webApp.id]) != 1 || len(reps[dbApp.id]) != 1 || len(reps[pending.id]) != 1 {
		t.Fatalf("reports %v, want one for each container", reps)
	}
	log, _ := os.ReadFile(r.log)
	if k := strings.Count(string(log), "not tracing "+pending.fullName()); k != 1 {
		t.Errorf("the pending container's error logged %d times, want once", k)
	}
	// What it allocated once traced (as TestFleet, 1 MiB of slack).
	within(t, "db-0's growth", reps[dbApp.id][0].Growth.RSS, 4<<20, 1, 1<<20)
}
