package container

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Roots are where the hierarchies are mounted.
type Roots struct {
	V2       string // the unified (v2) hierarchy: /sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts
	V1Memory string // the v1 memory controller, "" when there is none
}

// DefaultRoots finds the hierarchies of this host.
func DefaultRoots() Roots {
	var r Roots
	for _, p := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st unix.Statfs_t
		if unix.Statfs(p, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			r.V2 = p
			break
		}
	}
	if fi, err := os.Stat("/sys/fs/cgroup/memory"); err == nil && fi.IsDir() {
		r.V1Memory = "/sys/fs/cgroup/memory"
	}
	return r
}

// Container is a container's cgroups.
type Container struct {
	ID       string // the full 64-hex id
	V2       string // its directory in the v2 hierarchy, "" when not found there
	V1Memory string // its directory in the v1 memory hierarchy, "" when not found there
	Name     string // the name it was found by (see Resolve), "" when found by id
	Runtime  string // the runtime that named it (docker, podman, nerdctl, kubernetes), "" when found by id
}

// MinPrefix is the shortest ID prefix accepted, as docker's short ids.
const MinPrefix = 4

// maxDepth bounds the walk of a hierarchy.
const maxDepth = 10

// IDOf returns the container id a cgroup directory name carries, or "".
func IDOf(name string) string {
	base := strings.TrimSuffix(name, ".scope")
	for _, p := range []string{"docker-", "cri-containerd-", "crio-", "libpod-", "containerd-", "nerdctl-"} {
		base = strings.TrimPrefix(base, p)
	}
	if len(base) != 64 {
		return ""
	}
	for _, c := range base {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return ""
		}
	}
	return base
}

// Find looks up the container whose id is id or starts with it.
func Find(id string, roots Roots) (Container, error) {
	id = strings.ToLower(strings.TrimSpace(id))
	if !isIDPrefix(id) {
		return Container{}, fmt.Errorf("container id %q: want at least %d hexadecimal characters of the id", id, MinPrefix)
	}
	all, err := scan(roots)
	if err != nil {
		return Container{}, err
	}
	var found []*Container
	for cid, c := range all {
		if strings.HasPrefix(cid, id) {
			found = append(found, c)
		}
	}
	switch len(found) {
	case 0:
		return Container{}, fmt.Errorf("no container with an id starting %q in %s: check the id with `docker ps --no-trunc` (or crictl ps)", id, strings.Join(nonEmpty(roots.V2, roots.V1Memory), " or "))
	case 1:
		return *found[0], nil
	}
	var ids []string
	for _, c := range found {
		ids = append(ids, c.ID[:12])
	}
	slices.Sort(ids)
	return Container{}, fmt.Errorf("container id %q is ambiguous: it matches %s; give more of the id", id, strings.Join(ids, ", "))
}

// isIDPrefix tells whether s can be the start of a container id.
func isIDPrefix(s string) bool {
	return len(s) >= MinPrefix && len(s) <= 64 && IDOf(s+strings.Repeat("0", 64-len(s))) != ""
}

// scan walks the hierarchies once and returns every container cgroup
// found, by id.
func scan(roots Roots) (map[string]*Container, error) {
	found := map[string]*Container{}
	walk := func(root string, set func(*Container, string)) error {
		if root == "" {
			return nil
		}
		return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				if path == root {
					return err
				}
				return nil // a cgroup vanished while we walked
			}
			if !d.IsDir() {
				return nil
			}
			if strings.Count(strings.TrimPrefix(path, root), "/") > maxDepth {
				return fs.SkipDir
			}
			cid := IDOf(d.Name())
			if cid == "" {
				return nil
			}
			c := found[cid]
			if c == nil {
				c = &Container{ID: cid}
				found[cid] = c
			}
			set(c, path)
			return fs.SkipDir
		})
	}
	err := errors.Join(
		walk(roots.V2, func(c *Container, p string) {
			if c.V2 == "" || len(p) < len(c.V2) {
				c.V2 = p
			}
		}),
		walk(roots.V1Memory, func(c *Container, p string) {
			if c.V1Memory == "" || len(p) < len(c.V1Memory) {
				c.V1Memory = p
			}
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("reading cgroups: %w", err)
	}
	return found, nil
}

func nonEmpty(s ...string) []string {
	var out []string
	for _, x := range s {
		if x != "" {
			out = append(out, x)
		}
	}
	return out
}

// Procs returns the pids in a cgroup directory and below it.
func Procs(dir string) ([]int, error) {
	seen := map[int]bool{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == dir {
				return err
			}
			return nil
		}
		if d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil {
				seen[pid] = true
			}
		}
		return nil
	})
	var pids []int
	for p := range seen {
		pids = append(pids, p)
	}
	slices.Sort(pids)
	return pids, err
}

