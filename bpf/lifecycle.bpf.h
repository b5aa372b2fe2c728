/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Lifecycle: exec, fork, exit, rename and the OOM killer.
 *
 * A process becomes a target at attach (userspace, TS_ATTACHED), at its
 * fork from a target (TS_FORKED: what it inherited is BK_START), or at its
 * exec when it is the run launcher (launcher_tgid) or runs in the traced
 * cgroup (`target_cgroup`, TS_EXECED: its new mm starts at zero) and not
 * in one of `ignored_cgroups`. The exec record carries the cgroup id, so
 * that fleet mode (one tracer whose traced cgroup is the node's pods
 * parent) tells whose container a new process is. Each exec
 * bumps the target's generation, so mappings from the old image are
 * ignored. A fork copies the parent's libc range to the child. A thread's
 * exit ends an op still waiting for its thread to move on, then forgets the
 * thread's state in every per-thread map; the process's entry goes with its
 * last thread. Fork sets the child's bit in `target_bits`; exit clears
 * none (another live target may share it: userspace clears bits when it
 * forgets a process). Fork, exec, exit and OOM kills are sent as records;
 * task_rename renames the thread's own bucket. Fork, exec, exit and rename
 * are BTF raw tracepoints (the task and bprm come as arguments); the
 * execve syscalls come through the syscall dispatch (syscalls.bpf.h).
 */
#ifndef MEMDIAG_LIFECYCLE_BPF_H
#define MEMDIAG_LIFECYCLE_BPF_H

/* Set by `memdiag run`: the launcher process whose exec makes it a target. */
volatile const u32 launcher_tgid = 0;

/* Set when target_cgroup holds a cgroup. */
volatile const u32 follow_cgroup = 0;

/* cgroup v2 id -> 1: cgroups below target_cgroup whose execs make no
 * target (fleet mode: containers the selector does not pick, known from
 * the runtime's metadata). Looked up at exec only. 4096: the containers
 * of a node, with room. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, u64);
	__type(value, u8);
} ignored_cgroups SEC(".maps");

/* [0] -> the cgroup (v2) being traced (--container, --cgroup): a process
 * that execs or forks in it, or below it, becomes a target. One cgroup. */
struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u32);
} target_cgroup SEC(".maps");

/* execve by a target: the mm it gets starts at zero, so first sights in it
 * are growth. The state before is kept in case the exec fails. */
static __always_inline int exec_enter(void)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct target *t = current_target(tgid);
	if (!t)
		return 0;
	t->prev_state = t->state;
	t->state = TS_EXECED;
	return 0;
}

static __always_inline int exec_exit(s64 ret)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct target *t = current_target(tgid);
	if (t && ret < 0 && t->prev_state)
		t->state = t->prev_state;
	return 0;
}

/* execve and execveat, called by the syscall dispatch (syscalls.bpf.h). */
static __noinline int on_enter_execve(void) { return exec_enter(); }
static __noinline int on_exit_execve(s64 ret) { return exec_exit(ret); }

