// SPDX-License-Identifier: GPL-2.0
/*
 * memdiag's kernel half: charges every change of a target's memory to a
 * bucket, in the kernel, without one event per change.
 *
 * Targets. `targets` holds the thread group ids being traced. Userspace seeds
 * it (attach) or the run launcher's exec adds it (launcher_tgid); fork adds
 * children, so threads and child processes are followed. Every handler starts
 * with one lookup of the current tgid there and returns when it misses.
 *
 * Buckets. Each charge goes to a struct bucket_key: today the acting thread
 * (BK_THREAD, id = tid), or one of the per-process pseudo buckets below.
 * `buckets` maps key -> struct counters; values are only ever added to, with
 * atomic adds, and userspace reads the map periodically: that is the flush.
 *
 * RSS accounting. kmem:rss_stat reports the new value of one MM_* counter of
 * one mm. The delta against the last value seen for that (mm, member) is the
 * exact change, charged to the current thread's bucket when the mm is its own
 * (curr = 1); when the mm is not current's (curr = 0) it goes to the owner's
 * BK_RELEASE bucket if the owner itself is tearing down an mm it left (exit,
 * exec), else to its BK_KERNEL bucket (reclaim, remote access). The first
 * value seen for a (mm, member) has no previous value; it is charged whole:
 *   - to BK_BASELINE if the process was already running at attach,
 *   - to BK_START if it was forked while traced (what fork copied),
 *   - to the current thread if it exec'd while traced (a new mm starts at 0).
 * So for every mm the charges telescope to its last value, and the sum over
 * all buckets but BK_BASELINE is exactly the RSS growth since attach.
 *
 * Virtual memory. mmap, munmap, mremap, brk, mprotect and madvise are paired
 * enter -> exit through `pending` (tid -> arguments) and charged on success.
 * Every mapping is remembered with its owner and class (`regions`, an LPM
 * trie of aligned blocks). Unmapping charges the RSS it gives back to the
 * owner (through `releasing`) — for an op that has ended, to its BK_FREED
 * bucket — so an op's transient buffer freed later by a GC nets out in the
 * op's category; `retained` counts the owner's bytes still mapped. An RSS
 * increase is external when the page's mapping is the native allocator's
 * (RC_NATIVE: the brk heap, or anonymous memory mapped from libc code).
 */
#include "memdiag.h"

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

#define E2BIG 7

/* Set by `memdiag run`: the launcher process whose exec makes it a target. */
volatile const u32 launcher_tgid = 0;

/* Bytes of RSS growth between two user-stack samples (0: no sampling).
 * Set when dumps are on: their pprof profile is growth by user stack. */
volatile const u64 stack_sample_bytes = 0;

/* tgid (or tid of a traced thread, until it exits) -> struct target.
 * 8192: far more processes and threads than one service has. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, u32);
	__type(value, struct target);
} targets SEC(".maps");

/* struct bucket_key -> struct counters. Userspace deletes the buckets of
 * exited threads after reading them, so the size bounds live buckets only;
 * its size is set from userspace (--max-buckets). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct bucket_key);
	__type(value, struct counters);
} buckets SEC(".maps");

/* rss_stat mm_id -> struct mm_state. One per traced mm; userspace deletes
 * the entries of processes that exited. */
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
 * processes that exited. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, u32);
	__type(value, s64);
} gone_peaks SEC(".maps");

/* Arguments of a memory syscall in flight: tid -> struct pending. */
struct pending {
	u64 args[5];
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, u32);
	__type(value, struct pending);
} pending SEC(".maps");

/* tid -> struct thread_state: what the thread's activity is charged to
 * when it is not its own (BK_THREAD). Deleted at thread exit. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, struct thread_state);
} thread_states SEC(".maps");

/* struct sock_key -> struct sock_info: the targets' sockets we saw
 * accepted, connected (TCP, and UDP connects such as DNS) or carrying a
 * request. Deleted at close; sized for 10k+ concurrent connections,
 * overflow counted. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sock_key);
	__type(value, struct sock_info);
} sockets SEC(".maps");

/* struct region_key -> struct region: every mapping made while traced (and
 * those found at attach), as the aligned power-of-two blocks that tile it,
 * so the longest-prefix match of an address is the mapping that holds it.
 * Unmapping gives the memory back to whoever mapped it (an op's transient
 * buffer freed later by a GC nets out in the op's category), and a fault
 * is external when its mapping is the native allocator's. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct region_key);
	__type(value, struct region);
} regions SEC(".maps");

/* tid -> struct releasing, while the thread gives memory back. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, u32);
	__type(value, struct releasing);
} releasing SEC(".maps");

/* tgid -> struct libc_range (userspace reads it from /proc/PID/maps; fork
 * copies it to the child). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, u32);
	__type(value, struct libc_range);
} libc_ranges SEC(".maps");

/* The last user fault of the thread running on this CPU: {tid, address}.
 * rss_stat follows its fault on the same CPU, so this names the mapping a
 * new page went to without a per-thread table. */
struct last_fault {
	u32 tid;
	u32 cache_tgid; /* the cached mapping: whose, and when */
	u64 addr;
	u64 cache_epoch;
	u64 cache_start;
	u64 cache_end;
	u32 cache_class;
	u32 _pad;
};

/* [0] -> bumped whenever a mapping is added or removed, so per-CPU caches
 * of a fault's mapping know when they are stale. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} regions_epoch SEC(".maps");
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct last_fault);
} last_faults SEC(".maps");

/* tid -> fd of the TLS socket the thread read last: the cleartext that
 * Node's HTTP parser gets next (uprobe on llhttp_execute, --tls) came from
 * it. Deleted at thread exit. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, s32);
} tls_reads SEC(".maps");

/* Exact mode (--exact-external): struct ab_key -> struct ab_alloc, the
 * ArrayBuffers allocated while traced and not freed yet. 262144: a busy
 * service's live Buffers (--max-outstanding). A Buffer that finds it full
 * is counted (ST_OUTSTANDING_OVERFLOW) and not followed at all, so the
 * totals stay consistent with the table. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, struct ab_key);
	__type(value, struct ab_alloc);
} outstanding SEC(".maps");

/* Exact mode: tid -> size of the ArrayBuffer allocation in flight
 * (Allocate entry -> return). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, u64);
} ab_pending SEC(".maps");

/* Exact mode: tgid -> ArrayBuffer bytes live (allocated while traced,
 * minus those freed). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, u32);
	__type(value, s64);
} ab_live SEC(".maps");

/* [0] -> the cgroup (v2) being traced (--container, --cgroup): a process
 * that execs or forks in it, or below it, becomes a target. */
struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u32);
} target_cgroup SEC(".maps");

/* Local ports whose accepted connections are memdiag's own (the Node
 * inspector it samples the heap through): port (host order) -> 1. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, u16);
	__type(value, u8);
} ignored_ports SEC(".maps");

/* Heap sampling (V8): tgid -> samples seen since sampling started. The
 * n-th hit of SampleObject is the sample V8 numbers n (its ordinal);
 * userspace deletes the entry before it starts sampling. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, u32);
	__type(value, u64);
} v8_samples SEC(".maps");

/* Offset of `kind` in the Go runtime's struct special (next *special,
 * offset uintptr, kind byte: 16 since Go 1.24). */
volatile const u32 go_special_kind_off = 16;

/* Set when target_cgroup holds a cgroup. */
volatile const u32 follow_cgroup = 0;

/* Stack id -> user return addresses (STACK_DEPTH of them), for dumps. */
struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 8192);
	__uint(key_size, sizeof(u32));
	__uint(value_size, STACK_DEPTH * sizeof(u64));
} stacks SEC(".maps");

/* struct stack_key -> struct stack_growth: RSS growth per user stack,
 * one sample every stack_sample_bytes. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct stack_key);
	__type(value, struct stack_growth);
} stack_growths SEC(".maps");

/* [0] -> bytes of RSS growth since this CPU's last stack sample. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, s64);
} sample_acc SEC(".maps");

/* [0] -> the last op id handed out. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} op_ids SEC(".maps");

/* [0] -> {sum of all traced mms' totals, its peak}: the peak of the whole
 * target group, which no single mm shows. */
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

/* [0] -> all-zero counters: the template new buckets are copied from,
 * so no 150-byte struct sits on the BPF stack. Never written. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct counters);
} zeroes SEC(".maps");

/* enum stat_index -> count, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ST_MAX);
	__type(key, u32);
	__type(value, u64);
} stats SEC(".maps");

/* Lifecycle records; size set from userspace (--ringbuf-size). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

/* Adds one to a stats slot. */
static __always_inline void stat_inc(u32 idx)
{
	u64 *v = bpf_map_lookup_elem(&stats, &idx);
	if (v)
		*v += 1;
}

/* Returns the target entry of the current process, or NULL. */
static __always_inline struct target *current_target(u32 tgid)
{
	return bpf_map_lookup_elem(&targets, &tgid);
}

/* Returns the counters of key, creating them; NULL only when even the
 * overflow bucket (created by userspace before attach) is missing. */
