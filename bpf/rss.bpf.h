/* SPDX-License-Identifier: GPL-2.0 */
/*
 * RSS and page faults.
 *
 * kmem:rss_stat reports the new value of one MM_* counter of one mm. The
 * delta against the last value seen for that (mm, member) in `mm_states`
 * is the exact change, charged to the current thread's bucket (its op,
 * idle, or its own; core.bpf.h) when the mm is its own (curr = 1); when the
 * mm is not current's (curr = 0) it goes to the owner's BK_RELEASE bucket if
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
 * CPU (`last_faults`, written by the page_fault_user raw tracepoint, which
 * also counts faults per bucket). Each mm's total and peak, and the
 * group's (`group`), give the peak RSS; with dumps on, every
 * stack_sample_bytes of growth samples the user stack (`stack_growths`).
 */
#ifndef MEMDIAG_RSS_BPF_H
#define MEMDIAG_RSS_BPF_H

/* Bytes of RSS growth between two user-stack samples (0: no sampling).
 * Set when dumps are on: their pprof profile is growth by user stack. */
volatile const u64 stack_sample_bytes = 0;

/* rss_stat mm_id -> struct mm_state. One per traced mm; userspace deletes
 * the entries of processes that exited. 4096: one per traced process. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, u32);
	__type(value, struct mm_state);
} mm_states SEC(".maps");

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

/* Adds delta bytes of member to the bucket named by key. */
static __always_inline void charge_rss(struct bucket_key *key, u32 member, s64 delta)
{
	struct counters *c = bucket(key);
	if (!c || member >= RSS_MEMBERS)
		return;
	__sync_fetch_and_add(&c->rss[member], delta);
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

SEC("tracepoint/kmem/rss_stat")
int on_rss_stat(struct tp_rss_stat *ctx)
{
	u32 member = ctx->member;
	if (member >= RSS_MEMBERS)
		return 0;
	u32 mm_id = ctx->mm_id;
	s64 size = ctx->size;
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32, tid = (u32)id;
	struct bucket_key key = {};
	struct mm_state *st = bpf_map_lookup_elem(&mm_states, &mm_id);

	if (!ctx->curr) {
		/* Someone else changed an mm: ours only if we know it. */
		if (!st)
			return 0;
		key.tgid = st->tgid;
		/* The owner itself, after leaving the mm: exit or exec. */
		key.kind = tgid == st->tgid ? BK_RELEASE : BK_KERNEL;
	} else {
		struct target *t = current_target(tgid);
		if (!t) {
			/* A non-target's own mm: an entry under its id is stale
			 * (the mm was freed and its id reused). */
			if (st) {
				keep_peak(st);
				bpf_map_delete_elem(&mm_states, &mm_id);
			}
			return 0;
		}
		if (!st) {
			struct mm_state fresh = { .tgid = tgid };
			if (bpf_map_update_elem(&mm_states, &mm_id, &fresh, BPF_NOEXIST) == -E2BIG)
				stat_inc(ST_MM_OVERFLOW);
			st = bpf_map_lookup_elem(&mm_states, &mm_id);
			if (!st)
				return 0;
		}
		current_bucket(&key, tgid, tid);
	}

	/* Exchange, not read-then-write: two CPUs changing the same counter
	 * at once still telescope (each takes the value the other left).
	 * last[] starts at 0, so a first sight charges the whole value. */
	s64 delta = size - __sync_lock_test_and_set(&st->last[member], size);
	u32 bit = 1u << member;
	if (!(__sync_fetch_and_or(&st->seen, bit) & bit)) {
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
	if (ctx->curr && member == RSS_ANON) {
		if (delta > 0) {
			if (fault_class(tgid, tid) == RC_NATIVE)
				external = delta;
		} else {
			struct releasing *rel = bpf_map_lookup_elem(&releasing, &tid);
			if (rel) {
				if (rel->credit_owner)
					key = rel->owner;
				if (rel->class == RC_NATIVE)
					external = delta;
			}
		}
	} else if (ctx->curr && delta < 0) {
		struct releasing *rel = bpf_map_lookup_elem(&releasing, &tid);
		if (rel && rel->credit_owner)
			key = rel->owner;
	}
	charge_rss(&key, member, delta);
	if (stack_sample_bytes && ctx->curr && delta > 0 && member != RSS_SWAP)
		sample_stack(ctx, tgid, delta);
	if (external) {
		struct counters *c = bucket(&key);
		if (c)
			__sync_fetch_and_add(&c->external, external);
	}
	if (member != RSS_SWAP) {
		s64 now = __sync_fetch_and_add(&st->total, delta) + delta;
		if (now > st->peak)
			st->peak = now;
		group_add(delta);
	}
	return 0;
}

/* A raw tracepoint: no trace record is assembled for it (the fault path
 * is the hottest memdiag sits on). TP_PROTO(address, regs, error_code). */
SEC("raw_tracepoint/page_fault_user")
int on_page_fault(struct bpf_raw_tracepoint_args *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32;
	if (!current_target(tgid))
		return 0;
	struct bucket_key key = {};
	current_bucket(&key, tgid, (u32)id);
	struct counters *c = bucket(&key);
	if (c)
		__sync_fetch_and_add(&c->faults, 1);
	u32 zero = 0;
	struct last_fault *lf = bpf_map_lookup_elem(&last_faults, &zero);
	if (lf) {
		lf->tid = (u32)id;
		lf->addr = ctx->args[0];
	}
	return 0;
}

#endif /* MEMDIAG_RSS_BPF_H */
