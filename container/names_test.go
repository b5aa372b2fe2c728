package container

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The fixtures in testdata are files as the runtimes write them:
// docker-27-config.v2.json is docker 27.3's containers/<id>/config.v2.json
// (compose 2.29 labels), podman-5-containers.json podman 5.2's
// storage/overlay-containers/containers.json (containers/storage 1.55).

const (
	idC = "9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b"
	idD = "1d2c3b4a59687f6e5d4c3b2a1908f7e6d5c4b3a29180f7e6d5c4b3a2918f7e6d"
	idE = "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff"
)

func composeLabels(project, service, number string) string {
	b, _ := json.Marshal(map[string]string{
		"com.docker.compose.config-hash":          "4a7f0c6de9b1c3e5f7a9b1d3f5a7c9e1b3d5f7a9c1e3b5d7f9a1c3e5b7d9f1a3",
		"com.docker.compose.container-number":     number,
		"com.docker.compose.depends_on":           "",
		"com.docker.compose.image":                "sha256:9b2c1d0e7a4f5e3c8b6a1d2f0e9c7b5a3d1f8e6c4b2a0f9e7d5c3b1a9f8e7d6c",
		"com.docker.compose.oneoff":               "False",
		"com.docker.compose.project":              project,
		"com.docker.compose.project.config_files": "/srv/" + project + "/docker-compose.yml",
		"com.docker.compose.project.working_dir":  "/srv/" + project,
		"com.docker.compose.service":              service,
		"com.docker.compose.version":              "2.29.7",
	})
	return string(b)
}

// dockerContainer writes <root>/containers/<id>/config.v2.json as docker does.
func dockerContainer(t *testing.T, root, id, name, labels string) {
	t.Helper()
	tmpl, err := os.ReadFile("testdata/docker-27-config.v2.json")
	if err != nil {
		t.Fatal(err)
	}
	if labels == "" {
		labels = "{}"
	}
	s := strings.NewReplacer("@ID@", id, "@ID12@", id[:12], "@NAME@", name, "@LABELS@", labels).Replace(string(tmpl))
	dir := filepath.Join(root, "containers", id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.v2.json"), []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// cgroupOf creates a running container's cgroup in a v2 tree, as the
// runtime names it.
func cgroupOf(t *testing.T, v2, dir string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(v2, dir), 0o755); err != nil {
		t.Fatal(err)
	}
}

func resolveIn(src Sources, name string) (Container, error) {
	return Resolve(context.Background(), name, src)
}

func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one with %q", parts)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error is not one line: %q", err)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q lacks %q", err, p)
		}
	}
}