static __always_inline struct counters *bucket(struct bucket_key *key)
{
	struct counters *c = bpf_map_lookup_elem(&buckets, key);
	if (c)
		return c;
	if (key->kind == BK_OP) {
		/* Taken by userspace at the op's end: never re-create it. */
		key->kind = BK_IDLE;
		key->id = 0;
		c = bpf_map_lookup_elem(&buckets, key);
		if (c)
			return c;
	}
	u32 zero = 0;
	struct counters *fresh = bpf_map_lookup_elem(&zeroes, &zero);
	if (!fresh)
		return NULL;
	int created = !bpf_map_update_elem(&buckets, key, fresh, BPF_NOEXIST);
	c = bpf_map_lookup_elem(&buckets, key);
	if (c) {
		if (created) {
			c->first_ns = bpf_ktime_get_ns();
			if (key->kind == BK_THREAD)
				bpf_get_current_comm(c->comm, sizeof(c->comm));
		}
		return c;
	}
	stat_inc(ST_BUCKET_OVERFLOW);
	struct bucket_key of = { .tgid = 0, .kind = BK_OVERFLOW, .id = 0 };
	return bpf_map_lookup_elem(&buckets, &of);
}

/* Fills key with the bucket the current thread's activity is charged to:
 * its operation, the idle bucket, or its own. An operation whose bucket is
 * gone (userspace took it when the op ended) charges idle instead: op
 * buckets are created only by op_begin, never re-created by a late charge. */
static __always_inline void current_bucket(struct bucket_key *key, u32 tgid, u32 tid)
{
	key->tgid = tgid;
	key->kind = BK_THREAD;
	key->id = tid;
	struct thread_state *ts = bpf_map_lookup_elem(&thread_states, &tid);
	if (!ts)
		return;
	if (ts->mode == TM_OP) {
		key->kind = BK_OP;
		key->id = ts->op_id;
		if (bpf_map_lookup_elem(&buckets, key))
			return;
	}
	key->kind = BK_IDLE;
	key->id = 0;
}

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

/* Reserves a ring buffer record of size bytes and fills its header; counts
 * and returns NULL when the buffer is full. */
static __always_inline void *event_reserve(u32 size, u32 kind, u32 tgid, u32 tid)
{
	struct event_hdr *h = bpf_ringbuf_reserve(&events, size, 0);
	if (!h) {
		stat_inc(ST_LOST_EVENTS);
		return NULL;
	}
	h->kind = kind;
	h->size = size;
	h->ktime_ns = bpf_ktime_get_ns();
	h->pid = tgid;
	h->tid = tid;
	return h;
}

/* Wake the reader only once the ring is a quarter full: a wakeup is an
 * irq_work self-IPI, several microseconds in a VM, and the reader polls
 * the ring on a short timer anyway (tracer.readPoll). */
static __always_inline void submit(void *e)
{
	u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	u64 size = bpf_ringbuf_query(&events, BPF_RB_RING_SIZE);
	bpf_ringbuf_submit(e, avail >= size / 4 ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

/* Sends OP_END for op_id with the op's final counters, taken out of the
 * buckets map. When the ring is full the bucket stays: userspace finds it
 * in a snapshot and ends the op itself, so no byte is lost with the record.
 * (A charge racing the copy on another CPU can be lost; ops run on one
 * thread at a time, so this is rare and small.) */
static __always_inline void emit_op_end(u32 tgid, u32 tid, u64 op_id, s32 fd, u32 reason)
{
	struct op_end_event *e = event_reserve(sizeof(*e), EV_OP_END, tgid, tid);
	if (!e)
		return;
	e->op_id = op_id;
	e->fd = fd;
	e->reason = reason;
	e->has_final = 0;
	struct bucket_key key = { .tgid = tgid, .kind = BK_OP, .id = op_id };
	struct counters *c = bpf_map_lookup_elem(&buckets, &key);
	if (c) {
		__builtin_memcpy(&e->final, c, sizeof(e->final));
		e->has_final = 1;
		bpf_map_delete_elem(&buckets, &key);
	} else {
		__builtin_memset(&e->final, 0, sizeof(e->final));
	}
	submit(e);
}

/* Makes op_id (or idle) the thread's current charge. An op whose socket
 * closed under the thread ends when the thread moves on. */
static __always_inline void set_thread(u32 tgid, u32 tid, u32 mode, u64 op_id)
{
	struct thread_state *cur = bpf_map_lookup_elem(&thread_states, &tid);
	if (cur && cur->mode == mode && cur->op_id == op_id)
		return;
	if (cur && cur->mode == TM_OP && cur->end_fd)
		emit_op_end(tgid, tid, cur->op_id, (s32)cur->end_fd - 1, END_CLOSE);
	struct thread_state ts = { .op_id = op_id, .mode = mode };
	if (bpf_map_update_elem(&thread_states, &tid, &ts, BPF_ANY))
		stat_inc(ST_THREAD_OVERFLOW);
}

static __always_inline u32 fault_class(u32 tgid, u32 tid);

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

/* Saves the first n (<= 3) syscall arguments of a target thread; returns 0.
 * n must be a constant no larger than the syscall's argument count: the
 * kernel refuses to attach a program that reads past a tracepoint's record. */
static __always_inline int save_args(struct tp_sys_enter *ctx, int n)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!current_target(id >> 32))
		return 0;
	u32 tid = (u32)id;
	struct pending p = {};
	p.args[0] = ctx->args[0];
	p.args[1] = ctx->args[1];
	if (n > 2)
		p.args[2] = ctx->args[2];
	if (bpf_map_update_elem(&pending, &tid, &p, BPF_ANY))
		stat_inc(ST_PENDING_OVERFLOW);
	return 0;
}

/* Takes the saved arguments of the current thread into out; returns 1 when
 * there were some (the syscall was entered by a target thread). */
static __always_inline int take_args(struct pending *out, u32 *tgid, u32 *tid)
{
	u64 id = bpf_get_current_pid_tgid();
	*tgid = id >> 32;
	*tid = (u32)id;
	struct pending *p = bpf_map_lookup_elem(&pending, tid);
	if (!p)
		return 0;
	*out = *p;
	bpf_map_delete_elem(&pending, tid);
	return 1;
}

#define PAGE_ALIGN(x) (((x) + 4095) & ~4095ULL)
#define IS_ERR_VALUE(x) ((u64)(x) >= (u64)-4095)

/* Field selectors for vm_charge. */
enum vm_field { VM_MAPPED, VM_UNMAPPED, VM_WRITABLE, VM_ADVISED };

/* Adds bytes to one virtual-memory field of the current thread's bucket. */
static __always_inline void vm_charge(u32 tgid, u32 tid, enum vm_field f, u64 bytes)
{
	if (!bytes)
		return;
	struct bucket_key key = {};
	current_bucket(&key, tgid, tid);
	struct counters *c = bucket(&key);
	if (!c)
		return;
	switch (f) {
	case VM_MAPPED:
		__sync_fetch_and_add(&c->mapped, bytes);
		break;
	case VM_UNMAPPED:
		__sync_fetch_and_add(&c->unmapped, bytes);
		break;
	case VM_WRITABLE:
		__sync_fetch_and_add(&c->made_writable, bytes);
		break;
	case VM_ADVISED:
		__sync_fetch_and_add(&c->advised_free, bytes);
		break;
	}
}

/*
 * The regions trie.
 */

/* The largest power of two <= x (x > 0), without branches. */
static __always_inline u64 floor_pow2(u64 x)
{
	x |= x >> 1;
	x |= x >> 2;
	x |= x >> 4;
	x |= x >> 8;
	x |= x >> 16;
	x |= x >> 32;
	return x - (x >> 1);
}

/* Bits set in x, without branches (SWAR). */
static __always_inline u64 popcount64(u64 x)
{
	x = x - ((x >> 1) & 0x5555555555555555ULL);
	x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
	x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
	return (x * 0x0101010101010101ULL) >> 56;
}

/* A range tiles into at most this many aligned blocks (two per bit). */
#define MAX_BLOCKS 96

struct blocks_ctx {
	struct region *r;
	u64 start;
	u64 len;
	u32 tgid;
	u32 insert;
};

/* One block of region_blocks: bpf_loop callback, returns 1 to stop. */
static long block_step(u64 i, struct blocks_ctx *c)
{
	if (c->len < 4096)
		return 1;
	/* The block: as large as the start's alignment and the length allow. */
	u64 size = floor_pow2(c->len);
	u64 align = c->start & (~c->start + 1);
	if (align && align < size)
		size = align;
	u32 k = popcount64(size - 1); /* log2(size) */
	struct region_key key = { .prefixlen = 32 + 64 - k, .tgid = c->tgid, .addr_be = __builtin_bswap64(c->start) };
	if (c->insert) {
		if (bpf_map_update_elem(&regions, &key, c->r, BPF_ANY)) {
			stat_inc(ST_REGION_OVERFLOW);
			return 1;
		}
	} else {
		bpf_map_delete_elem(&regions, &key);
	}
	c->start += size;
	c->len -= size;
	return 0;
}

/* Stores r (insert) or removes its blocks, as the aligned power-of-two
 * blocks that tile it. */
