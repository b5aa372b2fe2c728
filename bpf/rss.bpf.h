/* SPDX-License-Identifier: GPL-2.0 */
/*
 * RSS and page faults.
 *
 * kmem:rss_stat fires whenever one MM_* counter of one mm changes. It is
 * attached as a BTF raw tracepoint (tp_btf): its arguments are (mm,
 * member), and the program reads the counter's value itself (rss_value:
 * the sum of its per-CPU parts, as the perf event's record would), only
 * for traced mms; every other process pays a bitmap test. The delta
 * against the last value seen for that (mm, member) in `mm_states` is the
 * exact change, charged to the current thread's bucket (its op,
 * idle, or its own; core.bpf.h) when the mm is its own (curr = 1); when the
 * mm is not current's (curr = 0; such an mm is ours only when `mm_states`
 * knows it, and stale when its owner is another process) it goes to the owner's BK_RELEASE bucket if
 * the owner itself is tearing down an mm it left (exit, exec), else to its
 * BK_KERNEL bucket (reclaim, remote access). A decrease while the thread
 * gives memory back (mappings.bpf.h, `releasing`) goes to the mapping's
 * owner instead. The first value seen for a (mm, member) has no previous
 * value; it is charged whole:
 *   - to BK_BASELINE if the process was already running at attach,
 *   - to BK_START if it was forked while traced (what fork copied),
 *   - to the current bucket if it exec'd while traced (a new mm starts at 0).
 * So for every mm the charges telescope to its last value, and the sum over
 * all buckets but BK_BASELINE is exactly the RSS growth since attach.
 * An anonymous increase is external when the page's mapping is the native
 * allocator's (RC_NATIVE), found through the thread's last fault on this
 * CPU (`last_faults`, written by the page_fault_user BTF raw tracepoint,
 * which also counts faults per bucket). A change of an mm already known
 * reads no `targets` entry: the mm's state keeps the process's image gen
 * (for that class), and the bucket comes from the thread's task storage
 * (a thread that never served an op has none: its own bucket). Each mm's
 * total and peak, and the
 * group's (`group`), give the peak RSS; with dumps on, every
 * stack_sample_bytes of growth samples the user stack (`stack_growths`).
 */
#ifndef MEMDIAG_RSS_BPF_H
#define MEMDIAG_RSS_BPF_H

/* Bytes of RSS growth between two user-stack samples (0: no sampling).
 * Set when dumps are on: their pprof profile is growth by user stack. */
volatile const u64 stack_sample_bytes = 0;

/* mm (its kernel address) -> struct mm_state. One per traced mm; userspace
 * deletes the entries of processes that exited, the kernel those of mms
 * it finds reallocated. 4096: one per traced process. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* 1 KiB each: only the mms traced */
	__type(key, u64);
	__type(value, struct mm_state);
} mm_states SEC(".maps");

/* [0] -> the state a new mm_states entry starts as (all zero but its
 * tgid and gen, which the program writes before each use), per CPU: a
 * struct mm_state does not fit on the BPF stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct mm_state);
} mm_fresh SEC(".maps");

/* tgid -> the highest resident memory of a traced mm whose mm_states entry
 * went (its mm was freed and its id reused by another process's mm, often
 * before userspace's next read): a process's peak outlives its mm, so a
 * short-lived target's peak is still read. Userspace deletes the entries of
 * processes that exited. 4096: as `mm_states`. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, u32);
	__type(value, s64);
} gone_peaks SEC(".maps");

/* [0] -> {sum of all traced mms' totals, its peak}: the peak of the whole
 * target group, which no single mm shows. One entry. */
struct group_total {
	s64 total;
	s64 peak;
};
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct group_total);
} group SEC(".maps");

/* Stack id -> user return addresses (STACK_DEPTH of them), for dumps.
 * 8192 distinct growing stacks: more than a profile shows. */
struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 8192);
	__uint(key_size, sizeof(u32));
	__uint(value_size, STACK_DEPTH * sizeof(u64));
} stacks SEC(".maps");

/* struct stack_key -> struct stack_growth: RSS growth per user stack,
 * one sample every stack_sample_bytes. 16384: (process, stack) pairs. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct stack_key);
	__type(value, struct stack_growth);
} stack_growths SEC(".maps");

/* [0] -> bytes of RSS growth since this CPU's last stack sample. One
 * per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, s64);
} sample_acc SEC(".maps");

/* The state of the current process's own mm, NULL when it has none yet.
 * It keeps a copy of the process's image gen, which every RSS change
 * reads (no `targets` lookup there): exec, which bumps the gen in
 * `targets`, bumps it here too (on_exec). A tp_btf program's helper: the
 * loader computes the task's mm offset for those only (leanload.go). */
