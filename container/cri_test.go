package container_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/memdiag/memdiag/container"
	"github.com/memdiag/memdiag/container/critest"
)

const (
	idA = "4f5e6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091"
	idB = "4f5e6a7b11112222333344445555666677778888999900001111222233334444"
	idC = "9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b"
	sbA = "aa00000000000000000000000000000000000000000000000000000000000001"
)

// TestResolveCRI: Kubernetes names through a CRI socket (a real gRPC
// server with the cri-api types), pod labels and annotations, a restart.
func TestResolveCRI(t *testing.T) {
	cri := critest.Start(t)
	v2 := t.TempDir()
	uid := "5e1f0a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b"
	pod := "kubepods.slice/kubepods-pod" + strings.ReplaceAll(uid, "-", "_") + ".slice/"
	cri.SetPod(critest.Pod{ID: sbA, Namespace: "shop", Name: "web-0", UID: uid,
		Labels: map[string]string{"app": "web"}, Annotations: map[string]string{"memdiag.io/trace": "true"}})
	cri.SetContainer(critest.Container{ID: idA, PodID: sbA, Name: "app", Running: true})
	cri.SetContainer(critest.Container{ID: idB, PodID: sbA, Name: "sidecar", Running: true})
	for _, id := range []string{idA, idB} {
		os.MkdirAll(filepath.Join(v2, pod, "cri-containerd-"+id+".scope"), 0o755)
	}
	src := container.Sources{Roots: container.Roots{V2: v2}, CRI: []string{cri.Socket}}

	named, err := src.List(context.Background())
	if err != nil || len(named) != 2 {
		t.Fatalf("List = %+v, %v", named, err)
	}
	for _, n := range named {
		if n.Namespace != "shop" || n.Pod != "web-0" || n.PodUID != uid || n.Labels["app"] != "web" || n.Annotations["memdiag.io/trace"] != "true" {
			t.Errorf("CRI entry %+v", n)
		}
	}
	c, err := container.Resolve(context.Background(), "shop/web-0/app", src)
	if err != nil || c.ID != idA || c.V2 != filepath.Join(v2, pod, "cri-containerd-"+idA+".scope") {
		t.Errorf("Resolve = %+v, %v", c, err)
	}
	// app restarts under a new id.
	cri.SetContainer(critest.Container{ID: idA, PodID: sbA, Name: "app", Running: false})
	cri.SetContainer(critest.Container{ID: idC, PodID: sbA, Name: "app", Attempt: 1, Running: true})
	os.Remove(filepath.Join(v2, pod, "cri-containerd-"+idA+".scope"))
	os.MkdirAll(filepath.Join(v2, pod, "cri-containerd-"+idC+".scope"), 0o755)
	if c, err := container.Resolve(context.Background(), "shop/web-0/app", src); err != nil || c.ID != idC {
		t.Errorf("after a restart, Resolve = %+v, %v; want %s", c, err, idC[:12])
	}
	if cri.Calls() < 6 {
		t.Errorf("the CRI server answered %d calls, want 2 per List", cri.Calls())
	}
}

// TestCRIUnreachable: a socket left by a runtime that died is skipped
// with its error named, and the other sources still answer.
func TestCRIUnreachable(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "containerd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	logs, v2 := filepath.Join(dir, "containers"), filepath.Join(dir, "cgroup")
	os.MkdirAll(logs, 0o755)
	os.Symlink("/var/log/pods/shop_web-0_5e1f/app/0.log", filepath.Join(logs, "web-0_shop_app-"+idA+".log"))
	os.MkdirAll(filepath.Join(v2, "kubepods", "pod5e1f", idA), 0o755)
	src := container.Sources{Roots: container.Roots{V2: v2}, CRI: []string{sock}, PodLogs: []string{logs}}
	if c, err := container.Resolve(context.Background(), "shop/web-0/app", src); err != nil || c.ID != idA {
		t.Errorf("Resolve with a dead CRI socket = %+v, %v", c, err)
	}
	_, err = container.Resolve(context.Background(), "shop/web-1/app", src)
	if err == nil || !strings.Contains(err.Error(), "no container named") || !strings.Contains(err.Error(), sock) || strings.Contains(err.Error(), "\n") {
		t.Errorf("unknown name with a dead CRI socket: %v", err)
	}
}

// TestCRIStatus: a runtime without the list calls answers with a gRPC
// status (a real gRPC server), which ListCRI names.
func TestCRIStatus(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "containerd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(g, runtimeapi.UnimplementedRuntimeServiceServer{})
	go g.Serve(l)
	defer g.Stop()
	_, err = container.ListCRI(context.Background(), sock)
	if err == nil || !strings.Contains(err.Error(), "ListPodSandbox: rpc error: code = Unimplemented desc = method ListPodSandbox not implemented") {
		t.Errorf("ListCRI of a runtime without ListPodSandbox: %v", err)
	}
}

// TestCRIManyPods: an answer of many HTTP/2 frames (a node with 300 pods
// whose labels make the list about 100 KB), read whole.
func TestCRIManyPods(t *testing.T) {
	cri := critest.Start(t)
	long := strings.Repeat("v", 200)
	for i := range 300 {
		id := fmt.Sprintf("%064x", i+1)
		cri.SetPod(critest.Pod{ID: id, Namespace: "shop", Name: fmt.Sprintf("web-%d", i), UID: fmt.Sprint(i),
			Labels: map[string]string{"app": long}})
		cri.SetContainer(critest.Container{ID: fmt.Sprintf("%064x", 1000+i), PodID: id, Name: "app", Running: true})
	}
	named, err := container.ListCRI(context.Background(), cri.Socket)
	if err != nil || len(named) != 300 {
		t.Fatalf("ListCRI: %d containers, %v", len(named), err)
	}
	for _, n := range named {
		if n.Labels["app"] != long || n.Namespace != "shop" {
			t.Fatalf("entry %+v", n)
		}
	}
}