static __always_inline void region_blocks(u32 tgid, struct region *r, int insert)
{
	u32 zero = 0;
	u64 *epoch = bpf_map_lookup_elem(&regions_epoch, &zero);
	if (epoch)
		__sync_fetch_and_add(epoch, 1);
	struct blocks_ctx c = {
		.r = r, .start = r->start & ~4095ULL, .len = PAGE_ALIGN(r->len), .tgid = tgid, .insert = insert,
	};
	bpf_loop(MAX_BLOCKS, block_step, &c, 0);
}

/* The process's exec generation (0 when unknown). */
static __always_inline u32 exec_gen(u32 tgid)
{
	struct target *t = bpf_map_lookup_elem(&targets, &tgid);
	return t ? t->gen : 0;
}

/* Returns the mapping that holds addr, or NULL. A mapping from before the
 * process's last exec (userspace deletes those shortly after) is stale:
 * it is ignored. */
static __always_inline struct region *region_at(u32 tgid, u64 addr)
{
	struct region_key key = { .prefixlen = 32 + 64, .tgid = tgid, .addr_be = __builtin_bswap64(addr) };
	struct region *r = bpf_map_lookup_elem(&regions, &key);
	if (r && r->gen != exec_gen(tgid))
		return NULL;
	return r;
}

/* The class of the mapping this thread last faulted in. */
static __always_inline u32 fault_class(u32 tgid, u32 tid)
{
	u32 zero = 0;
	struct last_fault *lf = bpf_map_lookup_elem(&last_faults, &zero);
	if (!lf || lf->tid != tid)
		return RC_UNKNOWN;
	/* Faults come in runs through one mapping: the last answer on this
	 * CPU holds while no mapping changed anywhere (regions_epoch). */
	u64 *epoch = bpf_map_lookup_elem(&regions_epoch, &zero);
	u64 now = epoch ? *epoch : 0;
	if (lf->cache_tgid == tgid && lf->cache_epoch == now &&
	    lf->addr >= lf->cache_start && lf->addr < lf->cache_end)
		return lf->cache_class;
	struct region *r = region_at(tgid, lf->addr);
	if (!r)
		return RC_UNKNOWN;
	lf->cache_tgid = tgid;
	lf->cache_epoch = now;
	lf->cache_start = r->start;
	lf->cache_end = r->start + r->len;
	lf->cache_class = r->class;
	return r->class;
}

/* The bucket a mapping's owner is credited through: an op that has ended
 * (its bucket was taken) is credited through its BK_FREED bucket. */
static __always_inline void owner_key(struct bucket_key *owner)
{
	if (owner->kind == BK_OP && !bpf_map_lookup_elem(&buckets, owner))
		owner->kind = BK_FREED;
}

/* Adds bytes (signed) to the retained counters of key. */
static __always_inline void retain(struct bucket_key *key, u32 class, s64 bytes)
{
	struct counters *c = bucket(key);
	if (!c)
		return;
	__sync_fetch_and_add(&c->retained, bytes);
	if (class == RC_NATIVE)
		__sync_fetch_and_add(&c->retained_native, bytes);
}

/* Records a new mapping [start, start + len) of class, owned by the
 * current thread's bucket. Only a writable mapping counts as retained: a
 * PROT_NONE reservation (V8, glibc arenas) is address space, not memory. */
static __always_inline void map_region(u32 tgid, u32 tid, u64 start, u64 len, u32 class, int writable)
{
	struct region r = { .start = start, .len = len, .class = class, .counted = writable ? 1 : 0, .gen = exec_gen(tgid) };
	current_bucket(&r.owner, tgid, tid);
	region_blocks(tgid, &r, 1);
	if (writable)
		retain(&r.owner, class, (s64)len);
}

/* How many mappings one unmap follows; the rest is counted. */
#define MAX_UNMAP_REGIONS 8

struct unmap_ctx {
	struct releasing *rel;
	u64 a;
	u64 b;
	u32 tgid;
	u32 done;
};

/* One mapping of unmap_range: bpf_loop callback, returns 1 to stop. */
static long unmap_step(u64 i, struct unmap_ctx *c)
{
	if (c->a >= c->b) {
		c->done = 1;
		return 1;
	}
	struct region *found = region_at(c->tgid, c->a);
	if (!found) {
		c->done = 1;
		return 1; /* a gap: what follows was mapped before tracing */
	}
	struct region r = *found;
	u64 end = r.start + r.len;
	region_blocks(c->tgid, &r, 0);
	u64 lo = c->a > r.start ? c->a : r.start, hi = c->b < end ? c->b : end;
	if (r.start < lo) {
		struct region left = r;
		left.len = lo - r.start;
		region_blocks(c->tgid, &left, 1);
	}
	if (hi < end) {
		struct region right = r;
		right.start = hi;
		right.len = end - hi;
		region_blocks(c->tgid, &right, 1);
	}
	if (i == 0)
		c->rel->class = r.class;
	if (r.owner.kind) {
		struct bucket_key owner = r.owner;
		owner_key(&owner);
		if (hi > lo && r.counted)
			retain(&owner, r.class, -(s64)(hi - lo));
		if (i == 0) {
			c->rel->owner = owner;
			c->rel->credit_owner = 1;
		}
	}
	/* else: found at attach, owned by no bucket: what it gives back is
	 * the current thread's. */
	c->a = end;
	return 0;
}

/* Forgets the mappings in [a, b): each loses the part inside, keeps the
 * rest, and its owner's retained bytes drop by the part. Fills rel with
 * the first mapping's owner and class, for the RSS given back. */
static __always_inline void unmap_range(u32 tgid, u64 a, u64 b, struct releasing *rel)
{
	rel->credit_owner = 0;
	struct unmap_ctx c = { .rel = rel, .a = a, .b = b, .tgid = tgid };
	bpf_loop(MAX_UNMAP_REGIONS, unmap_step, &c, 0);
	if (!c.done && c.a < c.b)
		stat_inc(ST_UNMAP_SPLIT);
}

#define PROT_WRITE 0x2
#define MAP_SHARED 0x01
#define MAP_ANONYMOUS 0x20
#define MAP_GROWSDOWN 0x100
#define MAP_STACK 0x20000

/* The user return address at syscall entry: [sp] is where the libc
 * wrapper (a leaf) returns to, i.e. the code that asked for the mapping. */
static __always_inline u64 syscall_caller(void)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs_x86 *regs = (struct pt_regs_x86 *)bpf_task_pt_regs(task);
	u64 sp = 0, ret = 0;
	if (bpf_probe_read_kernel(&sp, sizeof(sp), &regs->sp))
		return 0;
	if (bpf_probe_read_user(&ret, sizeof(ret), (void *)sp))
		return 0;
	return ret;
}

/* Classifies an anonymous private mapping by who asked for it. */
static __always_inline u32 anon_class(u32 tgid, u64 caller)
{
	struct libc_range *lr = bpf_map_lookup_elem(&libc_ranges, &tgid);
	if (!lr || !caller)
		return RC_UNKNOWN;
	return caller >= lr->lo && caller < lr->hi ? RC_NATIVE : RC_RUNTIME;
}

SEC("tracepoint/syscalls/sys_enter_mmap")
int on_enter_mmap(struct tp_sys_enter *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!current_target(id >> 32))
		return 0;
	u32 tid = (u32)id;
	/* len, flags, fd, caller, prot */
	struct pending p = { .args = { ctx->args[1], ctx->args[3], ctx->args[4], syscall_caller(), ctx->args[2] } };
	if (bpf_map_update_elem(&pending, &tid, &p, BPF_ANY))
		stat_inc(ST_PENDING_OVERFLOW);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_mmap")
int on_exit_mmap(struct tp_sys_exit *ctx)
{
	struct pending p;
	u32 tgid, tid;
	if (!take_args(&p, &tgid, &tid) || IS_ERR_VALUE(ctx->ret))
		return 0;
	u64 start = (u64)ctx->ret, len = PAGE_ALIGN(p.args[0]), flags = p.args[1];
	s32 fd = (s32)p.args[2];
	vm_charge(tgid, tid, VM_MAPPED, len);
	u32 class;
	if (!(flags & MAP_ANONYMOUS) && fd >= 0)
		class = RC_FILE;
	else if (flags & (MAP_STACK | MAP_GROWSDOWN))
		class = RC_STACK;
	else if (flags & MAP_SHARED)
		class = RC_SHARED;
	else
		class = anon_class(tgid, p.args[3]);
	/* MAP_FIXED over an old mapping replaces it. */
	struct releasing rel = {};
	unmap_range(tgid, start, start + len, &rel);
	map_region(tgid, tid, start, len, class, p.args[4] & PROT_WRITE);
	return 0;
}

/* Marks the thread as giving back [a, b): forgets those mappings and
 * remembers, for the RSS decreases to come, whose they were. */
static __always_inline void release_begin(u32 tgid, u32 tid, u64 a, u64 b, int forget)
{
	struct releasing rel = {};
	if (forget) {
		unmap_range(tgid, a, b, &rel);
	} else {
		struct region *r = region_at(tgid, a);
		if (!r)
			return;
		rel.class = r->class; /* madvise: only what it held, not whose */
	}
	bpf_map_update_elem(&releasing, &tid, &rel, BPF_ANY);
}

