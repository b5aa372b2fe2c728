// Package fleet discovers the containers of a Kubernetes node that a
// selector picks, for memdiag's fleet mode (one memdiag per node, a
// DaemonSet, tracing every matching container): List answers once, a
// Watcher reports containers as they appear and go (new replicas,
// restarts under a new id, deletions).
//
// Discovery is read-only and needs no Kubernetes API access: it reads the
// node's container runtime through its CRI socket (pod labels and
// annotations come from ListPodSandbox) or, for namespace selectors only,
// the kubelet's /var/log/containers links. A container is a target while
// its cgroup exists.
//
// Memory is bounded by the number of targets: a Watcher keeps one Target
// per traced container, at most MaxTargets (default 64); containers beyond
// the bound are counted in Dropped and reported, never traced.
package fleet
