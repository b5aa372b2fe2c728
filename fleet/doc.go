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
// Serve (`memdiag fleet`) runs fleet mode: a Runner traces what a Watcher
// reports, each container's outputs named after it, one metrics endpoint
// for all (metrics.Fleet); cmd/memdiag gives it the tracer's open
// sequence (OpenTracer). Each target gets its own session (log, JSON
// report, metrics series labelled with its namespace, pod and container)
// from the poll that finds it until it goes; the session is then finished
// (final report written), its tracer closed (its BPF programs and maps
// freed) and its series removed. A target whose trace cannot start yet (a
// cgroup before its first process) is retried at every poll.
//
// Memory is bounded by the number of targets: a Watcher keeps one Target
// per traced container, at most MaxTargets (`memdiag fleet --max-targets`,
// default 16 there); containers beyond the bound are counted in Dropped
// and logged, never traced, and traced once room frees. Each trace holds
// one loaded BPF program with its maps (83 programs, maps and links,
// 20 MiB of kernel memory as measured in BENCHMARKS.md) and one session's
// account (under 1 MiB there): 18 MiB + N x 21 MiB for N targets.
//
// A container is traced from the poll that finds it (every --poll,
// default 2 s, and at once when the kubelet makes or removes a link in a
// PodLogs directory, which it does right after starting a container), once
// its trace's BPF program is loaded (seconds on a loaded machine): its
// processes running then from there (their memory before is the
// baseline), any program it starts after (kubectl exec, a worker) from
// its exec, whole.
package fleet