SEC("tracepoint/syscalls/sys_enter_munmap")
int on_enter_munmap(struct tp_sys_enter *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32, tid = (u32)id;
	if (!current_target(tgid))
		return 0;
	save_args(ctx, 2);
	release_begin(tgid, tid, ctx->args[0], ctx->args[0] + PAGE_ALIGN(ctx->args[1]), 1);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_munmap")
int on_exit_munmap(struct tp_sys_exit *ctx)
{
	struct pending p;
	u32 tgid, tid;
	if (!take_args(&p, &tgid, &tid))
		return 0;
	bpf_map_delete_elem(&releasing, &tid);
	if (ctx->ret != 0)
		return 0;
	vm_charge(tgid, tid, VM_UNMAPPED, PAGE_ALIGN(p.args[1]));
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_mremap")
int on_enter_mremap(struct tp_sys_enter *ctx) { return save_args(ctx, 3); }

SEC("tracepoint/syscalls/sys_exit_mremap")
int on_exit_mremap(struct tp_sys_exit *ctx)
{
	struct pending p;
	u32 tgid, tid;
	if (!take_args(&p, &tgid, &tid) || IS_ERR_VALUE(ctx->ret))
		return 0;
	u64 old = p.args[0], old_len = PAGE_ALIGN(p.args[1]), new_len = PAGE_ALIGN(p.args[2]);
	if (new_len > old_len)
		vm_charge(tgid, tid, VM_MAPPED, new_len - old_len);
	else
		vm_charge(tgid, tid, VM_UNMAPPED, old_len - new_len);
	/* The mapping moved or resized: it keeps its class; the part that
	 * grew is the current thread's. */
	struct region *r = region_at(tgid, old);
	struct region moved = {};
	int found = 0;
	if (r) {
		moved = *r;
		found = 1;
	}
	u32 class = moved.class;
	struct releasing rel = {};
	unmap_range(tgid, old, old + old_len, &rel);
	u64 start = (u64)ctx->ret;
	if (found) {
		moved.start = start;
		moved.len = new_len < old_len ? new_len : old_len;
		region_blocks(tgid, &moved, 1);
		if (moved.owner.kind && moved.counted) {
			struct bucket_key owner = moved.owner;
			owner_key(&owner);
			retain(&owner, class, (s64)moved.len);
		}
	}
	if (new_len > old_len)
		map_region(tgid, tid, start + old_len, new_len - old_len, class, moved.counted);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_brk")
int on_enter_brk(struct tp_sys_enter *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!current_target(id >> 32))
		return 0;
	u32 tid = (u32)id;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct pending p = {};
	p.args[0] = BPF_CORE_READ(task, mm, brk); /* the break before the call */
	if (bpf_map_update_elem(&pending, &tid, &p, BPF_ANY))
		stat_inc(ST_PENDING_OVERFLOW);
	if (ctx->args[0] && PAGE_ALIGN(ctx->args[0]) < PAGE_ALIGN(p.args[0])) {
		/* Shrinking the heap gives native memory back. */
		u32 tgid = id >> 32;
		release_begin(tgid, tid, PAGE_ALIGN(ctx->args[0]), PAGE_ALIGN(p.args[0]), 1);
	}
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_brk")
int on_exit_brk(struct tp_sys_exit *ctx)
{
	struct pending p;
	u32 tgid, tid;
	if (!take_args(&p, &tgid, &tid))
		return 0;
	bpf_map_delete_elem(&releasing, &tid);
	/* brk returns the new break, or the old one on failure. */
	u64 before = PAGE_ALIGN(p.args[0]), after = PAGE_ALIGN((u64)ctx->ret);
	if (after > before) {
		vm_charge(tgid, tid, VM_MAPPED, after - before);
		map_region(tgid, tid, before, after - before, RC_NATIVE, 1); /* the brk heap is malloc's */
	} else {
		vm_charge(tgid, tid, VM_UNMAPPED, before - after);
	}
	return 0;
}


SEC("tracepoint/syscalls/sys_enter_mprotect")
int on_enter_mprotect(struct tp_sys_enter *ctx) { return save_args(ctx, 3); }

SEC("tracepoint/syscalls/sys_exit_mprotect")
int on_exit_mprotect(struct tp_sys_exit *ctx)
{
	struct pending p;
	u32 tgid, tid;
	if (!take_args(&p, &tgid, &tid) || ctx->ret != 0 || !(p.args[2] & PROT_WRITE))
		return 0;
	u64 a = p.args[0], len = PAGE_ALIGN(p.args[1]);
	vm_charge(tgid, tid, VM_WRITABLE, len);
	/* A commit: part of a reservation (PROT_NONE, not counted) made
	 * writable — glibc arenas grow this way, V8 commits its pages so. It
	 * becomes a mapping of its own, owned by the current bucket and
	 * retained by it until given back. Only the native allocator's
	 * (glibc arenas): a runtime that commits its own pages (V8) reuses
	 * them, and its heap is measured by its sampler. A range already
	 * writable (W^X flips) changes no owner. */
	struct region *r = region_at(tgid, a);
	if (!r || r->counted || r->class != RC_NATIVE || a + len > r->start + r->len)
		return 0;
	u32 class = r->class;
	struct releasing rel = {};
	unmap_range(tgid, a, a + len, &rel);
	map_region(tgid, tid, a, len, class, 1);
	return 0;
}

#define MADV_DONTNEED 4
#define MADV_FREE 8
#define MADV_REMOVE 9

SEC("tracepoint/syscalls/sys_enter_madvise")
int on_enter_madvise(struct tp_sys_enter *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32, tid = (u32)id;
	if (!current_target(tgid))
		return 0;
	save_args(ctx, 3);
	u64 advice = ctx->args[2];
	if (advice == MADV_DONTNEED || advice == MADV_FREE || advice == MADV_REMOVE)
		release_begin(tgid, tid, ctx->args[0], ctx->args[0] + PAGE_ALIGN(ctx->args[1]), 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_madvise")
int on_exit_madvise(struct tp_sys_exit *ctx)
{
	struct pending p;
	u32 tgid, tid;
	if (!take_args(&p, &tgid, &tid))
		return 0;
	bpf_map_delete_elem(&releasing, &tid);
	if (ctx->ret != 0)
		return 0;
	u64 advice = p.args[2];
	if (advice == MADV_DONTNEED || advice == MADV_FREE || advice == MADV_REMOVE)
		vm_charge(tgid, tid, VM_ADVISED, PAGE_ALIGN(p.args[1]));
	return 0;
}

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

static __always_inline int exec_exit(struct tp_sys_exit *ctx)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct target *t = current_target(tgid);
	if (t && ctx->ret < 0 && t->prev_state)
		t->state = t->prev_state;
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_execve")
int on_enter_execve(struct tp_sys_enter *ctx) { return exec_enter(); }

SEC("tracepoint/syscalls/sys_exit_execve")
int on_exit_execve(struct tp_sys_exit *ctx) { return exec_exit(ctx); }

SEC("tracepoint/syscalls/sys_enter_execveat")
int on_enter_execveat(struct tp_sys_enter *ctx) { return exec_enter(); }

SEC("tracepoint/syscalls/sys_exit_execveat")
int on_exit_execveat(struct tp_sys_exit *ctx) { return exec_exit(ctx); }

SEC("tracepoint/sched/sched_process_exec")
int on_exec(struct tp_sched_exec *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32;
	if (!current_target(tgid)) {
		/* The run launcher, or a process started in the traced cgroup
		 * (docker exec, a new worker): it is a target from its exec. */
		int in_cgroup = follow_cgroup && bpf_current_task_under_cgroup(&target_cgroup, 0) == 1;
		if (!in_cgroup && (!launcher_tgid || tgid != launcher_tgid))
			return 0;
		struct target t = { .state = TS_EXECED };
		if (bpf_map_update_elem(&targets, &tgid, &t, BPF_NOEXIST) == -E2BIG)
			stat_inc(ST_TARGET_OVERFLOW);
	}
	struct target *t = current_target(tgid);
	if (t)
		__sync_fetch_and_add(&t->gen, 1);
	struct exec_event *e = event_reserve(sizeof(*e), EV_EXEC, tgid, (u32)id);
	if (!e)
		return 0;
	u32 off = ctx->filename_loc & 0xffff;
	bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), (void *)ctx + off);
	submit(e);
	return 0;
}

SEC("tracepoint/sched/sched_process_fork")
int on_fork(struct tp_sched_fork *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32;
	if (!current_target(tgid))
		return 0;
	u32 child = ctx->child_pid;
	/* A new thread's tid lands here too; lookups are by tgid, so it is
	 * inert, and its exit removes it. */
	struct target t = { .state = TS_FORKED };
	if (bpf_map_update_elem(&targets, &child, &t, BPF_NOEXIST) == -E2BIG)
		stat_inc(ST_TARGET_OVERFLOW);
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
	u32 off = ctx->child_comm_loc & 0xffff;
	bpf_probe_read_kernel_str(e->comm, sizeof(e->comm), (void *)ctx + off);
	submit(e);
	return 0;
}

SEC("tracepoint/sched/sched_process_exit")
int on_exit(struct tp_sched_exit *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32, tid = (u32)id;
	if (!current_target(tgid))
		return 0;
	u8 group_dead = ctx->group_dead;
	/* The leader may leave before its threads: the tgid entry goes only
	 * with the last thread. */
	if (tid != tgid)
		bpf_map_delete_elem(&targets, &tid);
	set_thread(tgid, tid, TM_IDLE, 0); /* sends an end still waiting */
	bpf_map_delete_elem(&thread_states, &tid);
	bpf_map_delete_elem(&tls_reads, &tid);
	bpf_map_delete_elem(&ab_pending, &tid);
	bpf_map_delete_elem(&pending, &tid);
	bpf_map_delete_elem(&releasing, &tid);
	if (group_dead)
		bpf_map_delete_elem(&targets, &tgid);
	struct exit_event *e = event_reserve(sizeof(*e), EV_EXIT, tgid, tid);
	if (!e)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	e->exit_code = BPF_CORE_READ(task, exit_code);
	e->group_dead = group_dead;
	e->_pad[0] = e->_pad[1] = e->_pad[2] = 0;
	__builtin_memcpy(e->comm, ctx->comm, sizeof(e->comm));
	submit(e);
	return 0;
}

SEC("tracepoint/task/task_rename")
int on_rename(struct tp_task_rename *ctx)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!current_target(tgid))
		return 0;
	struct bucket_key key = { .tgid = tgid, .kind = BK_THREAD, .id = (u32)ctx->pid };
	struct counters *c = bpf_map_lookup_elem(&buckets, &key);
	if (c)
		__builtin_memcpy(c->comm, ctx->newcomm, sizeof(c->comm));
	return 0;
}

/*
 * Operations.
 *
 * A served socket (accepted, or whose first bytes read are an HTTP request)
 * starts an op when a read brings the first bytes of a request: at the
 * first read, or after the server wrote a response (keep-alive). The op's
 * id is bound to the socket, and every read or write on that socket makes
 * it the thread's current op again (an event loop interleaves
 * connections). A write on a served socket releases the thread when it
 * returns: what runs after a response is written is not the request's.
 * Return from epoll_wait/epoll_pwait/epoll_pwait2/poll/ppoll makes the
 * thread idle. A thread that never took part in an op keeps its own
 * bucket (BK_THREAD, "background").
 *
 * A client socket (connected by a target) written to by a thread that has
 * an op joins that op; written to by an idle thread, it starts an outbound
 * op. Reads on it make its op current again.
 *
 * Ops end at the next request (or call) on their socket, or at close.
 * The first OP_DATA_LEN bytes go to Go with OP_BEGIN; the kernel only
 * checks they start with an HTTP method.
 */

#define AF_INET 2
#define AF_INET6 10

enum io_kind {
	IO_PLAIN = 1, /* args[1] is the buffer */
	IO_IOV = 2,   /* args[1] is a struct iovec array */
	IO_MSG = 3,   /* args[1] is a struct user_msghdr */
};

struct iovec_ {
	u64 base;
	u64 len;
};

/* Returns the user address of the first buffer of a read or write, or 0. */
static __always_inline u64 first_buffer(u64 ptr, u32 kind)
{
	struct iovec_ iov = {};
	if (kind == IO_PLAIN)
		return ptr;
	if (kind == IO_MSG) {
		/* struct user_msghdr: msg_iov at offset 16 */
		u64 iovp = 0;
		if (bpf_probe_read_user(&iovp, sizeof(iovp), (void *)(ptr + 16)))
			return 0;
		ptr = iovp;
	}
	if (bpf_probe_read_user(&iov, sizeof(iov), (void *)ptr))
		return 0;
	return iov.base;
}

/* The first n bytes of s as a little-endian integer. */
#define LE(s, n) (                                                           \
	((u64)(s)[0]) | ((u64)(s)[1] << 8) | ((u64)(s)[2] << 16) |           \
	((u64)(s)[3] << 24) | ((n) > 4 ? (u64)(s)[4] << 32 : 0) |            \
	((n) > 5 ? (u64)(s)[5] << 40 : 0) | ((n) > 6 ? (u64)(s)[6] << 48 : 0) | \
	((n) > 7 ? (u64)(s)[7] << 56 : 0))
