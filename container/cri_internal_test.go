package container

import (
	"testing"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// FuzzParseCRI: the hand-written decoders never panic, and on what the
// real cri-api types encode they read the same fields.
func FuzzParseCRI(f *testing.F) {
	c, _ := proto.Marshal(&runtimeapi.Container{Id: "c1", PodSandboxId: "p1", Metadata: &runtimeapi.ContainerMetadata{Name: "app", Attempt: 2},
		Image: &runtimeapi.ImageSpec{Image: "img"}, State: runtimeapi.ContainerState_CONTAINER_RUNNING, CreatedAt: 7, Labels: map[string]string{"a": "b"}})
	p, _ := proto.Marshal(&runtimeapi.PodSandbox{Id: "p1", Metadata: &runtimeapi.PodSandboxMetadata{Name: "web-0", Uid: "u", Namespace: "shop", Attempt: 1},
		CreatedAt: 9, Labels: map[string]string{"app": "web"}, Annotations: map[string]string{"k": "v"}})
	f.Add(c)
	f.Add(p)
	f.Fuzz(func(t *testing.T, b []byte) {
		gc, errc := parseCRIContainer(b)
		gp, errp := parseCRIPod(b)
		var rc runtimeapi.Container
		if errc == nil && proto.Unmarshal(b, &rc) == nil {
			if gc.id != rc.GetId() || gc.podID != rc.GetPodSandboxId() || gc.name != rc.GetMetadata().GetName() || len(gc.labels) != len(rc.GetLabels()) {
				t.Errorf("container %+v, cri-api reads %v", gc, &rc)
			}
		}
		var rp runtimeapi.PodSandbox
		if errp == nil && proto.Unmarshal(b, &rp) == nil {
			m := rp.GetMetadata()
			if gp.id != rp.GetId() || gp.name != m.GetName() || gp.uid != m.GetUid() || gp.namespace != m.GetNamespace() ||
				len(gp.labels) != len(rp.GetLabels()) || len(gp.annotations) != len(rp.GetAnnotations()) {
				t.Errorf("pod %+v, cri-api reads %v", gp, &rp)
			}
		}
	})
}