static __always_inline struct mm_state *current_mm_state(u32 tgid)
{
	u64 mm_key = (u64)bpf_get_current_task_btf()->mm;
	struct mm_state *st = bpf_map_lookup_elem(&mm_states, &mm_key);
	return st && st->tgid == tgid ? st : NULL;
}

/* Counts in c the current thread's fault on this CPU not yet counted. */
static __always_inline void take_fault(struct counters *c, u32 tid)
{
	u32 zero = 0;
	struct last_fault *lf = bpf_map_lookup_elem(&last_faults, &zero);
	if (lf && lf->uncounted && lf->tid == tid) {
		lf->uncounted = 0;
		__sync_fetch_and_add(&c->faults, 1);
	}
}

/* Adds delta to the group total and raises the peak. */
static __always_inline void group_add(s64 delta)
{
	u32 zero = 0;
	struct group_total *g = bpf_map_lookup_elem(&group, &zero);
	if (!g)
		return;
	s64 now = __sync_fetch_and_add(&g->total, delta) + delta;
	if (now > g->peak)
		g->peak = now;
}

/* Every stack_sample_bytes of growth on a CPU, charges them to the user
 * stack of the thread that crossed the mark. */
static __always_inline void sample_stack(void *ctx, u32 tgid, s64 delta)
{
	u32 zero = 0;
	s64 *acc = bpf_map_lookup_elem(&sample_acc, &zero);
	if (!acc)
		return;
	*acc += delta;
	if (*acc < (s64)stack_sample_bytes)
		return;
	s64 bytes = *acc;
	*acc = 0;
	struct stack_key k = { .tgid = tgid };
	k.stack_id = bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK);
	if (k.stack_id < 0)
		return;
	struct stack_growth *g = bpf_map_lookup_elem(&stack_growths, &k);
	if (!g) {
		struct stack_growth fresh = {};
		bpf_map_update_elem(&stack_growths, &k, &fresh, BPF_NOEXIST);
		g = bpf_map_lookup_elem(&stack_growths, &k);
		if (!g)
			return;
	}
	__sync_fetch_and_add(&g->bytes, bytes);
	__sync_fetch_and_add(&g->samples, 1);
}

/* Keeps the peak of an mm whose state is about to go, in gone_peaks. */
static __always_inline void keep_peak(struct mm_state *st)
{
	u32 tgid = st->tgid;
	s64 peak = st->peak;
	s64 *kept = bpf_map_lookup_elem(&gone_peaks, &tgid);
	if (kept) {
		if (peak > *kept)
			*kept = peak;
		return;
	}
	bpf_map_update_elem(&gone_peaks, &tgid, &peak, BPF_NOEXIST);
}

/* Possible CPUs (set by userspace): the per-CPU parts of a counter. */
volatile const u32 nr_cpus = 1;
#define MAX_CPUS 1024

/* [cpu] -> that CPU's per-CPU offset (the kernel's __per_cpu_offset[cpu])
 * plus one; 0 until learnt. The RSS counters' per-CPU parts are at their
 * base plus that offset. MAX_CPUS entries. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_CPUS);
	__type(key, u32);
	__type(value, u64);
} cpu_offsets SEC(".maps");

/* A per-CPU array of one u64 whose per-CPU addresses teach cpu_offset()
 * the offsets. Never written. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} percpu_probe SEC(".maps");

/* The kernel's struct bpf_array, for the base of a per-CPU array's
 * values (CO-RE finds pptrs through its anonymous members). */
struct bpf_array___pcpu {
	void *pptrs[1];
} __attribute__((preserve_access_index));

/* Returns a pointer's value as a number the verifier lets the program do
 * arithmetic on (it refuses arithmetic on map pointers). */
static __always_inline u64 address_of(const void *p)
{
	u64 a = 0;
	bpf_probe_read_kernel(&a, sizeof(a), &p);
	return a;
}

/* The per-CPU offset of cpu, learnt once per CPU: where percpu_probe's
 * value lives on that CPU minus its per-CPU base. Returns 0 and sets *ok
 * to 0 when it cannot tell. (A typed __ksym of __per_cpu_offset or
 * this_cpu_off would say it directly, but the verifier resolves those
 * through kallsyms, which lists no data symbols on these kernels.) */