/* BTF raw tracepoints for the sched events (here and below): no trace
 * record is built for the processes memdiag does not trace. */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *p, int old_pid, struct linux_binprm *bprm)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32;
	if (!current_target(tgid)) {
		/* The run launcher, or a process started in the traced cgroup
		 * (docker exec, a new worker): it is a target from its exec. */
		int in_cgroup = follow_cgroup && bpf_current_task_under_cgroup(&target_cgroup, 0) == 1;
		if (in_cgroup) {
			u64 cg = bpf_get_current_cgroup_id();
			if (bpf_map_lookup_elem(&ignored_cgroups, &cg))
				in_cgroup = 0;
		}
		if (!in_cgroup && (!launcher_tgid || tgid != launcher_tgid))
			return 0;
		struct target t = { .state = TS_EXECED };
		if (bpf_map_update_elem(&targets, &tgid, &t, BPF_NOEXIST) == -E2BIG)
			stat_inc(ST_TARGET_OVERFLOW);
		else
			mark_target(tgid);
	}
	struct target *t = current_target(tgid);
	if (t) {
		u32 gen = __sync_fetch_and_add(&t->gen, 1) + 1;
		/* The new mm's state, if its first RSS change came before this
		 * (the exec loads the image into it), kept the old gen. */
		struct mm_state *st = current_mm_state(tgid);
		if (st)
			st->gen = gen;
	}
	struct exec_event *e = event_reserve(sizeof(*e), EV_EXEC, tgid, (u32)id);
	if (!e)
		return 0;
	bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), BPF_CORE_READ(bprm, filename));
	e->cgroup_id = bpf_get_current_cgroup_id();
	submit(e);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child_task)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32;
	if (!current_target(tgid))
		return 0;
	u32 child = child_task->pid;
	/* A new thread's tid lands here too; lookups are by tgid, so it is
	 * inert, and its exit removes it. */
	struct target t = { .state = TS_FORKED };
	if (bpf_map_update_elem(&targets, &child, &t, BPF_NOEXIST) == -E2BIG)
		stat_inc(ST_TARGET_OVERFLOW);
	else
		mark_target(child);
	struct libc_range *lr = bpf_map_lookup_elem(&libc_ranges, &tgid);
	if (lr) {
		struct libc_range copy = *lr; /* a child (not a thread) has the same libc */
		bpf_map_update_elem(&libc_ranges, &child, &copy, BPF_NOEXIST);
	}
	struct fork_event *e = event_reserve(sizeof(*e), EV_FORK, tgid, (u32)id);
	if (!e)
		return 0;
	e->child_pid = child;
	e->_pad = 0;
	bpf_probe_read_kernel_str(e->comm, sizeof(e->comm), child_task->comm);
	submit(e);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct *p, u8 dead)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32, tid = (u32)id;
	if (!current_target(tgid))
		return 0;
	u8 group_dead = dead;
	/* The leader may leave before its threads: the tgid entry goes only
	 * with the last thread. */
	if (tid != tgid)
		bpf_map_delete_elem(&targets, &tid);
	if (current_thread_state())
		set_thread(tgid, tid, TM_IDLE, 0); /* sends an end still waiting */
	bpf_map_delete_elem(&tls_reads, &tid);
	bpf_map_delete_elem(&ab_pending, &tid);
	if (group_dead)
		bpf_map_delete_elem(&targets, &tgid);
	struct exit_event *e = event_reserve(sizeof(*e), EV_EXIT, tgid, tid);
	if (!e)
		return 0;
	e->exit_code = p->exit_code;
	e->group_dead = group_dead;
	e->_pad[0] = e->_pad[1] = e->_pad[2] = 0;
	bpf_probe_read_kernel_str(e->comm, sizeof(e->comm), p->comm);
	submit(e);
	return 0;
}

SEC("tp_btf/task_rename")
int BPF_PROG(on_rename, struct task_struct *task, const char *comm)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!current_target(tgid))
		return 0;
	struct bucket_key key = { .tgid = tgid, .kind = BK_THREAD, .id = (u32)task->pid };
	struct counters *c = bpf_map_lookup_elem(&buckets, &key);
	if (c)
		bpf_probe_read_kernel_str(c->comm, sizeof(c->comm), comm);
	return 0;
}

/* The OOM killer chose a target: its memory as the killer saw it, in kB
 * like the perf event's record (which the raw tracepoint does not build:
 * the counters are read here, summed over CPUs as rss_value does). */
SEC("tp_btf/mark_victim")
int BPF_PROG(on_oom, struct task_struct *task, u32 uid)
{
	u32 victim = task->tgid;
	struct target *t = bpf_map_lookup_elem(&targets, &victim);
	if (!t)
		return 0;
	struct mm_struct *mm = task->mm;
	if (!mm)
		return 0;
	struct oom_event *e = event_reserve(sizeof(*e), EV_OOM, victim, victim);
	if (!e)
		return 0;
	e->anon_rss = rss_value(mm, RSS_ANON) >> 10;
	e->file_rss = rss_value(mm, RSS_FILE) >> 10;
	e->shmem_rss = rss_value(mm, RSS_SHMEM) >> 10;
	e->total_vm = mm->total_vm << (PAGE_SHIFT - 10);
	submit(e);
	return 0;
}

#endif /* MEMDIAG_LIFECYCLE_BPF_H */
