/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Core: targets, buckets, stats, the ring buffer, and the helpers every
 * other part uses.
 *
 * Targets. `targets` holds the thread group ids being traced. Userspace
 * seeds it (attach) or the run launcher's exec adds it (lifecycle.bpf.h);
 * fork adds children, so threads and child processes are followed, and
 * sets their bits in `target_bits`. Every handler starts with a test of
 * the current tgid's bit and returns when it is clear: the untraced path
 * is a few instructions and no hash lookup (current_target()).
 *
 * Buckets. Every charge goes to a struct bucket_key in `buckets`, chosen
 * by current_bucket() from the thread's entry in `thread_states`: the
 * thread's current operation (BK_OP, id = op id), the process's idle bucket
 * (BK_IDLE: an event-loop thread between operations), or, for a thread
 * that never took part in an op (GC helpers, thread pools), its own bucket
 * (BK_THREAD, id = tid, named after its comm). RSS accounting adds the
 * per-process pseudo buckets (BK_BASELINE, BK_START, BK_KERNEL,
 * BK_RELEASE), mappings add BK_FREED, and a full map charges BK_OVERFLOW.
 * An op's bucket is a slot of `op_slots`, not an entry of `buckets`.
 * Values are only ever added to, with atomic adds; userspace reads them
 * periodically (that is the flush), and an op's end takes its counters
 * out of its slot into the op's end record.
 *
 * Records. Lifecycle records, op begin/end and heap samples go through the
 * one `events` ring buffer, each starting with struct event_hdr; a failed
 * reserve bumps ST_LOST_EVENTS in the per-CPU `stats` array, which also
 * counts every map that was found full.
 *
 * Syscall arguments. An exit reads its syscall's arguments from the
 * registers, which the syscall leaves as its entry found them (exit_target);
 * a syscall that gives memory back (munmap, brk, madvise) needs more than
 * its arguments from its entry, saved in `pending` (the thread's task
 * storage) and taken at exit.
 */
#ifndef MEMDIAG_CORE_BPF_H
#define MEMDIAG_CORE_BPF_H

#define E2BIG 7
#define EEXIST 17

/* One bit per pid modulo TARGET_BITS (8 KiB), set for every pid in
 * `targets`: the first test of every hook. A clear bit is the untraced
 * path, a handful of instructions and no hash lookup, which every other
 * process on the host pays on every fault and traced syscall. A set bit
 * may belong to another pid (two pids share a bit when they are equal
 * modulo TARGET_BITS, or a pid was reused after its target exited):
 * `targets` has the last word, so sharing costs a lookup, never a miss.
 * Userspace sets bits through a shared mapping (atomic or) and fork sets
 * the child's; the kernel never clears one (a bit may be another live
 * target's), userspace does when it forgets a process and no target
 * shares the bit. One entry. */
#define TARGET_BITS 65536
#define TARGET_WORDS (TARGET_BITS / 32)
struct target_bitmap {
	u32 words[TARGET_WORDS];
};
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, u32);
	__type(value, struct target_bitmap);
} target_bits SEC(".maps");

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

/* Op buckets: the counters of every live op, in a slot of this array
 * rather than in `buckets`. An op begins and ends for every request a
 * server handles: as a hash entry that was an insert (an element taken
 * from the free list, key and 150 bytes copied under the bucket's lock)
 * and a lookup and delete at its end, ~250 ns a request; a slot is
 * claimed with one compare-and-swap and freed with a store, and every
 * charge to an op finds it by index, with no hashing. An op's id carries
 * its slot in its low OP_SLOT_BITS (above them, a sequence number: ids
 * are never reused), so the op can take any free slot: a request that
 * ends its connection's previous op takes that op's slot, just freed
 * and still in this CPU's cache (a new slot per request, scattered over
 * the table, cost a plain Node.js server more than the hash did), a new
 * connection's first op the slot this CPU freed last, else one found by
 * probing (op_claim). A slot belongs to the op whose id it holds (0:
 * free); a charge for an op whose slot holds another id (the op ended)
 * charges idle instead, as a charge for a deleted op bucket did.
 * Userspace reads the held slots with the buckets (as BK_OP buckets) and
 * frees the slot of an op it ends itself (its end record was lost). Its
 * size, a power of two up to 2^OP_SLOT_BITS, is set from userspace
 * (--max-buckets, rounded up). */
struct op_slot {
	u64 op_id; /* the op holding the slot; 0: free */
	u32 tgid;
	u32 _pad;
	struct counters c;
};
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, struct op_slot);
} op_slots SEC(".maps");

/* op_slots' size minus one (set by userspace with the size). */
volatile const u32 op_slot_mask = 16384 - 1;
#define OP_SLOT_BITS 20 /* tracer/opslots.go opSlotBits */
#define OP_CLAIM_TRIES 8