static __always_inline u64 cpu_offset(u32 cpu, int *ok)
{
	u64 *cached = bpf_map_lookup_elem(&cpu_offsets, &cpu);
	*ok = 0;
	if (!cached)
		return 0;
	if (*cached) {
		*ok = 1;
		return *cached - 1;
	}
	u64 base = 0;
	u64 arr = address_of(&percpu_probe);
	bpf_probe_read_kernel(&base, sizeof(base),
			      (void *)(arr + bpf_core_field_offset(struct bpf_array___pcpu, pptrs)));
	u32 zero = 0;
	void *v = bpf_map_lookup_percpu_elem(&percpu_probe, &zero, cpu);
	if (!v || !base)
		return 0;
	u64 off = address_of(v) - base;
	*cached = off + 1;
	*ok = 1;
	return off;
}

/* mm's counter member (a struct percpu_counter: a shared count, and a
 * part per CPU that folds into the count when it reaches the batch).
 * Direct loads through the tracepoint's trusted mm (no helper call): the
 * index must be a constant for the verifier. */
static __always_inline struct percpu_counter *rss_counter(struct mm_struct *mm, u32 member)
{
	switch (member) {
	case 0:
		return &mm->rss_stat[0];
	case 1:
		return &mm->rss_stat[1];
	case 2:
		return &mm->rss_stat[2];
	default:
		return &mm->rss_stat[3];
	}
}

/* cpu's part of a counter whose parts are at parts; 0 (and *ok = 0)
 * when that CPU's offset cannot be learnt. */
static __always_inline s32 rss_part(u64 parts, u32 cpu, int *ok)
{
	u64 off = cpu_offset(cpu, ok);
	if (!*ok)
		return 0;
	s32 v = 0;
	bpf_probe_read_kernel(&v, sizeof(v), (void *)(parts + off));
	return v;
}

/* The value of mm's counter member in bytes, as the rss_stat perf event
 * computes it (percpu_counter_sum_positive), without its lock: count plus
 * every CPU's part. Racing only with another CPU folding its part into
 * count at that instant; the next value read corrects it (the charges
 * telescope), so totals stay exact. */
static __always_inline s64 rss_value(struct mm_struct *mm, u32 member)
{
	struct percpu_counter *pc = rss_counter(mm, member);
	s64 sum = pc->count;
	u64 parts = (u64)pc->counters;
	for (u32 cpu = 0; cpu < MAX_CPUS; cpu++) {
		if (cpu >= nr_cpus)
			break;
		int ok;
		sum += rss_part(parts, cpu, &ok);
	}
	return sum < 0 ? 0 : sum << PAGE_SHIFT;
}

/* The change of one CPU's part since st last saw it, in pages. */
static __always_inline s64 part_delta(struct mm_state *st, u32 member, u64 parts, u32 cpu)
{
	if (cpu >= PART_CPUS)
		return 0;
	int ok;
	s32 v = rss_part(parts, cpu, &ok);
	if (!ok)
		return 0;
	return v - __sync_lock_test_and_set(&st->parts[cpu][member], v);
}

/* The change of mm's counter member since st last saw it, in bytes.
 *
 * A counter changes on the CPU that changes it (its part; the count too
 * when the part reaches the batch and folds), and rss_stat fires there
 * right after. So on a machine of up to PART_CPUS possible CPUs the
 * change is the count's and this CPU's part's, each against the value st
 * last saw: O(1) reads however many CPUs (summing every part cost a read
 * per possible CPU per change: 64 on a 64-CPU host, up to MAX_CPUS on a
 * VM that declares more possible CPUs than it runs). Every remembered
 * value is replaced by exchange and its difference charged, so the
 * charges telescope to the counter's value exactly whatever the races: a
 * fold by another CPU between two changes, or a thread that migrated
 * between its change and the tracepoint, is charged with the next change
 * that sees it (possibly another bucket's), never lost or counted twice;
 * and a change that finds nothing on its own CPU (it migrated) looks at
 * every CPU, so no change waits for a later one on its CPU to be seen.
 * The first sight (first != 0) takes every CPU's part: the counter as
 * found. Beyond PART_CPUS, the whole value against the last (rss_value). */