// TestResolveDocker: docker names, Compose services and container names,
// a recreate that changes the id under the same name, scale ambiguity.
func TestResolveDocker(t *testing.T) {
	docker, v2 := t.TempDir(), t.TempDir()
	src := Sources{Roots: Roots{V2: v2}, Docker: []string{docker}}
	dockerContainer(t, docker, idA, "fitnessally-oip-gpu-1", composeLabels("fitnessally", "oip-gpu", "1"))
	dockerContainer(t, docker, idB, "redis", "")
	cgroupOf(t, v2, "system.slice/docker-"+idA+".scope")
	cgroupOf(t, v2, "system.slice/docker-"+idB+".scope")

	for _, name := range []string{"oip-gpu", "fitnessally-oip-gpu-1", "fitnessally-oip-gpu", idA[:12]} {
		c, err := resolveIn(src, name)
		if err != nil || c.ID != idA || c.V2 != filepath.Join(v2, "system.slice/docker-"+idA+".scope") {
			t.Errorf("Resolve(%q) = %+v, %v; want %s", name, c, err, idA[:12])
		}
	}
	if c, err := resolveIn(src, "redis"); err != nil || c.ID != idB || c.Name != "redis" || c.Runtime != "docker" {
		t.Errorf("Resolve(redis) = %+v, %v", c, err)
	}

	// `docker compose up --force-recreate`: compose renames the old
	// container <id12>_<name>, creates the new one, removes the old. While
	// both exist only the new one runs.
	os.RemoveAll(filepath.Join(docker, "containers", idA))
	dockerContainer(t, docker, idA, idA[:12]+"_fitnessally-oip-gpu-1", composeLabels("fitnessally", "oip-gpu", "1"))
	dockerContainer(t, docker, idC, "fitnessally-oip-gpu-1", composeLabels("fitnessally", "oip-gpu", "1"))
	os.Remove(filepath.Join(v2, "system.slice/docker-"+idA+".scope"))
	cgroupOf(t, v2, "system.slice/docker-"+idC+".scope")
	for _, name := range []string{"oip-gpu", "fitnessally-oip-gpu-1"} {
		if c, err := resolveIn(src, name); err != nil || c.ID != idC {
			t.Errorf("after recreate, Resolve(%q) = %+v, %v; want the new id %s", name, c, err, idC[:12])
		}
	}

	// `docker compose up --scale oip-gpu=2`: the service is ambiguous, its
	// containers are not.
	dockerContainer(t, docker, idD, "fitnessally-oip-gpu-2", composeLabels("fitnessally", "oip-gpu", "2"))
	cgroupOf(t, v2, "system.slice/docker-"+idD+".scope")
	_, err := resolveIn(src, "oip-gpu")
	wantErr(t, err, "ambiguous", "fitnessally-oip-gpu-1 ("+idC[:12]+")", "fitnessally-oip-gpu-2 ("+idD[:12]+")")
	if c, err := resolveIn(src, "fitnessally-oip-gpu-2"); err != nil || c.ID != idD {
		t.Errorf("Resolve(fitnessally-oip-gpu-2) = %+v, %v", c, err)
	}

	// Stopped: the metadata stays, the cgroup goes.
	os.Remove(filepath.Join(v2, "system.slice/docker-"+idB+".scope"))
	_, err = resolveIn(src, "redis")
	wantErr(t, err, "not running", "docker redis ("+idB[:12]+")")

	// A damaged config.v2.json hides nothing else, and is named when a
	// name is not found.
	os.MkdirAll(filepath.Join(docker, "containers", idE), 0o700)
	os.WriteFile(filepath.Join(docker, "containers", idE, "config.v2.json"), []byte(`{"ID":"`), 0o600)
	if c, err := resolveIn(src, "fitnessally-oip-gpu-2"); err != nil || c.ID != idD {
		t.Errorf("with a damaged file beside it, Resolve = %+v, %v", c, err)
	}
	_, err = resolveIn(src, "postgres")
	wantErr(t, err, `no container named "postgres"`, "docker "+docker, "docker ps", "could not be read", idE+"/config.v2.json")
	// A name made of hex digits is tried as a name, then as an id prefix.
	_, err = resolveIn(src, "cafe")
	wantErr(t, err, `no container with an id starting or named "cafe"`)
	dockerContainer(t, docker, idA, idC[:4], "") // named like the start of another's id
	cgroupOf(t, v2, "system.slice/docker-"+idA+".scope")
	if c, err := resolveIn(src, idC[:4]); err != nil || c.ID != idA {
		t.Errorf("Resolve(%q) = %+v, %v; want the container of that name, %s", idC[:4], c, err, idA[:12])
	}
	if c, err := resolveIn(src, idC[:5]); err != nil || c.ID != idC {
		t.Errorf("Resolve(%q) = %+v, %v; want %s by its id", idC[:5], c, err, idC[:12])
	}
}

// TestResolveDockerV1: cgroup v1 hosts name a docker container's cgroup
// /docker/<id>; compose v1 names containers project_service_N.
func TestResolveDockerV1(t *testing.T) {
	docker, v1 := t.TempDir(), t.TempDir()
	src := Sources{Roots: Roots{V1Memory: v1}, Docker: []string{docker}}
	dockerContainer(t, docker, idA, "shop_web_1", composeLabels("shop", "web", "1"))
	cgroupOf(t, v1, "docker/"+idA)
	for _, name := range []string{"web", "shop_web_1", "shop_web"} {
		if c, err := resolveIn(src, name); err != nil || c.ID != idA || c.V1Memory != filepath.Join(v1, "docker", idA) {
			t.Errorf("Resolve(%q) = %+v, %v", name, c, err)
		}
	}
}