/* [0] -> the slot this CPU freed last, plus one (0: none): where a new
 * connection's op looks first. Per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u32);
} op_slot_freed SEC(".maps");

/* The slot of op op_id, or NULL when the op has ended (its slot is free
 * or another op's). */
static __always_inline struct op_slot *op_slot(u64 op_id)
{
	u32 idx = (u32)op_id & op_slot_mask;
	struct op_slot *s = bpf_map_lookup_elem(&op_slots, &idx);
	return s && op_id && s->op_id == op_id ? s : NULL;
}

/* Frees op s's slot, idx, and makes it this CPU's first choice. */
static __always_inline void op_slot_free(struct op_slot *s, u32 idx)
{
	*(volatile u64 *)&s->op_id = 0;
	u32 zero = 0;
	u32 *hint = bpf_map_lookup_elem(&op_slot_freed, &zero);
	if (hint)
		*hint = idx + 1;
}

/* Arguments of a syscall in flight (memory, socket io), in the thread's
 * own task storage: saved at entry, taken at exit. Task storage, not a
 * hash by tid: the kernel keeps it in the task (no hashing, no lock, no
 * delete per syscall; a hash cost three map operations, ~100 ns, per
 * hooked syscall) and frees it with the thread. Created for target
 * threads only. `valid` is 1 from entry to exit; `releasing` is 1 from
 * the entry to the exit of a syscall that gives memory back (munmap, brk
 * shrinking, madvise: mappings.bpf.h), while `rel` says whose it was, for
 * the RSS decreases on the way (rss.bpf.h). */
struct pending {
	u64 args[5];
};
struct pending_slot {
	struct pending p;
	u32 valid;
	u32 releasing;
	struct releasing rel;
};
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct pending_slot);
} pending SEC(".maps");

/* The thread's struct thread_state, in its task storage (as `pending`):
 * what its activity is charged to when it is not its own (BK_THREAD).
 * Created when the thread first takes part in an op; mode 0 is no state.
 * Every fault and RSS change of a process that serves ops reads it, with
 * no hashing; the kernel frees it with the thread. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct thread_state);
} thread_states SEC(".maps");

/* The current thread's state, or NULL when it never took part in an op. */
static __always_inline struct thread_state *current_thread_state(void)
{
	struct thread_state *ts = bpf_task_storage_get(&thread_states, bpf_get_current_task_btf(), 0, 0);
	return ts && ts->mode ? ts : NULL;
}


/* [0] -> all-zero counters: the template new buckets are copied from,
 * so no 150-byte struct sits on the BPF stack. Never written. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct counters);
} zeroes SEC(".maps");

/* enum stat_index -> count, per CPU: maps found full, records lost.
 * ST_MAX slots, room for new counters without a layout change. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ST_MAX);
	__type(key, u32);
	__type(value, u64);
} stats SEC(".maps");

/* The one ring buffer: lifecycle, op begin/end and heap sample records;
 * size set from userspace (--ringbuf-size). */
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

/* Nonzero when pid's bit is set: pid may be a target. */
static __always_inline u32 maybe_target(u32 pid)
{
	u32 zero = 0;
	struct target_bitmap *b = bpf_map_lookup_elem(&target_bits, &zero);
	if (!b)
		return 0;
	return b->words[(pid / 32) & (TARGET_WORDS - 1)] & (1u << (pid & 31));
}

/* Sets pid's bit. */
static __always_inline void mark_target(u32 pid)
{
	u32 zero = 0;
	struct target_bitmap *b = bpf_map_lookup_elem(&target_bits, &zero);
	if (b)
		__sync_fetch_and_or(&b->words[(pid / 32) & (TARGET_WORDS - 1)], 1u << (pid & 31));
}

/* Returns the target entry of the current process, or NULL: the bitmap
 * first, so the untraced path makes no hash lookup. */
static __always_inline struct target *current_target(u32 tgid)
{
	if (!maybe_target(tgid))
		return NULL;
	return bpf_map_lookup_elem(&targets, &tgid);
}

/* Returns the counters of key, creating them; NULL only when even the
 * overflow bucket (created by userspace before attach) is missing. */