static __always_inline s64 rss_delta(struct mm_struct *mm, u32 member, struct mm_state *st, int first)
{
	if (nr_cpus > PART_CPUS) {
		s64 size = rss_value(mm, member);
		return size - __sync_lock_test_and_set(&st->last[member], size);
	}
	struct percpu_counter *pc = rss_counter(mm, member);
	s64 count = pc->count, d = 0;
	/* The count moves only when a CPU's part folds into it (every
	 * batch of changes): a count as last seen is no change, and skips
	 * the exchange, a locked instruction. (A racing exchange on another
	 * CPU charges its own change; nothing is skipped that was not
	 * already charged.) */
	if (*(volatile s64 *)&st->last[member] != count)
		d = count - __sync_lock_test_and_set(&st->last[member], count);
	u64 parts = (u64)pc->counters;
	if (!first) {
		d += part_delta(st, member, parts, bpf_get_smp_processor_id());
		if (d)
			return d << PAGE_SHIFT;
		/* rss_stat fires only for a change: none here means the
		 * thread migrated between its change and the tracepoint (or
		 * another event took it), so look at every CPU's part. */
	}
	for (u32 cpu = 0; cpu < PART_CPUS; cpu++) {
		if (cpu >= nr_cpus)
			break;
		d += part_delta(st, member, parts, cpu);
	}
	return d << PAGE_SHIFT;
}

/* A BTF raw tracepoint: the kernel builds no trace record (the perf event
 * hashes the mm and sums the counter under its lock for every process on
 * the host); the program gets (mm, member), returns after one bitmap test
 * for another process's own mm, and reads the counter itself for targets. */
SEC("tp_btf/rss_stat")
int BPF_PROG(on_rss_stat, struct mm_struct *mm, int mm_member)
{
	if ((u32)mm_member >= RSS_MEMBERS)
		return 0;
	u32 member = (u32)mm_member;
	barrier_var(member);
	member &= RSS_MEMBERS - 1; /* kept (the barrier hides the test above): bounds for the verifier */
	/* The ids from the task: bpf_get_current_task_btf is inlined on
	 * x86_64, bpf_get_current_pid_tgid is a call, and every RSS change
	 * of every process on the host comes here. */
	struct task_struct *task = bpf_get_current_task_btf();
	u32 tgid = task->tgid, tid = task->pid;
	int curr = task->mm == mm;
	if (curr && !maybe_target(tgid))
		return 0;
	u64 mm_key = (u64)mm;
	struct bucket_key key = {};
	u32 gen = 0; /* the target's image, for the class of its fault's mapping */
	struct mm_state *st = bpf_map_lookup_elem(&mm_states, &mm_key);

	if (!curr) {
		/* Someone else changed an mm: ours only if we know it. */
		if (!st)
			return 0;
		/* An mm freed and reallocated to another process is stale:
		 * its owner says so (NULL while the mm is torn down). */
		if (bpf_core_field_exists(mm->owner)) {
			struct task_struct *owner = BPF_CORE_READ(mm, owner);
			if (owner && BPF_CORE_READ(owner, tgid) != st->tgid) {
				keep_peak(st);
				bpf_map_delete_elem(&mm_states, &mm_key);
				return 0;
			}
		}
		key.tgid = st->tgid;
		/* The owner itself, after leaving the mm: exit or exec. */
		key.kind = tgid == st->tgid ? BK_RELEASE : BK_KERNEL;
	} else {
		if (!st || st->tgid != tgid) {
			/* Not known yet, or stale (the mm was freed and
			 * reallocated): the one `targets` lookup of this mm. */
			struct target *t = bpf_map_lookup_elem(&targets, &tgid);
			if (st) {
				keep_peak(st);
				bpf_map_delete_elem(&mm_states, &mm_key);
				st = NULL;
			}
			if (!t)
				return 0;
			u32 zero = 0;
			struct mm_state *fresh = bpf_map_lookup_elem(&mm_fresh, &zero);
			if (!fresh)
				return 0;
			fresh->tgid = tgid;
			fresh->gen = t->gen;
			if (bpf_map_update_elem(&mm_states, &mm_key, fresh, BPF_NOEXIST) == -E2BIG)
				stat_inc(ST_MM_OVERFLOW);
			st = bpf_map_lookup_elem(&mm_states, &mm_key);
			if (!st)
				return 0;
		}
		/* The image from st (kept there: current_mm_state), the bucket
		 * from the thread's own state: a task storage read, no hashing,
		 * where a `targets` lookup for TF_OPS cost more. */
		gen = st->gen;
		current_bucket(&key, tgid, tid);
	}
	/* What st remembers starts at 0, so a first sight charges the
	 * whole value. */
	u32 bit = 1u << member;
	int first = !(st->seen & bit) && !(__sync_fetch_and_or(&st->seen, bit) & bit);
	s64 delta = rss_delta(mm, member, st, first);
	if (first) {
		/* The first value seen: the counter as found (attach), or what
		 * a fork inherited; after an exec it is growth. */
		struct target *owner = bpf_map_lookup_elem(&targets, &st->tgid);
		if (owner && owner->state == TS_ATTACHED) {
			key.kind = BK_BASELINE;
			key.id = 0;
		} else if (owner && owner->state == TS_FORKED) {
			key.kind = BK_START;
			key.id = 0;
		}
	}
	if (delta == 0)
		return 0;
	s64 external = 0;
	if (curr && member == RSS_ANON) {
		if (delta > 0) {
			if (fault_class(tgid, gen, tid) == RC_NATIVE)
				external = delta;
		} else {
			struct releasing *rel = current_releasing();
			if (rel) {
				if (rel->credit_owner)
					key = rel->owner;
				if (rel->class == RC_NATIVE)
					external = delta;
			}
		}
	} else if (curr && delta < 0) {
		struct releasing *rel = current_releasing();
		if (rel && rel->credit_owner)
			key = rel->owner;
	}
	struct counters *c = bucket(&key);
	if (c) {
		__sync_fetch_and_add(&c->rss[member], delta);
		if (external)
			__sync_fetch_and_add(&c->external, external);
		/* The thread's fault that made this change (on_page_fault),
		 * counted in the bucket it charged. */
		if (curr && delta > 0)
			take_fault(c, tid);
	}
	if (stack_sample_bytes && curr && delta > 0 && member != RSS_SWAP)
		sample_stack(ctx, tgid, delta);
	if (member != RSS_SWAP) {
		s64 now = __sync_fetch_and_add(&st->total, delta) + delta;
		if (now > st->peak)
			st->peak = now;
		group_add(delta);
	}
	return 0;
}