#define MASK(n) ((n) >= 8 ? ~0ULL : (1ULL << (8 * ((n) & 7))) - 1)
#define STARTS(w, s, n) (((w) & MASK(n)) == LE(s, n))

/* Returns the length of the first buffer of a writev/sendmsg (so the
 * copy never reads past it), or 0. */
static __always_inline s64 first_len(u64 ptr, u32 kind)
{
	struct iovec_ iov = {};
	if (kind == IO_MSG) {
		u64 iovp = 0;
		if (bpf_probe_read_user(&iovp, sizeof(iovp), (void *)(ptr + 16)))
			return 0;
		ptr = iovp;
	}
	if (bpf_probe_read_user(&iov, sizeof(iov), (void *)ptr))
		return 0;
	return (s64)iov.len;
}

/* Returns 1 when w, the first 8 bytes read (little endian), starts with an
 * HTTP/1.x request method and a space. Compared as one word: byte-wise
 * code tempts the compiler into pointer arithmetic the verifier refuses. */
static __always_inline int looks_like_request(u64 w)
{
	return STARTS(w, "GET ", 4) || STARTS(w, "PUT ", 4) ||
	       STARTS(w, "POST ", 5) || STARTS(w, "HEAD ", 5) ||
	       STARTS(w, "PATCH ", 6) || STARTS(w, "DELETE ", 7) ||
	       STARTS(w, "OPTIONS ", 8);
}

/* Ends the socket's op, if any; returns 0. */
static __always_inline int op_end(struct sock_info *s, u32 tgid, u32 tid, s32 fd, u32 reason)
{
	u64 op_id = s->op_id;
	if (!op_id)
		return 0;
	s->op_id = 0;
	emit_op_end(tgid, tid, op_id, fd, reason);
	return 0;
}

/* Starts an op on socket s: creates its bucket, makes it the thread's and
 * the socket's current op, and sends OP_BEGIN with the first bytes at buf
 * (len of them valid). Returns 0. */
static __always_inline int op_begin(struct sock_info *s, u32 tgid, u32 tid, s32 fd, u32 kind, u64 buf, s64 len, u64 pre, u32 pre_len)
{
	op_end(s, tgid, tid, fd, END_NEXT);
	u32 zero = 0;
	u64 *next = bpf_map_lookup_elem(&op_ids, &zero);
	if (!next)
		return 0;
	u64 op_id = __sync_fetch_and_add(next, 1) + 1;
	struct bucket_key key = { .tgid = tgid, .kind = BK_OP, .id = op_id };
	u32 zero_idx = 0;
	struct counters *fresh = bpf_map_lookup_elem(&zeroes, &zero_idx);
	if (!fresh || bpf_map_update_elem(&buckets, &key, fresh, BPF_NOEXIST)) {
		/* No room for the op's bucket: its activity stays idle. */
		stat_inc(ST_BUCKET_OVERFLOW);
		set_thread(tgid, tid, TM_IDLE, 0);
		return 0;
	}
	struct counters *oc = bpf_map_lookup_elem(&buckets, &key);
	if (oc)
		oc->first_ns = bpf_ktime_get_ns();
	s->op_id = op_id;
	s->flags &= ~SF_RESPONDED;
	s->flags |= SF_STARTED;
	set_thread(tgid, tid, TM_OP, op_id);

	struct op_begin_event *e = event_reserve(sizeof(*e), EV_OP_BEGIN, tgid, tid);
	if (!e)
		return 0;
	e->op_id = op_id;
	e->op_kind = kind;
	e->fd = fd;
	e->family = s->family;
	e->port = s->port;
	__builtin_memcpy(e->addr, s->addr, sizeof(e->addr));
	/* The bytes read alone before (pre_len of them, at most 7) come
	 * first, then the buffer's. */
	__builtin_memcpy(e->data, &pre, sizeof(pre));
	u64 off = pre_len & 7;
	u64 n = len <= 0 ? 0 : len >= OP_DATA_LEN ? OP_DATA_LEN - 1 : (u64)len;
	/* Hide n's range from the compiler so the mask below survives for
	 * the verifier. */
	asm volatile("" : "+r"(n));
	n &= OP_DATA_LEN - 1;
	if (n > OP_DATA_LEN - 8)
		n = OP_DATA_LEN - 8;
	e->data_len = off;
	if (n > 0 && !bpf_probe_read_user(e->data + off, n, (void *)buf))
		e->data_len = off + n;
	submit(e);
	return 0;
}

/* The kernel socket behind the current task's fd, or NULL. Read through
 * the task's file table with CO-RE reads: only at accept, and at the first
 * write on a socket memdiag does not know. */
static __always_inline struct sock *fd_sock(s32 fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct file **fds = BPF_CORE_READ(task, files, fdt, fd);
	struct file *f = NULL;
	if (fd < 0 || bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) || !f)
		return NULL;
	struct socket *sock = BPF_CORE_READ(f, private_data);
	if (!sock)
		return NULL;
	return BPF_CORE_READ(sock, sk);
}

/* The local port of the current task's socket fd (host order), or 0. */
static __always_inline u16 local_port(s32 fd)
{
	struct sock *sk = fd_sock(fd);
	if (!sk)
		return 0;
	return BPF_CORE_READ(sk, __sk_common.skc_num);
}

