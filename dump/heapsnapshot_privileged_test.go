//go:build privileged

package dump

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// TestHeapSnapshotOtherNetns: a target in a network namespace of its own
// (as in a container) listens on its own loopback, which memdiag reaches
// only from inside. Both ways: the inspector opened by SIGUSR1 on the
// default port 9229 (free there, whatever runs on the host) and closed,
// and one already open with --inspect, left open.
func TestHeapSnapshotOtherNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("privileged test: run as root (sudo make test); entering another network namespace needs CAP_SYS_ADMIN")
	}
	for _, bin := range []string{"unshare", "ip"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s is missing (%v): install util-linux and iproute2", bin, err)
		}
	}
	ours := hsThreadNetns(t)
	for _, tc := range []struct {
		name   string
		flags  string
		opened bool
	}{
		{"sigusr1", "", true},
		{"inspect", "--inspect", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg := hsStart(t, []string{"unshare", "--net", "sh", "-c", "ip link set lo up && exec " + hsNodeBin + " " + tc.flags + " SCRIPT"})
			if theirs, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", tg.pid)); err != nil || theirs == ours[0] {
				t.Fatalf("the target's network namespace is %q (%v), memdiag's %q: want another", theirs, err, ours[0])
			}
			res, _ := hsSnapshot(t, tg)
			if res.Port != defaultInspectorPort || res.OpenedByUs != tc.opened || res.InspectorClosed != tc.opened {
				t.Errorf("%+v, want port %d, opened and closed by us: %v", res, defaultInspectorPort, tc.opened)
			}
			if tg.hsListensOn(t, res.Port) == tc.opened {
				t.Errorf("inspector listening afterwards: %v, want %v", !tc.opened, !tc.opened)
			}
			tg.hsAlive(t)
			for _, ns := range hsThreadNetns(t) {
				if ns != ours[0] {
					t.Errorf("a thread of memdiag is left in network namespace %s, not %s", ns, ours[0])
				}
			}
		})
	}
}

// hsThreadNetns returns the network namespace of every thread of this
// process.
func hsThreadNetns(t *testing.T) []string {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, task := range tasks {
		ns, err := os.Readlink("/proc/self/task/" + task.Name() + "/ns/net")
		if err != nil {
			continue // the thread has exited
		}
		out = append(out, ns)
	}
	return out
}
