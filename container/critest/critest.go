// Package critest serves the list calls of the CRI runtime service
// (ListPodSandbox, ListContainers) over a unix socket, with the real
// k8s.io/cri-api types and a real gRPC server, for tests of CRI clients on
// machines that run no container runtime. Its answers follow containerd
// 2.x's: running containers carry the kubelet's io.kubernetes.* labels, pod
// sandboxes the pod's labels and annotations.
package critest

import (
	"context"
	"net"
	"path/filepath"
	"sync"
	"testing"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Pod is a pod sandbox.
type Pod struct {
	ID, Namespace, Name, UID string
	Labels, Annotations      map[string]string
}

// Container is a container of a pod.
type Container struct {
	ID, PodID, Name string
	Attempt         uint32
	Running         bool
}

// Server is a CRI runtime service whose pods and containers the test sets.
type Server struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	Socket string

	mu         sync.Mutex
	pods       map[string]Pod
	containers map[string]Container
	calls      int
}

// Start serves on a socket in a temporary directory until the test ends.
func Start(t *testing.T) *Server {
	t.Helper()
	s := &Server{Socket: filepath.Join(t.TempDir(), "containerd.sock"), pods: map[string]Pod{}, containers: map[string]Container{}}
	l, err := net.Listen("unix", s.Socket)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(g, s)
	go g.Serve(l)
	t.Cleanup(g.Stop)
	return s
}

// SetPod adds or replaces a pod.
func (s *Server) SetPod(p Pod) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pods[p.ID] = p
}

// SetContainer adds or replaces a container.
func (s *Server) SetContainer(c Container) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.containers[c.ID] = c
}

// Remove forgets a container.
func (s *Server) Remove(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.containers, id)
}

// Calls counts the list calls answered.
func (s *Server) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// ListPodSandbox answers every pod, ready.
func (s *Server) ListPodSandbox(_ context.Context, _ *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	var items []*runtimeapi.PodSandbox
	for _, p := range s.pods {
		labels := map[string]string{
			"io.kubernetes.pod.name":      p.Name,
			"io.kubernetes.pod.namespace": p.Namespace,
			"io.kubernetes.pod.uid":       p.UID,
		}
		for k, v := range p.Labels {
			labels[k] = v
		}
		items = append(items, &runtimeapi.PodSandbox{
			Id:          p.ID,
			Metadata:    &runtimeapi.PodSandboxMetadata{Name: p.Name, Uid: p.UID, Namespace: p.Namespace},
			State:       runtimeapi.PodSandboxState_SANDBOX_READY,
			Labels:      labels,
			Annotations: p.Annotations,
		})
	}
	return &runtimeapi.ListPodSandboxResponse{Items: items}, nil
}

// ListContainers answers the containers the filter's state selects.
func (s *Server) ListContainers(_ context.Context, req *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	var out []*runtimeapi.Container
	for _, c := range s.containers {
		state := runtimeapi.ContainerState_CONTAINER_EXITED
		if c.Running {
			state = runtimeapi.ContainerState_CONTAINER_RUNNING
		}
		if f := req.GetFilter().GetState(); f != nil && f.GetState() != state {
			continue
		}
		p := s.pods[c.PodID]
		out = append(out, &runtimeapi.Container{
			Id:           c.ID,
			PodSandboxId: c.PodID,
			Metadata:     &runtimeapi.ContainerMetadata{Name: c.Name, Attempt: c.Attempt},
			State:        state,
			Labels: map[string]string{
				"io.kubernetes.container.name": c.Name,
				"io.kubernetes.pod.name":       p.Name,
				"io.kubernetes.pod.namespace":  p.Namespace,
				"io.kubernetes.pod.uid":        p.UID,
			},
		})
	}
	return &runtimeapi.ListContainersResponse{Containers: out}, nil
}