/* Fills s with the peer of the current task's connected socket fd;
 * returns 0 when it is an IPv4 or IPv6 socket. */
static __always_inline int sock_peer(s32 fd, struct sock_info *s)
{
	struct sock *sk = fd_sock(fd);
	if (!sk)
		return -1;
	u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	u16 dport = BPF_CORE_READ(sk, __sk_common.skc_dport);
	s->family = family;
	s->port = (dport >> 8) | ((dport & 0xff) << 8);
	if (family == AF_INET) {
		u32 a = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		__builtin_memcpy(s->addr, &a, 4);
		return 0;
	}
	if (family == AF_INET6) {
		BPF_CORE_READ_INTO(&s->addr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
		return 0;
	}
	return -1;
}

/* accept/accept4: the returned fd is a served socket (Node passes a NULL
 * sockaddr, so the fd is all there is). */
static __always_inline int accepted(struct tp_sys_exit *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32;
	if (ctx->ret < 0 || !current_target(tgid))
		return 0;
	struct sock_key k = { .tgid = tgid, .fd = (s32)ctx->ret };
	struct sock_info s = { .role = SOCK_SERVER };
	u16 port = local_port((s32)ctx->ret);
	if (port && bpf_map_lookup_elem(&ignored_ports, &port))
		s.role = SOCK_IGNORED; /* memdiag's own connection to the inspector */
	if (bpf_map_update_elem(&sockets, &k, &s, BPF_ANY))
		stat_inc(ST_SOCK_OVERFLOW);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int on_exit_accept4(struct tp_sys_exit *ctx) { return accepted(ctx); }

SEC("tracepoint/syscalls/sys_exit_accept")
int on_exit_accept(struct tp_sys_exit *ctx) { return accepted(ctx); }

/* struct sockaddr_in / sockaddr_in6, as much as we read. */
struct sockaddr_ {
	u16 family;
	u16 port_be;
	u32 flowinfo_or_addr4;
	u8 addr6[16];
};

SEC("tracepoint/syscalls/sys_enter_connect")
int on_enter_connect(struct tp_sys_enter *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32;
	if (!current_target(tgid))
		return 0;
	struct sockaddr_ sa = {};
	if (bpf_probe_read_user(&sa, sizeof(sa), (void *)ctx->args[1]))
		return 0;
	if (sa.family != AF_INET && sa.family != AF_INET6)
		return 0;
	struct sock_key k = { .tgid = tgid, .fd = (s32)ctx->args[0] };
	struct sock_info s = { .role = SOCK_CLIENT, .family = sa.family };
	s.port = (sa.port_be >> 8) | ((sa.port_be & 0xff) << 8);
	if (sa.family == AF_INET)
		__builtin_memcpy(s.addr, &sa.flowinfo_or_addr4, 4);
	else
		__builtin_memcpy(s.addr, sa.addr6, 16);
	/* Connected while the thread serves an op: the call belongs to it,
	 * even when its first write comes from a later loop turn. */
	u32 tid = (u32)id;
	struct thread_state *ts = bpf_map_lookup_elem(&thread_states, &tid);
	if (ts && ts->mode == TM_OP) {
		struct bucket_key bk = { .tgid = tgid, .kind = BK_OP, .id = ts->op_id };
		if (bpf_map_lookup_elem(&buckets, &bk)) {
			s.op_id = ts->op_id;
			s.flags |= SF_JOINED | SF_BOUND;
		}
	}
	/* Recorded at entry: a non-blocking connect returns EINPROGRESS, and a
	 * failed one is followed by close, which deletes the entry. */
	if (bpf_map_update_elem(&sockets, &k, &s, BPF_ANY))
		stat_inc(ST_SOCK_OVERFLOW);
	return 0;
}

/* Saves fd, buffer and io kind of a read or write by a target thread. */
static __always_inline int save_io(struct tp_sys_enter *ctx, u32 kind)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!current_target(id >> 32))
		return 0;
	u32 tid = (u32)id;
	struct pending p = { .args = { ctx->args[0], ctx->args[1], kind } };
	if (bpf_map_update_elem(&pending, &tid, &p, BPF_ANY))
		stat_inc(ST_PENDING_OVERFLOW);
	return 0;
}

/* A read of ret bytes finished: switch to the socket's op, or start one
 * when the bytes begin a request. */
static __always_inline int read_done(struct tp_sys_exit *ctx)
{
	struct pending p;
	u32 tgid, tid;
	if (!take_args(&p, &tgid, &tid) || ctx->ret < 0)
		return 0;
	s32 fd = (s32)p.args[0];
	struct sock_key k = { .tgid = tgid, .fd = fd };
	struct sock_info *s = bpf_map_lookup_elem(&sockets, &k);
	if (s && s->role == SOCK_IGNORED)
		return 0;
	if (ctx->ret == 0) {
		/* End of stream: a response that ends at close (no length)
		 * completes here, and its callbacks are the call's op's. */
		if (s && s->role == SOCK_CLIENT && s->op_id)
			set_thread(tgid, tid, TM_OP, s->op_id);
		return 0;
	}
	if (s && s->role == SOCK_CLIENT) {
		if (s->op_id)
			set_thread(tgid, tid, TM_OP, s->op_id);
		return 0;
	}
	if (s && (s->flags & SF_TLS))
		bpf_map_update_elem(&tls_reads, &tid, &fd, BPF_ANY);
	/* A served socket, or an fd we do not know yet (a connection
	 * accepted before attach): look at the first bytes. */
	if (s && s->op_id && !(s->flags & SF_RESPONDED)) {
		set_thread(tgid, tid, TM_OP, s->op_id); /* more of the same request */
		return 0;
	}
	u64 buf = first_buffer(p.args[1], (u32)p.args[2]);
	u64 head = 0, pre = 0;
	u32 pre_len = 0;
	if (s && s->pre_len) {
		pre = s->pre;
		pre_len = s->pre_len & 7;
		s->pre_len = 0;
	}
	if (!buf)
		goto not_request;
	if (!pre_len && ctx->ret < 8) {
		/* A request's first bytes read alone (Go's server reads one byte
		 * ahead, in the background, after a response): kept for the
		 * next read, which brings the rest of the request line. */
		u64 got = (u64)ctx->ret & 7;
		if (s && s->role == SOCK_SERVER && got && (!s->op_id || (s->flags & SF_RESPONDED)) &&
		    !bpf_probe_read_user(&pre, got, (void *)buf)) {
			s->pre = pre;
			s->pre_len = got;
		}
		goto not_request;
	}
	if (bpf_probe_read_user(&head, sizeof(head), (void *)buf))
		goto not_request;
	if (pre_len) {
		/* pre_len bytes read before, then this read's. */
		head = pre | (head << (8 * pre_len));
	}
	if (!looks_like_request(head)) {
		/* A TLS record: handshake (0x16 0x03) on a served socket, or
		 * application data (0x17 0x03) on a connection accepted before
		 * attach. */
		u64 rec = head & 0xffff;
		if (!s && rec == 0x0317) {
			struct sock_info fresh = { .role = SOCK_SERVER };
			if (bpf_map_update_elem(&sockets, &k, &fresh, BPF_NOEXIST) == -E2BIG)
				stat_inc(ST_SOCK_OVERFLOW);
			s = bpf_map_lookup_elem(&sockets, &k);
			if (s)
				rec = 0x0316;
		}
		if (s && !s->op_id && s->role == SOCK_SERVER && rec == 0x0316) {
			s->flags |= SF_TLS;
			bpf_map_update_elem(&tls_reads, &tid, &fd, BPF_ANY);
			struct target *t = current_target(tgid);
			if (t && !(t->flags & TF_TLS_SEEN)) {
				t->flags |= TF_TLS_SEEN;
				struct event_hdr *e = event_reserve(sizeof(*e), EV_TLS_SEEN, tgid, tid);
				if (e)
					submit(e);
			}
			goto not_request;
		}
		/* Something else on a socket the target accepted (another
		 * protocol, garbage): an op Go names "unknown", not idle work
		 * nor a misnamed request. Only at the start of a connection or
		 * after a response, like a request. */
		if (s && s->role == SOCK_SERVER && !(s->flags & (SF_TLS | SF_STARTED)))
			return op_begin(s, tgid, tid, fd, OP_HTTP_SERVER, buf, ctx->ret, 0, 0);
		goto not_request;
	}
	if (!s) {
		struct sock_info fresh = { .role = SOCK_SERVER };
		if (bpf_map_update_elem(&sockets, &k, &fresh, BPF_NOEXIST) == -E2BIG)
			stat_inc(ST_SOCK_OVERFLOW);
		s = bpf_map_lookup_elem(&sockets, &k);
		if (!s)
			return 0;
	}
	return op_begin(s, tgid, tid, fd, OP_HTTP_SERVER, buf, ctx->ret, pre, pre_len);

not_request:
	if (s && s->op_id)
		set_thread(tgid, tid, TM_OP, s->op_id);
	return 0;
}

/* llhttp_execute(parser, data, len) in the target's node binary (--tls):
 * the cleartext of a request read on a TLS socket, which the syscalls only
 * see encrypted. Attached for the target's pid only: each call traps. */
