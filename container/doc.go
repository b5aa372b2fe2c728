// Package container finds a container's cgroup from its ID (or a unique
// prefix of it) in the cgroup hierarchies, under the names docker,
// containerd, cri-o and podman give them, on cgroup v1, v2 and hybrid
// hosts, and answers what memdiag asks of a cgroup: its processes, its
// memory limit, and a host pid for a pid inside the container.
//
// Resolve also finds a container by the name its user knows it by, read
// from the runtimes' own metadata without a daemon: Docker's
// containers/<id>/config.v2.json (names and Compose labels), Podman's and
// CRI-O's containers/storage containers.json, nerdctl's names directory,
// the kubelet's /var/log/containers links, and, when a CRI socket is
// present, the runtime's ListContainers and ListPodSandbox answers (pod
// labels and annotations). A name is resolved to a running container: one
// whose cgroup exists now, so a name whose container was restarted under a
// new id finds the new one.
package container
