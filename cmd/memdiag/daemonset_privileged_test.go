//go:build privileged

package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/memdiag/memdiag/container"
	"github.com/memdiag/memdiag/fleet"
	"github.com/memdiag/memdiag/internal/proctest"
)

// daemonSetCommand reads deploy/kubernetes/daemonset.yaml and returns the
// memdiag container's command with $(VAR) expanded from the ConfigMap, as
// the kubelet expands it.
func daemonSetCommand(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, "deploy", "kubernetes", "daemonset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	type envVar struct {
		Name      string
		ValueFrom struct {
			ConfigMapKeyRef struct{ Key string } `yaml:"configMapKeyRef"`
		} `yaml:"valueFrom"`
	}
	var data map[string]string
	var command []string
	var env []envVar
	dec := yaml.NewDecoder(f)
	for {
		var o struct {
			Kind string
			Data map[string]string
			Spec struct {
				Template struct {
					Spec struct {
						Containers []struct {
							Command []string
							Env     []envVar
						}
					}
				}
			}
		}
		if err := dec.Decode(&o); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		switch o.Kind {
		case "ConfigMap":
			data = o.Data
		case "DaemonSet":
			command, env = o.Spec.Template.Spec.Containers[0].Command, o.Spec.Template.Spec.Containers[0].Env
		}
	}
	vars := map[string]string{}
	for _, e := range env {
		vars[e.Name] = data[e.ValueFrom.ConfigMapKeyRef.Key]
	}
	re := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	for i, a := range command {
		command[i] = re.ReplaceAllStringFunc(a, func(m string) string { return vars[m[2:len(m)-1]] })
	}
	return command
}

// kubeContainer is a Kubernetes container emulated as the kubelet and
// containerd lay it out on a node: a cgroup
// kubepods.slice/…-pod<uid>.slice/cri-containerd-<id>.scope with a process
// in its own namespaces, and the kubelet's link
// /var/log/containers/<pod>_<namespace>_<container>-<id>.log.
type kubeContainer struct {
	id, cgroup, v1 string
}

func newKubeContainer(t *testing.T, ns, pod, uid, name string, start bool) *kubeContainer {
	t.Helper()
	b := make([]byte, 32)
	rand.Read(b)
	k := &kubeContainer{id: hex.EncodeToString(b)}
	roots := container.DefaultRoots()
	if roots.V2 == "" {
		t.Skip("no cgroup v2 hierarchy on this host")
	}
	slice := "kubepods-besteffort-pod" + strings.ReplaceAll(uid, "-", "_") + ".slice"
	rel := filepath.Join("kubepods.slice", "kubepods-besteffort.slice", slice, "cri-containerd-"+k.id+".scope")

	// The kubelet's link; /var/log/containers is made if the host has none.
	dir := "/var/log/containers"
	if _, err := os.Stat(dir); os.IsNotExist(err) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(dir) })
	}
	link := filepath.Join(dir, pod+"_"+ns+"_"+name+"-"+k.id+".log")
	if err := os.Symlink(filepath.Join("/var/log/pods", ns+"_"+pod+"_"+uid, name, "0.log"), link); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(link) })
	if !start {
		return k // a container that ran and exited: its link stays
	}
	k.cgroup = filepath.Join(roots.V2, rel)
	if roots.V1Memory != "" {
		k.v1 = filepath.Join(roots.V1Memory, rel)
	}
	// The slices this test makes are removed after the container's own
	// cgroup (cleanups run last first), those the host had are kept.
	for _, root := range []string{roots.V2, roots.V1Memory} {
		if root == "" {
			continue
		}
		p := root
		for _, part := range strings.Split(filepath.Dir(rel), "/") {
			p = filepath.Join(p, part)
			if err := os.Mkdir(p, 0o755); err == nil {
				made := p
				t.Cleanup(func() { os.Remove(made) })
			} else if !os.IsExist(err) {
				t.Fatal(err)
			}
		}
	}
	for _, d := range []string{k.cgroup, k.v1} {
		if d != "" {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	enter := fmt.Sprintf("echo $$ > %s/cgroup.procs", k.cgroup)
	if k.v1 != "" {
		enter += fmt.Sprintf(" && echo $$ > %s/cgroup.procs", k.v1)
	}
	cmd := exec.Command("sh", "-c", enter+" && exec unshare --pid --mount --fork --mount-proc sh -c 'echo listening; exec sleep 600'")
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		for _, d := range []string{k.cgroup, k.v1} {
			if d == "" {
				continue
			}
			if pids, err := container.Procs(d); err == nil {
				for _, p := range pids {
					syscall.Kill(p, syscall.SIGKILL)
				}
			}
			deadline := time.Now().Add(10 * time.Second)
			for os.Remove(d) != nil && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond) // the kernel frees a cgroup once its last process is reaped
			}
		}
	})
	waitListening(t, out)
	return k
}