SEC("uprobe.multi")
int on_llhttp_execute(struct pt_regs_x86 *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32, tid = (u32)id;
	if (!current_target(tgid))
		return 0;
	s32 *fd = bpf_map_lookup_elem(&tls_reads, &tid);
	if (!fd)
		return 0;
	struct sock_key k = { .tgid = tgid, .fd = *fd };
	struct sock_info *s = bpf_map_lookup_elem(&sockets, &k);
	if (!s || !(s->flags & SF_TLS) || s->role != SOCK_SERVER)
		return 0;
	if (s->op_id && !(s->flags & SF_RESPONDED)) {
		set_thread(tgid, tid, TM_OP, s->op_id);
		return 0;
	}
	u64 data = ctx->si;
	s64 len = (s64)ctx->dx;
	u64 head = 0;
	if (len < 8 || bpf_probe_read_user(&head, sizeof(head), (void *)data) || !looks_like_request(head))
		return 0;
	return op_begin(s, tgid, tid, k.fd, OP_HTTP_SERVER, data, len, 0, 0);
}

/*
 * Exact external memory (--exact-external): uprobes on Node's
 * node::NodeArrayBufferAllocator::{Allocate,AllocateUninitialized}(size)
 * (entry and return) and ::Free(data, size), attached for the target pid
 * only. Every Buffer that is not pooled costs three traps.
 */

/* Adds delta to the process's live ArrayBuffer bytes. */
static __always_inline void ab_live_add(u32 tgid, s64 delta)
{
	s64 *live = bpf_map_lookup_elem(&ab_live, &tgid);
	if (live) {
		__sync_fetch_and_add(live, delta);
		return;
	}
	bpf_map_update_elem(&ab_live, &tgid, &delta, BPF_NOEXIST);
}

SEC("uprobe.multi")
int on_ab_allocate(struct pt_regs_x86 *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!current_target(id >> 32))
		return 0;
	u32 tid = (u32)id;
	u64 size = ctx->si; /* (this, size) */
	bpf_map_update_elem(&ab_pending, &tid, &size, BPF_ANY);
	return 0;
}

SEC("uretprobe.multi")
int on_ab_allocate_ret(struct pt_regs_x86 *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32, tid = (u32)id;
	u64 *pending_size = bpf_map_lookup_elem(&ab_pending, &tid);
	if (!pending_size)
		return 0;
	u64 size = *pending_size;
	bpf_map_delete_elem(&ab_pending, &tid);
	u64 ptr = ctx->ax;
	if (!ptr)
		return 0;
	struct ab_alloc a = { .size = size };
	current_bucket(&a.owner, tgid, tid);
	struct ab_key k = { .tgid = tgid, .ptr = ptr };
	if (bpf_map_update_elem(&outstanding, &k, &a, BPF_ANY)) {
		/* Table full: this one is not followed at all, so the counts
		 * stay consistent (its free will not be found either). */
		stat_inc(ST_OUTSTANDING_OVERFLOW);
		return 0;
	}
	struct counters *c = bucket(&a.owner);
	if (c)
		__sync_fetch_and_add(&c->ab_alloc, size);
	ab_live_add(tgid, (s64)size);
	return 0;
}

SEC("uprobe.multi")
int on_ab_free(struct pt_regs_x86 *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32;
	if (!current_target(tgid))
		return 0;
	u64 ptr = ctx->si; /* (this, data, size): the size is the allocation's */
	if (!ptr)
		return 0;
	struct ab_key k = { .tgid = tgid, .ptr = ptr };
	struct ab_alloc *a = bpf_map_lookup_elem(&outstanding, &k);
	if (!a)
		return 0; /* allocated before memdiag came: not ours to count */
	struct bucket_key owner = a->owner;
	u64 asize = a->size;
	bpf_map_delete_elem(&outstanding, &k);
	owner_key(&owner);
	struct counters *c = bucket(&owner);
	if (c)
		__sync_fetch_and_add(&c->ab_freed, asize);
	ab_live_add(tgid, -(s64)asize);
	return 0;
}

/*
 * Runtime heap sampling: the allocation samplers the runtimes already run,
 * joined with the op in the kernel. A uprobe on the sampling path fires once
 * per sample (one per sampling interval of bytes allocated, not per
 * allocation), and at that moment the thread's current bucket is the op
 * that allocated. Userspace keeps which samples are still live (V8: the
 * sampling profile read over the inspector; Go: frees of profiled objects)
 * and sums them per category: the live heap each category keeps.
 */

/* Sends one EV_HEAP_SAMPLE for the current thread. */
static __always_inline int heap_sample(u32 runtime, u64 ordinal, u64 addr, u64 size)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32, tid = (u32)id;
	struct heap_sample_event *e = event_reserve(sizeof(*e), EV_HEAP_SAMPLE, tgid, tid);
	if (!e)
		return 0;
	e->runtime = runtime;
	e->_pad = 0;
	e->ordinal = ordinal;
	e->addr = addr;
	e->size = size;
	current_bucket(&e->owner, tgid, tid);
	submit(e);
	return 0;
}

/* Sends one EV_HEAP_FREE or EV_GC_CYCLE. */
static __always_inline int heap_note(u32 kind, u32 runtime, u64 addr)
{
	u64 id = bpf_get_current_pid_tgid();
	struct heap_note_event *e = event_reserve(sizeof(*e), kind, id >> 32, (u32)id);
	if (!e)
		return 0;
	e->runtime = runtime;
	e->_pad = 0;
	e->addr = addr;
	submit(e);
	return 0;
}

/* v8::internal::SamplingHeapProfiler::SampleObject(this, soon_object, size). */
SEC("uprobe.multi")
int on_v8_sample(struct pt_regs_x86 *ctx)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!current_target(tgid))
		return 0;
	u64 one = 1, n = 1;
	u64 *count = bpf_map_lookup_elem(&v8_samples, &tgid);
	if (count)
		n = __sync_fetch_and_add(count, 1) + 1;
	else if (bpf_map_update_elem(&v8_samples, &tgid, &one, BPF_NOEXIST))
		return 0; /* raced with another thread's first sample: keep numbering exact */
	return heap_sample(HR_V8, n, ctx->si, ctx->dx);
}

/* runtime.mProf_Malloc(mp *m, p unsafe.Pointer, size uintptr), Go's
 * register ABI: AX, BX, CX. */
SEC("uprobe.multi")
int on_go_malloc(struct pt_regs_x86 *ctx)
{
	if (!current_target(bpf_get_current_pid_tgid() >> 32))
		return 0;
	return heap_sample(HR_GO, 0, ctx->bx, ctx->cx);
}

#define GO_KIND_SPECIAL_PROFILE 4

/* runtime.freeSpecial(s *special, p unsafe.Pointer, size uintptr): a
 * profiled object's record is freed with the object (other specials, such
 * as finalizers, are not frees). */
SEC("uprobe.multi")
int on_go_free_special(struct pt_regs_x86 *ctx)
{
	if (!current_target(bpf_get_current_pid_tgid() >> 32))
		return 0;
	u8 kind = 0;
	if (bpf_probe_read_user(&kind, sizeof(kind), (void *)(ctx->ax + go_special_kind_off)))
		return 0;
	if (kind != GO_KIND_SPECIAL_PROFILE)
		return 0;
	return heap_note(EV_HEAP_FREE, HR_GO, ctx->bx);
}

/* runtime.gcMarkTermination: one GC cycle ended (once per cycle). */
SEC("uprobe.multi")
int on_go_gc(struct pt_regs_x86 *ctx)
{
	if (!current_target(bpf_get_current_pid_tgid() >> 32))
		return 0;
	return heap_note(EV_GC_CYCLE, HR_GO, 0);
}

SEC("tracepoint/syscalls/sys_enter_read")
int on_enter_read(struct tp_sys_enter *ctx) { return save_io(ctx, IO_PLAIN); }
SEC("tracepoint/syscalls/sys_exit_read")
int on_exit_read(struct tp_sys_exit *ctx) { return read_done(ctx); }
SEC("tracepoint/syscalls/sys_enter_recvfrom")
int on_enter_recvfrom(struct tp_sys_enter *ctx) { return save_io(ctx, IO_PLAIN); }
SEC("tracepoint/syscalls/sys_exit_recvfrom")
int on_exit_recvfrom(struct tp_sys_exit *ctx) { return read_done(ctx); }
SEC("tracepoint/syscalls/sys_enter_readv")
int on_enter_readv(struct tp_sys_enter *ctx) { return save_io(ctx, IO_IOV); }
SEC("tracepoint/syscalls/sys_exit_readv")
int on_exit_readv(struct tp_sys_exit *ctx) { return read_done(ctx); }
SEC("tracepoint/syscalls/sys_enter_recvmsg")
int on_enter_recvmsg(struct tp_sys_enter *ctx) { return save_io(ctx, IO_MSG); }
SEC("tracepoint/syscalls/sys_exit_recvmsg")
int on_exit_recvmsg(struct tp_sys_exit *ctx) { return read_done(ctx); }

/* A write begins: a served socket's write belongs to its op (and releases
 * the thread when it returns); a client socket's joins the thread's op or,
 * from an idle thread, starts an outbound op. */