/* Counts a fault that changed no RSS (so no rss_stat counted it) in its
 * thread's bucket, as that bucket is now. */
static __noinline int count_fault(u32 tgid, u32 tid)
{
	struct target *t = bpf_map_lookup_elem(&targets, &tgid);
	if (!t)
		return 0;
	struct bucket_key key = {};
	target_bucket(&key, t, tgid, tid);
	struct counters *c = bucket(&key);
	if (c)
		__sync_fetch_and_add(&c->faults, 1);
	return 0;
}

/* Counts the current thread's last fault on this CPU if nothing counted
 * it yet (it changed no RSS): called at the thread's syscall exits. */
static __always_inline void flush_fault(u32 tid)
{
	u32 zero = 0;
	struct last_fault *lf = bpf_map_lookup_elem(&last_faults, &zero);
	if (lf && lf->uncounted && lf->tid == tid) {
		lf->uncounted = 0;
		count_fault(lf->tgid, tid);
	}
}

/* A BTF raw tracepoint: no trace record is assembled for it (the fault
 * path is the hottest memdiag sits on). TP_PROTO(address, regs,
 * error_code). Leaves the fault's thread and address for the rss_stat
 * that follows on this CPU (fault_class), which also counts the fault in
 * the bucket it charges: no map lookup here. A fault that changed no RSS
 * is counted at this CPU's next target fault, or at the thread's next
 * syscall exit on this CPU (flush_fault): a bucket's fault count lags by
 * at most one fault per CPU, and only while its thread computes. */
SEC("tp_btf/page_fault_user")
int BPF_PROG(on_page_fault, unsigned long address)
{
	struct task_struct *task = bpf_get_current_task_btf(); /* inlined: see on_rss_stat */
	u32 tgid = task->tgid;
	if (!maybe_target(tgid))
		return 0;
	u32 zero = 0;
	struct last_fault *lf = bpf_map_lookup_elem(&last_faults, &zero);
	if (!lf)
		return 0;
	if (lf->uncounted) {
		lf->uncounted = 0;
		count_fault(lf->tgid, lf->tid);
	}
	lf->tid = task->pid;
	lf->tgid = tgid;
	lf->addr = address;
	lf->uncounted = 1;
	return 0;
}

#endif /* MEMDIAG_RSS_BPF_H */
