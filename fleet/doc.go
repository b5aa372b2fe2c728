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
// for all (metrics.Fleet). One BPF program serves every container: a
// tracer.Shared, loaded before the first poll, follows the cgroup the
// node's pods run under (--cgroup-root, by default kubepods.slice or
// kubepods), so the kernel makes every process that execs below it a
// target at its exec, before any poll can name its container, and tags
// the exec record with the process's cgroup. Records are routed in
// memdiag by process: to the View of a container being traced (its
// session's tracer), or kept with their cgroup, pending. An exec in a
// cgroup no container claims wakes a poll; a poll that finds the
// container selected gives it its own session (log, JSON report, metrics
// series labelled with its namespace, pod and container) whose View takes
// the pending records first, so the container is traced from its first
// exec: none of its program's memory is baseline, its first request is
// one of its ops. A poll that finds it named and not selected puts its
// cgroup in the kernel's ignored_cgroups (its later execs make no target)
// and drops its processes (records discarded, kernel entries freed); a
// cgroup no container names within PendingGrace (10 s) is dropped too.
// Containers running before memdiag starts are traced from the first poll
// (their memory then is their baseline). When a container goes, its
// session is finished (final report written), its View closed (the
// kernel entries of its processes freed) and its series removed. A target
// whose trace cannot start yet (a cgroup before its first process) is
// retried at every poll.
//
// Memory is bounded by the number of targets: a Watcher keeps one Target
// per traced container, at most MaxTargets (`memdiag fleet --max-targets`,
// default 16 there); containers beyond the bound are counted in Dropped
// and logged, never traced, and traced once room frees. The kernel side
// does not grow with N: one tracer, its maps sized as one memdiag's
// (BENCHMARKS.md gives the figures); its targets table (8192 processes and
// threads) and bucket table (--max-buckets) are shared by every container.
// In memdiag, each traced container holds one session's account and its
// View (a channel of 4096 + its pending records, a set of its pids), and
// each pending cgroup at most tracer.MaxPendingEvents records
// (tracer.MaxPending cgroups at once; processes beyond are not followed).
//
// What fleet mode does not do: runtime heap sampling (its uprobes would
// outlive the container on the shared tracer; --heap-sampling is off in
// fleet mode), and a process that moves into a container's cgroup without
// exec'ing there is not followed from its start (the first poll after
// traces the processes the container's own cgroup holds). Cgroups made
// below a traced container's are its (tracer.Shared.Nest, after each
// poll): a process that execs in one is followed from its exec.
package fleet
