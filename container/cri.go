package container

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// criMaxMessage is the largest CRI answer accepted, the kubelet's bound.
const criMaxMessage = 16 << 20

// ListCRI asks the CRI runtime listening on socket (containerd, cri-o)
// for its running containers and their pods, with the pods' labels and
// annotations. It only lists: it never changes anything.
func ListCRI(ctx context.Context, socket string) ([]Named, error) {
	conn, err := grpc.NewClient("unix://"+socket,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(criMaxMessage)))
	if err != nil {
		return nil, fmt.Errorf("CRI socket %s: %v", socket, err)
	}
	defer conn.Close()
	rs := runtimeapi.NewRuntimeServiceClient(conn)
	sbs, err := rs.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return nil, fmt.Errorf("CRI socket %s: ListPodSandbox: %v", socket, err)
	}
	pods := map[string]*runtimeapi.PodSandbox{}
	for _, sb := range sbs.GetItems() {
		pods[sb.GetId()] = sb
	}
	cs, err := rs.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
		State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING},
	}})
	if err != nil {
		return nil, fmt.Errorf("CRI socket %s: ListContainers: %v", socket, err)
	}
	var out []Named
	for _, c := range cs.GetContainers() {
		if IDOf(c.GetId()) == "" {
			continue
		}
		n := Named{ID: c.GetId(), Runtime: "kubernetes", Container: c.GetMetadata().GetName()}
		l := c.GetLabels()
		n.Namespace, n.Pod, n.PodUID = l["io.kubernetes.pod.namespace"], l["io.kubernetes.pod.name"], l["io.kubernetes.pod.uid"]
		if sb := pods[c.GetPodSandboxId()]; sb != nil {
			m := sb.GetMetadata()
			n.Namespace, n.Pod, n.PodUID = m.GetNamespace(), m.GetName(), m.GetUid()
			n.Labels, n.Annotations = sb.GetLabels(), sb.GetAnnotations()
		}
		if n.Namespace == "" || n.Pod == "" || n.Container == "" {
			continue // not a pod's container
		}
		out = append(out, kubeNamed(n))
	}
	return out, nil
}