// Paths are a process's cgroups.
type Paths struct {
	V2       string // relative to the v2 root, e.g. "/system.slice/docker-….scope"
	V1Memory string // relative to the v1 memory root
}

// Of reads /proc/PID/cgroup.
func Of(pid int) (Paths, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return Paths{}, err
	}
	defer f.Close()
	var p Paths
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			p.V2 = parts[2]
		case slices.Contains(strings.Split(parts[1], ","), "memory"):
			p.V1Memory = parts[2]
		}
	}
	return p, sc.Err()
}

// MemoryLimit returns the memory limit of process pid's cgroup (v2
// memory.max, else v1 memory.limit_in_bytes), and false when it has none.
func MemoryLimit(pid int, roots Roots) (int64, bool) {
	p, err := Of(pid)
	if err != nil {
		return 0, false
	}
	read := func(path string) (int64, bool) {
		data, err := os.ReadFile(path)
		if err != nil {
			return 0, false
		}
		s := strings.TrimSpace(string(data))
		if s == "max" {
			return 0, false
		}
		n, err := strconv.ParseInt(s, 10, 64)
		// v1 says "no limit" with a huge page-rounded number.
		if err != nil || n <= 0 || n >= 1<<62 {
			return 0, false
		}
		return n, true
	}
	if roots.V2 != "" && p.V2 != "" {
		if n, ok := read(filepath.Join(roots.V2, p.V2, "memory.max")); ok {
			return n, true
		}
	}
	if roots.V1Memory != "" && p.V1Memory != "" {
		if n, ok := read(filepath.Join(roots.V1Memory, p.V1Memory, "memory.limit_in_bytes")); ok {
			return n, true
		}
	}
	return 0, false
}

// HostPID finds the host pid of the process that is nsPID in the
// container's pid namespace, among the container's processes.
func HostPID(c Container, nsPID int) (int, error) {
	var pids []int
	for _, dir := range nonEmpty(c.V2, c.V1Memory) {
		p, err := Procs(dir)
		if err == nil {
			pids = append(pids, p...)
		}
	}
	for _, pid := range pids {
		if inner, ok := innerPID(pid); ok && inner == nsPID {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no process %d in container %s", nsPID, c.ID[:12])
}

// Main picks the process reports name for a container: its pid 1 (the
// innermost pid namespace's init), else the lowest pid.
func Main(pids []int) int {
	for _, pid := range pids {
		// NSpid has more than one entry only inside a pid namespace.
		if f := nsPIDs(pid); len(f) > 1 && f[len(f)-1] == "1" {
			return pid
		}
	}
	if len(pids) == 0 {
		return 0
	}
	return slices.Min(pids)
}

// nsPIDs reads the NSpid line of /proc/PID/status: the pid in each pid
// namespace, outermost first.
func nsPIDs(pid int) []string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "NSpid:"); ok {
			return strings.Fields(rest)
		}
	}
	return nil
}

// innerPID is a process's pid in its innermost pid namespace.
func innerPID(pid int) (int, bool) {
	f := nsPIDs(pid)
	if len(f) == 0 {
		return 0, false
	}
	n, err := strconv.Atoi(f[len(f)-1])
	return n, err == nil
}

// Cgroups returns every container cgroup of the hierarchies, by full id.
func Cgroups(roots Roots) (map[string]Container, error) {
	found, err := scan(roots)
	if err != nil {
		return nil, err
	}
	out := make(map[string]Container, len(found))
	for id, c := range found {
		out[id] = *c
	}
	return out, nil
}