// TestResolvePodman: podman names from containers/storage, and
// `podman rm -f web && podman run --name web` changing the id.
func TestResolvePodman(t *testing.T) {
	storage, v2 := t.TempDir(), t.TempDir()
	src := Sources{Roots: Roots{V2: v2}, Storage: []string{storage}}
	write := func(id1, name1, id2, name2 string) {
		tmpl, err := os.ReadFile("testdata/podman-5-containers.json")
		if err != nil {
			t.Fatal(err)
		}
		s := strings.NewReplacer("@ID1@", id1, "@NAME1@", name1, "@ID2@", id2, "@NAME2@", name2).Replace(string(tmpl))
		os.MkdirAll(filepath.Join(storage, "overlay-containers"), 0o700)
		if err := os.WriteFile(filepath.Join(storage, "overlay-containers", "containers.json"), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(idA, "web", idB, "shop_db_1")
	// Rootful podman under systemd: machine.slice/libpod-<id>.scope.
	cgroupOf(t, v2, "machine.slice/libpod-"+idA+".scope/container")
	cgroupOf(t, v2, "machine.slice/libpod-"+idB+".scope")
	if c, err := resolveIn(src, "web"); err != nil || c.ID != idA || c.Runtime != "podman" || c.V2 != filepath.Join(v2, "machine.slice/libpod-"+idA+".scope") {
		t.Errorf("Resolve(web) = %+v, %v", c, err)
	}
	if c, err := resolveIn(src, "shop_db_1"); err != nil || c.ID != idB {
		t.Errorf("Resolve(shop_db_1) = %+v, %v", c, err)
	}
	os.RemoveAll(filepath.Join(v2, "machine.slice/libpod-"+idA+".scope"))
	write(idC, "web", idB, "shop_db_1")
	cgroupOf(t, v2, "machine.slice/libpod-"+idC+".scope")
	if c, err := resolveIn(src, "web"); err != nil || c.ID != idC {
		t.Errorf("after podman rm + run, Resolve(web) = %+v, %v; want %s", c, err, idC[:12])
	}
	// A cri-o container in the same storage is left to the kubelet's names.
	write(idD, "k8s_app_web-0_shop_5e1f_0", idB, "shop_db_1")
	if _, err := resolveIn(src, "k8s_app_web-0_shop_5e1f_0"); err == nil {
		t.Error("a cri-o storage name resolved")
	}
}

// TestResolveNerdctl: nerdctl's names/<namespace>/<name> files.
func TestResolveNerdctl(t *testing.T) {
	root, v2 := t.TempDir(), t.TempDir()
	dir := filepath.Join(root, "1935db59", "names", "default")
	os.MkdirAll(dir, 0o700)
	os.WriteFile(filepath.Join(dir, "api"), []byte(idE), 0o600)
	cgroupOf(t, v2, "system.slice/nerdctl-"+idE+".scope")
	src := Sources{Roots: Roots{V2: v2}, Nerdctl: []string{root}}
	// The systemd cgroup driver: system.slice/nerdctl-<id>.scope.
	if c, err := resolveIn(src, "api"); err != nil || c.ID != idE || c.Runtime != "nerdctl" {
		t.Errorf("Resolve(api) = %+v, %v", c, err)
	}
	// The cgroupfs driver: /<namespace>/<id>.
	os.Remove(filepath.Join(v2, "system.slice/nerdctl-"+idE+".scope"))
	cgroupOf(t, v2, "default/"+idE)
	if c, err := resolveIn(src, "api"); err != nil || c.V2 != filepath.Join(v2, "default", idE) {
		t.Errorf("Resolve(api) = %+v, %v", c, err)
	}
}

// podLog writes the kubelet's link for a container, as kubelet 1.31
// makes it: /var/log/containers/<pod>_<ns>_<ctr>-<id>.log ->
// /var/log/pods/<ns>_<pod>_<uid>/<ctr>/<attempt>.log.
func podLog(t *testing.T, dir, ns, pod, uid, ctr, id string, attempt int) string {
	t.Helper()
	os.MkdirAll(dir, 0o755)
	link := filepath.Join(dir, pod+"_"+ns+"_"+ctr+"-"+id+".log")
	target := filepath.Join("/var/log/pods", ns+"_"+pod+"_"+uid, ctr, strconv.Itoa(attempt)+".log")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	return link
}

// kubeCgroup is the cgroup the kubelet's systemd driver and containerd give
// a container of a burstable pod.
func kubeCgroup(uid, id string) string {
	return "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + strings.ReplaceAll(uid, "-", "_") + ".slice/cri-containerd-" + id + ".scope"
}

// TestResolveKubelet: Kubernetes names from the kubelet's links, a
// container restart (new id, the old link kept), pods with two containers.
func TestResolveKubelet(t *testing.T) {
	logs, v2 := t.TempDir(), t.TempDir()
	src := Sources{Roots: Roots{V2: v2}, PodLogs: []string{logs}}
	uid1, uid2 := "5e1f0a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b", "7a8b9c0d-1e2f-4a3b-9c4d-5e6f7a8b9c0d"
	podLog(t, logs, "shop", "web-7d9c6b5f4-x2x8k", uid1, "app", idA, 0)
	podLog(t, logs, "shop", "web-7d9c6b5f4-x2x8k", uid1, "istio-proxy", idB, 0)
	podLog(t, logs, "kube-system", "coredns-5d78c9869d-abcde", uid2, "coredns", idE, 0)
	cgroupOf(t, v2, kubeCgroup(uid1, idA))
	cgroupOf(t, v2, kubeCgroup(uid1, idB))
	cgroupOf(t, v2, kubeCgroup(uid2, idE))

	for _, name := range []string{"shop/web-7d9c6b5f4-x2x8k/app", "shop/web-*/app", "app"} {
		c, err := resolveIn(src, name)
		if err != nil || c.ID != idA || c.Name != "shop/web-7d9c6b5f4-x2x8k/app" || c.Runtime != "kubernetes" {
			t.Errorf("Resolve(%q) = %+v, %v", name, c, err)
		}
	}
	for _, name := range []string{"kube-system/coredns-5d78c9869d-abcde", "coredns-5d78c9869d-abcde", "kube-system/*/coredns"} {
		if c, err := resolveIn(src, name); err != nil || c.ID != idE {
			t.Errorf("Resolve(%q) = %+v, %v", name, c, err)
		}
	}
	_, err := resolveIn(src, "shop/web-7d9c6b5f4-x2x8k")
	wantErr(t, err, "ambiguous", "shop/web-7d9c6b5f4-x2x8k/app ("+idA[:12]+")", "shop/web-7d9c6b5f4-x2x8k/istio-proxy ("+idB[:12]+")", "namespace/pod/container")

	// app restarts: a new id; the kubelet keeps the old link until the
	// dead container is collected.
	os.Remove(filepath.Join(v2, kubeCgroup(uid1, idA)))
	podLog(t, logs, "shop", "web-7d9c6b5f4-x2x8k", uid1, "app", idC, 1)
	cgroupOf(t, v2, kubeCgroup(uid1, idC))
	if c, err := resolveIn(src, "shop/web-*/app"); err != nil || c.ID != idC {
		t.Errorf("after a restart, Resolve = %+v, %v; want %s", c, err, idC[:12])
	}
	// A second replica on the node makes the pod glob ambiguous.
	uid3 := "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e"
	podLog(t, logs, "shop", "web-7d9c6b5f4-q9z7m", uid3, "app", idD, 0)
	cgroupOf(t, v2, kubeCgroup(uid3, idD))
	_, err = resolveIn(src, "shop/web-*/app")
	wantErr(t, err, "ambiguous", "web-7d9c6b5f4-x2x8k/app", "web-7d9c6b5f4-q9z7m/app")

	// The link names the pod's uid.
	named, _ := src.List(context.Background())
	for _, n := range named {
		if n.ID == idE && n.PodUID != uid2 {
			t.Errorf("coredns pod uid %q, want %s", n.PodUID, uid2)
		}
	}
}

// TestResolveBadNames: names that cannot be names, one-line errors.
func TestResolveBadNames(t *testing.T) {
	src := Sources{Roots: Roots{V2: t.TempDir()}}
	for _, bad := range []string{"", "  ", "a\nb", strings.Repeat("x", 600)} {
		_, err := resolveIn(src, bad)
		if err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("Resolve(%q) = %v, want a one-line error", bad, err)
		}
	}
	_, err := resolveIn(src, "web")
	wantErr(t, err, "no runtime")
}

// BenchmarkResolve: a name among 500 docker containers and 500
// Kubernetes ones, with their cgroups.
func BenchmarkResolve(b *testing.B) {
	t := &testing.T{}
	docker, logs, v2 := b.TempDir(), b.TempDir(), b.TempDir()
	for i := range 500 {
		id := strings.Repeat("0", 60) + strconv.FormatInt(int64(0x1000+i), 16)
		dockerContainer(t, docker, id, "svc-"+strconv.Itoa(i), composeLabels("p", "svc"+strconv.Itoa(i), "1"))
		cgroupOf(t, v2, "system.slice/docker-"+id+".scope")
		kid := strings.Repeat("f", 60) + strconv.FormatInt(int64(0x1000+i), 16)
		podLog(t, logs, "ns", "pod-"+strconv.Itoa(i), "uid", "app", kid, 0)
		cgroupOf(t, v2, kubeCgroup("uid"+strconv.Itoa(i), kid))
	}
	src := Sources{Roots: Roots{V2: v2}, Docker: []string{docker}, PodLogs: []string{logs}}
	b.ResetTimer()
	for b.Loop() {
		if _, err := resolveIn(src, "ns/pod-250/app"); err != nil {
			b.Fatal(err)
		}
	}
}