// TestDaemonSetCommand: the DaemonSet's command line, with its ConfigMap's
// values, run as the tests run memdiag (the built binary for the image's,
// a free port for :9464, temporary files for the pod's emptyDir), finds
// its targets on a node laid out as the kubelet and containerd lay it out
// (cgroups under kubepods.slice, links in /var/log/containers): the
// selected container running when it starts and a replica started while
// it runs, never another namespace's container of the same name nor a
// sidecar, each with its metrics labelled and its report.
func TestDaemonSetCommand(t *testing.T) {
	requireRoot(t)
	args := daemonSetCommand(t)
	if len(args) < 2 || args[1] != "fleet" {
		t.Fatalf("the DaemonSet runs %q: this test runs fleet mode", args)
	}
	sel, err := fleet.ParseSelector(args[indexOf(args, "--select")+1])
	if err != nil {
		t.Fatal(err)
	}
	if len(sel.Namespaces) != 1 || len(sel.Containers) != 1 || sel.NeedsPodMetadata() || strings.ContainsAny(sel.Namespaces[0]+sel.Containers[0], "*?[") {
		t.Fatalf("MEMDIAG_SELECT %+v: this test emulates one namespace and one container name", sel)
	}
	ns, name := sel.Namespaces[0], sel.Containers[0]
	pod := func() string {
		b := make([]byte, 3)
		rand.Read(b)
		return name + "-7d9c6b5f4-" + hex.EncodeToString(b)
	}
	uid := func() string {
		b := make([]byte, 16)
		rand.Read(b)
		h := hex.EncodeToString(b)
		return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
	}
	pod0, uid0 := pod(), uid()
	first := newKubeContainer(t, ns, pod0, uid0, name, true)
	sidecar := newKubeContainer(t, ns, pod0, uid0, "istio-proxy", true)
	other := newKubeContainer(t, "other", pod(), uid(), name, true)

	dir := t.TempDir()
	port := freePort(t)
	logPath, reports, ready := filepath.Join(dir, "memory-diagnostics.log"), filepath.Join(dir, "reports"), filepath.Join(dir, "ready")
	run := []string{args[1], "--ready-file", ready}
	for i := 2; i < len(args); i++ {
		switch args[i] {
		case "--log":
			i++
			run = append(run, "--log", logPath)
		case "--reports-dir":
			i++
			run = append(run, "--reports-dir", reports)
		case "--metrics-addr":
			i++
			run = append(run, "--metrics-addr", fmt.Sprintf("127.0.0.1:%d", port))
		default:
			run = append(run, args[i])
		}
	}
	r := &fleetRun{tracerRun: &tracerRun{dir: dir, log: logPath}, reports: reports, metrics: fmt.Sprintf("http://127.0.0.1:%d/metrics", port)}
	r.cmd = exec.Command(memdiagBin, run...)
	r.cmd.Stderr = &r.stderr
	r.done = proctest.Start(t, r.cmd, &r.waitErr)
	if err := proctest.WaitFile(ready, proctest.AttachDeadline, r.done); err != nil {
		t.Fatalf("%v; memdiag stderr: %s", err, r.stderr.String())
	}
	r.waitLog(t, "[FLEET] tracing "+ns+"/"+pod0+"/"+name+" ("+first.id[:12]+")")

	// A new replica is scheduled on the node while memdiag runs.
	pod1 := pod()
	second := newKubeContainer(t, ns, pod1, uid(), name, true)
	r.waitLog(t, "[FLEET] tracing "+ns+"/"+pod1+"/"+name+" ("+second.id[:12]+")")

	series := r.scrape(t, "memdiag_target_rss_bytes")
	for _, c := range []struct {
		k   *kubeContainer
		pod string
	}{{first, pod0}, {second, pod1}} {
		m := series[c.k.id]
		if m == nil {
			t.Errorf("no series for %s/%s/%s", ns, c.pod, name)
			continue
		}
		l := map[string]string{}
		for _, p := range m.GetLabel() {
			l[p.GetName()] = p.GetValue()
		}
		if l["namespace"] != ns || l["pod"] != c.pod || l["container"] != name || l["pod_uid"] == "" {
			t.Errorf("%s/%s/%s labelled %v", ns, c.pod, name, l)
		}
	}
	for _, k := range []*kubeContainer{sidecar, other} {
		if series[k.id] != nil {
			t.Errorf("container %s is traced: the selector does not pick it", k.id[:12])
		}
	}

	r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.wait(t); code != 0 {
		t.Fatalf("memdiag %q: exit %d: %s", run, code, r.stderr.String())
	}
	reps := r.readReports(t)
	for _, k := range []*kubeContainer{first, second} {
		// The container's processes exec in a chain — the shell that
		// joined the cgroup execs unshare, whose child (its pid
		// namespace's 1) is sh until it execs sleep — and fleet mode
		// opens a container's trace at its first exec, so the report may
		// name any of them (sh once in five runs of make test, unshare
		// once in three at load 8).
		comm := ""
		if rs := reps[k.id]; len(rs) == 1 {
			comm = rs[0].Target.Comm
		}
		if rs := reps[k.id]; len(rs) != 1 || !slices.Contains([]string{"sleep", "sh", "unshare"}, comm) || rs[0].Target.Cgroup != k.cgroup {
			var got []string
			for _, r := range rs {
				got = append(got, fmt.Sprintf("pid %d %q in %s", r.Target.PID, r.Target.Comm, r.Target.Cgroup))
			}
			t.Errorf("container %s: reports %v, want one of its sleep in %s", k.id[:12], got, k.cgroup)
		}
	}
	for _, k := range []*kubeContainer{sidecar, other} {
		if len(reps[k.id]) != 0 {
			t.Errorf("container %s has a report: the selector does not pick it", k.id[:12])
		}
	}
}