static __always_inline struct counters *bucket(struct bucket_key *key)
{
	if (key->kind == BK_OP) {
		struct op_slot *s = op_slot(key->id);
		if (s)
			return &s->c;
		/* The op has ended: its slot is never taken again for it. */
		key->kind = BK_IDLE;
		key->id = 0;
	}
	struct counters *c = bpf_map_lookup_elem(&buckets, key);
	if (c)
		return c;
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

/* What charge() adds to: one counter (CF_NONE: none), and with RETAIN_*
 * flags the retained counters too. */
enum charge_field { CF_NONE, CF_MAPPED, CF_UNMAPPED, CF_WRITABLE, CF_ADVISED, CF_AB_ALLOC, CF_AB_FREED };
#define RETAIN 1        /* retained += bytes */
#define RETAIN_NATIVE 2 /* and retained_native */
#define RETAIN_HEAP 4   /* and retained_heap */

/* Adds bytes to counter f of key's bucket (created if need be; key may
 * turn from an ended op's to idle), and to its retained counters as
 * retain says. A global function, verified once, and the only way the syscall
 * and uprobe paths charge: bucket() answers with an op's slot or an
 * entry of `buckets`, pointers into two maps that the verifier does not
 * merge, so every path after an inlined charge was verified once per
 * kind (twice after one charge, four times after two: attach took four
 * times as long). */
__noinline int charge(struct bucket_key *key, u32 f, s64 bytes, u32 retain)
{
	if (!key)
		return 0;
	struct counters *c = bucket(key);
	if (!c)
		return 0;
	switch (f) {
	case CF_MAPPED:
		__sync_fetch_and_add(&c->mapped, bytes);
		break;
	case CF_UNMAPPED:
		__sync_fetch_and_add(&c->unmapped, bytes);
		break;
	case CF_WRITABLE:
		__sync_fetch_and_add(&c->made_writable, bytes);
		break;
	case CF_ADVISED:
		__sync_fetch_and_add(&c->advised_free, bytes);
		break;
	case CF_AB_ALLOC:
		__sync_fetch_and_add(&c->ab_alloc, bytes);
		break;
	case CF_AB_FREED:
		__sync_fetch_and_add(&c->ab_freed, bytes);
		break;
	}
	if (retain & RETAIN)
		__sync_fetch_and_add(&c->retained, bytes);
	if (retain & RETAIN_NATIVE)
		__sync_fetch_and_add(&c->retained_native, bytes);
	if (retain & RETAIN_HEAP)
		__sync_fetch_and_add(&c->retained_heap, bytes);
	return 0;
}

/* Turns key (the thread's own bucket) into its op's or idle, per the
 * thread's state ts (NULL: the thread's own). */
static __always_inline void current_bucket_of(struct bucket_key *key, struct thread_state *ts)
{
	if (!ts)
		return;
	if (ts->mode == TM_OP && op_slot(ts->op_id)) {
		key->kind = BK_OP;
		key->id = ts->op_id;
		return;
	}
	key->kind = BK_IDLE;
	key->id = 0;
}

/* Fills key with the bucket the current thread's activity is charged to:
 * its operation, the idle bucket, or its own. An operation that has ended
 * (its slot was freed) charges idle instead: op slots are claimed only by
 * op_begin, never by a late charge. */
static __always_inline void current_bucket(struct bucket_key *key, u32 tgid, u32 tid)
{
	key->tgid = tgid;
	key->kind = BK_THREAD;
	key->id = tid;
	struct thread_state *ts = current_thread_state();
	current_bucket_of(key, ts);
}

/* current_bucket for the hot paths (faults, RSS, mappings), which hold
 * the target t already: a process none of whose threads ever served an op
 * (TF_OPS clear) has no thread state to look up. */
static __always_inline void target_bucket(struct bucket_key *key, struct target *t, u32 tgid, u32 tid)
{
	key->tgid = tgid;
	key->kind = BK_THREAD;
	key->id = tid;
	if (!(t->flags & TF_OPS))
		return;
	struct thread_state *ts = current_thread_state();
	current_bucket_of(key, ts);
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

/* Saves p as the current thread's syscall arguments, until its exit;
 * returns the thread's slot (NULL when it could not be made). */
static __always_inline struct pending_slot *put_args(struct pending *p)
{
	struct pending_slot *slot = bpf_task_storage_get(&pending, bpf_get_current_task_btf(), 0,
							 BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!slot) {
		stat_inc(ST_PENDING_OVERFLOW);
		return NULL;
	}
	slot->p = *p;
	slot->valid = 1;
	slot->releasing = 0;
	return slot;
}

/* The target entry of the current thread's process (NULL: not traced),
 * and its ids: for the exits that read their syscall's arguments from the
 * registers (mmap, mremap, mprotect, the reads), which the syscall left as
 * the entry found them, so their entries need no handler and save
 * nothing. */
static __always_inline struct target *exit_target(u32 *tgid, u32 *tid)
{
	struct task_struct *task = bpf_get_current_task_btf();
	*tgid = task->tgid;
	*tid = task->pid;
	return bpf_map_lookup_elem(&targets, tgid);
}

/* Takes the saved arguments of the current thread into out; returns 1 when
 * there were some (the syscall was entered by a target thread). */
static __always_inline int take_args(struct pending *out, u32 *tgid, u32 *tid)
{
	struct task_struct *task = bpf_get_current_task_btf();
	*tgid = task->tgid;
	*tid = task->pid;
	struct pending_slot *slot = bpf_task_storage_get(&pending, task, 0, 0);
	if (!slot || !slot->valid)
		return 0;
	*out = slot->p;
	slot->valid = 0;
	slot->releasing = 0; /* the memory is given back */
	return 1;
}

#endif /* MEMDIAG_CORE_BPF_H */