static __always_inline int write_begin(struct tp_sys_enter *ctx, u32 kind)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32, tid = (u32)id;
	if (!current_target(tgid))
		return 0;
	s32 fd = (s32)ctx->args[0];
	struct sock_key k = { .tgid = tgid, .fd = fd };
	struct sock_info *s = bpf_map_lookup_elem(&sockets, &k);
	if (!s) {
		/* A socket connected before memdiag came (a keep-alive pool):
		 * it becomes a client socket at its first request written. */
		u64 wb = first_buffer(ctx->args[1], kind), w = 0;
		if (!wb || bpf_probe_read_user(&w, sizeof(w), (void *)wb) || !looks_like_request(w))
			return 0;
		struct sock_info fresh = { .role = SOCK_CLIENT };
		if (sock_peer(fd, &fresh))
			return 0;
		if (bpf_map_update_elem(&sockets, &k, &fresh, BPF_NOEXIST) == -E2BIG)
			stat_inc(ST_SOCK_OVERFLOW);
		s = bpf_map_lookup_elem(&sockets, &k);
	}
	if (!s || s->role == SOCK_IGNORED)
		return 0;
	if (s->role == SOCK_SERVER) {
		if (!s->op_id)
			return 0;
		/* An interim 1xx (100 Continue) is not the response: the body
		 * still comes, in the same op. */
		u64 wb = first_buffer(ctx->args[1], kind);
		u64 status = 0;
		/* bytes 2..9 of "HTTP/1.x 1xx": "TP/1.x 1", x masked */
		if (!wb || bpf_probe_read_user(&status, sizeof(status), (void *)(wb + 2)) ||
		    (status & 0xffff00ffffffffffULL) != 0x3120002e312f5054ULL)
			s->flags |= SF_RESPONDED;
		set_thread(tgid, tid, TM_OP, s->op_id);
		/* Remember the served fd so the exit releases the thread. */
		struct pending p = { .args = { fd, 0, 0 } };
		bpf_map_update_elem(&pending, &tid, &p, BPF_ANY);
		return 0;
	}
	if ((s->flags & SF_BOUND) && s->op_id) {
		/* The first write of a socket connected inside an op: a
		 * non-blocking connect completes after a poll, and the loop may
		 * write it while busy with another op's sockets. It is still the
		 * connecting op's call, and what its callbacks do is that op's. */
		s->flags &= ~SF_BOUND;
		struct bucket_key bk = { .tgid = tgid, .kind = BK_OP, .id = s->op_id };
		if (bpf_map_lookup_elem(&buckets, &bk)) {
			set_thread(tgid, tid, TM_OP, s->op_id);
			return 0;
		}
	}
	struct thread_state *ts = bpf_map_lookup_elem(&thread_states, &tid);
	if (ts && ts->mode == TM_OP) {
		struct bucket_key bk = { .tgid = tgid, .kind = BK_OP, .id = ts->op_id };
		if (bpf_map_lookup_elem(&buckets, &bk)) {
			s->op_id = ts->op_id; /* the call is part of the thread's op */
			s->flags |= SF_JOINED;
			return 0;
		}
	}
	u64 buf = first_buffer(ctx->args[1], kind);
	s64 len = kind == IO_PLAIN ? (s64)ctx->args[2] : first_len(ctx->args[1], kind);
	s->flags &= ~SF_JOINED;
	return op_begin(s, tgid, tid, fd, OP_OUTBOUND, buf, len, 0, 0);
}

/* A write on a served socket returned: the thread is released. */
static __always_inline int write_done(struct tp_sys_exit *ctx)
{
	struct pending p;
	u32 tgid, tid;
	if (!take_args(&p, &tgid, &tid))
		return 0;
	set_thread(tgid, tid, TM_IDLE, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_write")
int on_enter_write(struct tp_sys_enter *ctx) { return write_begin(ctx, IO_PLAIN); }
SEC("tracepoint/syscalls/sys_exit_write")
int on_exit_write(struct tp_sys_exit *ctx) { return write_done(ctx); }
SEC("tracepoint/syscalls/sys_enter_sendto")
int on_enter_sendto(struct tp_sys_enter *ctx) { return write_begin(ctx, IO_PLAIN); }
SEC("tracepoint/syscalls/sys_exit_sendto")
int on_exit_sendto(struct tp_sys_exit *ctx) { return write_done(ctx); }
SEC("tracepoint/syscalls/sys_enter_writev")
int on_enter_writev(struct tp_sys_enter *ctx) { return write_begin(ctx, IO_IOV); }
SEC("tracepoint/syscalls/sys_exit_writev")
int on_exit_writev(struct tp_sys_exit *ctx) { return write_done(ctx); }
SEC("tracepoint/syscalls/sys_enter_sendmsg")
int on_enter_sendmsg(struct tp_sys_enter *ctx) { return write_begin(ctx, IO_MSG); }
SEC("tracepoint/syscalls/sys_exit_sendmsg")
int on_exit_sendmsg(struct tp_sys_exit *ctx) { return write_done(ctx); }

SEC("tracepoint/syscalls/sys_enter_close")
int on_enter_close(struct tp_sys_enter *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32, tid = (u32)id;
	if (!current_target(tgid))
		return 0;
	struct sock_key k = { .tgid = tgid, .fd = (s32)ctx->args[0] };
	struct sock_info *s = bpf_map_lookup_elem(&sockets, &k);
	if (!s)
		return 0;
	if (s->flags & SF_JOINED) {
		/* A call made inside another op: closing it ends nothing. */
		bpf_map_delete_elem(&sockets, &k);
		return 0;
	}
	struct thread_state *ts = bpf_map_lookup_elem(&thread_states, &tid);
	if (s->op_id && ts && ts->mode == TM_OP && ts->op_id == s->op_id) {
		/* Closed by the op's own callback (a client done with its
		 * response): what the callback does next is still the op's, so
		 * the end waits until the thread is back in its poll. */
		ts->end_fd = (u32)k.fd + 1;
		s->op_id = 0;
	} else {
		op_end(s, tgid, tid, k.fd, END_CLOSE);
	}
	bpf_map_delete_elem(&sockets, &k);
	return 0;
}

/* Back from the event loop's poll: nothing is current until socket
 * activity names an op, and an op whose socket closed under it ends now.
 * Only threads that took part in ops have a state. */
static __always_inline int poll_done(void)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tid = (u32)id;
	struct thread_state *ts = bpf_map_lookup_elem(&thread_states, &tid);
	if (!ts || ts->mode != TM_OP)
		return 0;
	if (ts->end_fd)
		emit_op_end(id >> 32, tid, ts->op_id, (s32)ts->end_fd - 1, END_CLOSE);
	ts->mode = TM_IDLE;
	ts->op_id = 0;
	ts->end_fd = 0;
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_epoll_wait")
int on_exit_epoll_wait(struct tp_sys_exit *ctx) { return poll_done(); }
SEC("tracepoint/syscalls/sys_exit_epoll_pwait")
int on_exit_epoll_pwait(struct tp_sys_exit *ctx) { return poll_done(); }
SEC("tracepoint/syscalls/sys_exit_epoll_pwait2")
int on_exit_epoll_pwait2(struct tp_sys_exit *ctx) { return poll_done(); }
SEC("tracepoint/syscalls/sys_exit_poll")
int on_exit_poll(struct tp_sys_exit *ctx) { return poll_done(); }
SEC("tracepoint/syscalls/sys_exit_ppoll")
int on_exit_ppoll(struct tp_sys_exit *ctx) { return poll_done(); }

SEC("tracepoint/oom/mark_victim")
int on_oom(struct tp_mark_victim *ctx)
{
	u32 victim = ctx->pid;
	struct target *t = bpf_map_lookup_elem(&targets, &victim);
	if (!t)
		return 0;
	struct oom_event *e = event_reserve(sizeof(*e), EV_OOM, victim, victim);
	if (!e)
		return 0;
	e->anon_rss = ctx->anon_rss;
	e->file_rss = ctx->file_rss;
	e->shmem_rss = ctx->shmem_rss;
	e->total_vm = ctx->total_vm;
	submit(e);
	return 0;
}

/* Keeps the record layouts in BTF so bpf2go emits their Go mirrors. */
const struct event_hdr *unused_event_hdr __attribute__((unused));
const struct fork_event *unused_fork_event __attribute__((unused));
const struct exec_event *unused_exec_event __attribute__((unused));
const struct exit_event *unused_exit_event __attribute__((unused));
const struct op_begin_event *unused_op_begin_event __attribute__((unused));
const struct op_end_event *unused_op_end_event __attribute__((unused));
const struct thread_state *unused_thread_state __attribute__((unused));
const struct sock_info *unused_sock_info __attribute__((unused));
const struct region *unused_region __attribute__((unused));
const struct region_key *unused_region_key __attribute__((unused));
const struct libc_range *unused_libc_range __attribute__((unused));
const struct ab_key *unused_ab_key __attribute__((unused));
const struct ab_alloc *unused_ab_alloc __attribute__((unused));
const struct oom_event *unused_oom_event __attribute__((unused));
const struct stack_key *unused_stack_key __attribute__((unused));
const struct stack_growth *unused_stack_growth __attribute__((unused));
const struct heap_sample_event *unused_heap_sample_event __attribute__((unused));
const struct heap_note_event *unused_heap_note_event __attribute__((unused));