// TestAttachKubernetesName: `attach --container namespace/pod-glob/name`
// finds a Kubernetes container by name on a node laid out as the kubelet
// and containerd lay it out, after the container restarted under a new id.
func TestAttachKubernetesName(t *testing.T) {
	requireRoot(t)
	ns, name := "default", "my-service"
	pod := "my-service-7d9c6b5f4-x2x8k"
	uid := "5e1f0a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b"
	old := newKubeContainer(t, ns, pod, uid, name, false) // before the restart
	cur := newKubeContainer(t, ns, pod, uid, name, true)
	// Another pod's container of the same name in another namespace.
	newKubeContainer(t, "other", pod, "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e", name, true)

	r := startMemdiag(t, nil, "attach", "--container", ns+"/my-service-*/"+name, "--no-dumps")
	r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.wait(t); code != 0 {
		t.Fatalf("memdiag: exit %d: %s", code, r.stderr.String())
	}
	rep := r.readReport(t)
	if rep.Target.Container != cur.id || rep.Target.Comm != "sleep" {
		t.Errorf("target %+v, want the running container %s (not the one before the restart, %s)", rep.Target, cur.id[:12], old.id[:12])
	}
	if rep.Target.Cgroup != cur.cgroup {
		t.Errorf("cgroup %q, want %q", rep.Target.Cgroup, cur.cgroup)
	}

	// A bare container name matches both namespaces: ambiguous, one line.
	code, stderr := runOnce(t, nil, "attach", "--container", name)
	if code != 2 || !strings.Contains(stderr, "ambiguous") || !strings.Contains(stderr, ns+"/"+pod+"/"+name) || !strings.Contains(stderr, "other/"+pod+"/"+name) || strings.Count(stderr, "\n") != 1 {
		t.Errorf("bare name: exit %d, %q", code, stderr)
	}
	// The container before the restart, alone: not running.
	code, stderr = runOnce(t, nil, "attach", "--container", old.id)
	if code != 2 || !strings.Contains(stderr, "no container") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("old id: exit %d, %q", code, stderr)
	}
}

func indexOf(args []string, s string) int {
	for i, a := range args {
		if a == s {
			return i
		}
	}
	return -1
}
