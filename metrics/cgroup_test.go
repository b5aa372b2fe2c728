package metrics_test

import (
	"strings"
	"testing"

	"github.com/memdiag/memdiag/metrics"
)

const (
	cid  = "3f4e5d6c7b8a99aabbccddeeff00112233445566778899aabbccddeeff001122"
	uid  = "1b2c3d4e-5f60-7890-abcd-ef1234567890"
	uidU = "1b2c3d4e_5f60_7890_abcd_ef1234567890" // the systemd driver's spelling
)

var cgroupCases = []struct {
	name, path, container, pod string
}{
	{"containerd, systemd driver", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope", cid, uid},
	{"containerd, systemd driver, guaranteed", "/kubepods.slice/kubepods-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope", cid, uid},
	{"cgroupfs driver", "/kubepods/burstable/pod" + uid + "/" + cid, cid, uid},
	{"cgroupfs driver, besteffort", "/kubepods/besteffort/pod" + uid + "/" + cid, cid, uid},
	{"cri-o, systemd driver", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidU + ".slice/crio-" + cid + ".scope", cid, uid},
	{"cri-o monitor", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidU + ".slice/crio-conmon-" + cid + ".scope", "", uid},
	{"cgroup v1 colon form", "/system.slice/containerd.service/kubepods-burstable-pod" + uidU + ".slice:cri-containerd:" + cid, cid, uid},
	{"kubelet under a cgroup root", "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope", cid, uid},
	{"static pod (hash UID)", "/kubepods/burstable/pod5c6f5fc4a0a1a1e2b3c4d5e6f7a8b9c0/" + cid, cid, "5c6f5fc4a0a1a1e2b3c4d5e6f7a8b9c0"},
	{"pod sandbox level", "/kubepods/burstable/pod" + uid, "", uid},
	{"docker, systemd driver", "/system.slice/docker-" + cid + ".scope", cid, ""},
	{"docker, cgroupfs driver", "/docker/" + cid, cid, ""},
	{"podman", "/machine.slice/libpod-" + cid + ".scope", cid, ""},
	{"podman, nested init cgroup", "/machine.slice/libpod-" + cid + ".scope/container", cid, ""},
	{"podman monitor", "/machine.slice/libpod-conmon-" + cid + ".scope", "", ""},
	{"rootless podman", "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + cid + ".scope", cid, ""},
	{"host service", "/system.slice/sshd.service", "", ""},
	{"root", "/", "", ""},
	{"empty", "", "", ""},
	{"short id", "/docker/" + cid[:12], "", ""},
	{"uppercase hex is not an id", "/docker/" + strings.ToUpper(cid), "", ""},
	{"pod outside kubepods", "/system.slice/pod" + uid + ".slice", "", ""},
	{"bad uid", "/kubepods/burstable/pod1b2c3d4e-5f60-7890-abcd-ef123456789/" + cid, cid, ""},
	{"word ending in pod", "/kubepods/burstable/ipod" + uid + "/" + cid, cid, ""},
}

func TestContainerID(t *testing.T) {
	for _, c := range cgroupCases {
		if got := metrics.ContainerID(c.path); got != c.container {
			t.Errorf("%s: ContainerID(%q) = %q, want %q", c.name, c.path, got, c.container)
		}
	}
}

func TestPodUID(t *testing.T) {
	for _, c := range cgroupCases {
		if got := metrics.PodUID(c.path); got != c.pod {
			t.Errorf("%s: PodUID(%q) = %q, want %q", c.name, c.path, got, c.pod)
		}
	}
}

// FuzzCgroupPath checks that any path gives either nothing or a well-formed
// ID found in the path.
func FuzzCgroupPath(f *testing.F) {
	for _, c := range cgroupCases {
		f.Add(c.path)
	}
	f.Fuzz(func(t *testing.T, path string) {
		if id := metrics.ContainerID(path); id != "" && (len(id) != 64 || !strings.Contains(path, id)) {
			t.Errorf("ContainerID(%q) = %q", path, id)
		}
		if uid := metrics.PodUID(path); uid != "" {
			if (len(uid) != 36 && len(uid) != 32) || !strings.Contains(strings.ReplaceAll(path, "_", "-"), uid) {
				t.Errorf("PodUID(%q) = %q", path, uid)
			}
		}
	})
}
