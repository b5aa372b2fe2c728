package metrics

import "strings"

// containerPrefixes are the runtimes' prefixes of a container's cgroup
// directory (systemd scopes such as docker-<id>.scope and cgroupfs
// directories alike).
var containerPrefixes = []string{"docker-", "cri-containerd-", "crio-", "libpod-"}

// ContainerID returns the container ID (64 lowercase hex digits) in a cgroup
// path such as /system.slice/docker-<id>.scope,
// /kubepods.slice/…/cri-containerd-<id>.scope, /machine.slice/libpod-<id>.scope,
// /kubepods/burstable/pod<uid>/<id> or /docker/<id>; "" when there is none.
// The deepest matching directory wins, so a container's own sub-cgroups
// (libpod-<id>.scope/container) still name it. The monitors' scopes
// (crio-conmon-<id>, libpod-conmon-<id>) are not containers and give "".
func ContainerID(cgroupPath string) string {
	dirs := strings.Split(cgroupPath, "/")
	for i := len(dirs) - 1; i >= 0; i-- {
		// cgroup v1 with the systemd driver can join slice, runtime
		// and ID with colons: kubepods-…-pod<uid>.slice:cri-containerd:<id>.
		parts := strings.Split(dirs[i], ":")
		for j := len(parts) - 1; j >= 0; j-- {
			if id := containerIDOf(parts[j]); id != "" {
				return id
			}
		}
	}
	return ""
}

// containerIDOf returns the container ID one directory name holds, or "".
func containerIDOf(name string) string {
	name = strings.TrimSuffix(name, ".scope")
	for _, p := range containerPrefixes {
		if rest, ok := strings.CutPrefix(name, p); ok {
			name = rest
			break
		}
	}
	if len(name) == 64 && isHex(name) {
		return name
	}
	return ""
}

// PodUID returns the Kubernetes pod UID in a cgroup path under kubepods, with
// the systemd driver's underscores turned back into dashes:
// /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_5f60_….slice/…
// and /kubepods/burstable/pod1b2c3d4e-5f60-…/… both give
// "1b2c3d4e-5f60-…". Static pods' UIDs (32 hex digits, no dashes) are
// recognized too. It returns "" when the path names no pod.
func PodUID(cgroupPath string) string {
	if !strings.Contains(cgroupPath, "kubepods") {
		return ""
	}
	dirs := strings.Split(cgroupPath, "/")
	for i := len(dirs) - 1; i >= 0; i-- {
		for _, part := range strings.Split(dirs[i], ":") {
			if uid := podUIDOf(strings.TrimSuffix(part, ".slice")); uid != "" {
				return uid
			}
		}
	}
	return ""
}

// podUIDOf returns the UID of a directory named pod<uid> or
// <parent slice>-pod<uid>, or "".
func podUIDOf(name string) string {
	i := strings.LastIndex(name, "pod")
	if i < 0 || (i > 0 && name[i-1] != '-') {
		return ""
	}
	uid := strings.ReplaceAll(name[i+len("pod"):], "_", "-")
	if isUUID(uid) || (len(uid) == 32 && isHex(uid)) {
		return uid
	}
	return ""
}

// isUUID reports whether s is 8-4-4-4-12 lowercase hex digits.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range []byte(s) {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !isHexDigit(c) {
				return false
			}
		}
	}
	return true
}

func isHex(s string) bool {
	for _, c := range []byte(s) {
		if !isHexDigit(c) {
			return false
		}
	}
	return true
}

func isHexDigit(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' }
