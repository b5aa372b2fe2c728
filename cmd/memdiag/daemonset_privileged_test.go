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
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/memdiag/memdiag/container"
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
// values, finds its target by name on a node laid out as the kubelet and
// containerd lay it out, after the container restarted under a new id.
func TestDaemonSetCommand(t *testing.T) {
	requireRoot(t)
	args := daemonSetCommand(t)
	target := args[indexOf(args, "--container")+1]
	parts := strings.Split(target, "/")
	if len(parts) != 3 {
		t.Fatalf("TARGET_CONTAINER %q: this test emulates a namespace/pod/container target", target)
	}
	ns, name := parts[0], parts[2]
	pod := strings.ReplaceAll(parts[1], "*", "7d9c6b5f4-x2x8k")
	uid := "5e1f0a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b"
	old := newKubeContainer(t, ns, pod, uid, name, false) // before the restart
	cur := newKubeContainer(t, ns, pod, uid, name, true)
	// Another pod's container of the same name in another namespace.
	newKubeContainer(t, "other", pod, "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e", name, true)

	// Run it as the tests run memdiag: the built binary for the image's,
	// a free port for :9464, the test's log for the pod's.
	var run []string
	for i := 1; i < len(args); i++ {
		switch args[i] {
		case "--log":
			i++
		case "--metrics-addr":
			i++
			run = append(run, "--metrics-addr", fmt.Sprintf("127.0.0.1:%d", freePort(t)))
		default:
			run = append(run, args[i])
		}
	}
	r := startMemdiag(t, nil, run...)
	r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.wait(t); code != 0 {
		t.Fatalf("memdiag %q: exit %d: %s", run, code, r.stderr.String())
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
