/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Mappings: the mmap family, brk, mprotect and madvise, and the region
 * table that remembers every mapping.
 *
 * mmap, munmap, mremap, brk, mprotect and madvise are paired enter -> exit
 * through `pending` and charged on success to the current bucket's
 * virtual-memory counters (mapped, unmapped, made writable, advised free).
 * Every mapping is remembered with its owner bucket and class in `regions`,
 * under the aligned chunk of its own size level where it starts: a mapping
 * of level L (2^(L-1) < len <= 2^L) starts in the 2^L-byte chunk
 * start >> L, which holds the starts of at most two mappings of that
 * level. So an mmap is one map insert and an munmap of a whole mapping
 * one lookup and one delete (the LPM trie before took up to 96 block
 * updates per mmap, 5 µs; a table by start plus a chunk index after it,
 * two to three of each), and the mapping that holds an address (a fault's
 * class, an unmap or mprotect of part of a mapping) is in the address's
 * chunk or the one before, at some level the process uses
 * (`region_levels`). An mmap without MAP_FIXED replaces nothing, so it
 * looks nothing up. Lookups come in runs through one mapping, so each CPU
 * keeps the last mapping a fault found and the last one a syscall found
 * (struct region_cache), good until a mapping next leaves the table
 * (`regions_epoch`).
 * A writable mapping counts as retained by its owner until it is given
 * back; a PROT_NONE reservation (V8, glibc arenas) does not, and a later
 * mprotect that makes part of a native reservation writable (a glibc arena
 * growing) becomes a mapping of its own, retained by the bucket current at
 * the commit. Commits and brk growth are a shared heap's growth (RG_HEAP,
 * counted apart in retained_heap): whoever needed fresh pages, not who
 * keeps what is in them; a writable mmap (RG_MAPPING: a large malloc chunk)
 * is kept as long as what was allocated in it. Unmapping (munmap, MAP_FIXED over a mapping, mremap, brk
 * shrinking) forgets the mappings, lowers their owners' retained bytes and
 * marks the thread as releasing (its `pending` slot), so the RSS it gives back is charged to
 * the owner (rss.bpf.h) — for an op that has ended, to its BK_FREED bucket —
 * and an op's transient buffer freed later by a GC nets out in the op's
 * category. madvise(DONTNEED/FREE/REMOVE) only names the class of what is
 * given back. Anonymous private mappings are classified by the code that
 * asked for them: from libc (`libc_ranges`) they are the native allocator's
 * (RC_NATIVE, external memory), else the runtime's.
 */
#ifndef MEMDIAG_MAPPINGS_BPF_H
#define MEMDIAG_MAPPINGS_BPF_H

/* struct region_key -> struct region_slots: every mapping made while
 * traced (and those found at attach), under the aligned chunk of its own
 * size level where it starts: one entry (usually) or one slot of an entry
 * per mapping, so an mmap is one insert and an munmap of a whole mapping
 * one lookup and one delete. Unmapping gives the memory back to whoever
 * mapped it (an op's transient buffer freed later by a GC nets out in the
 * op's category), and a fault is external when its mapping is the native
 * allocator's. 65536: vm.max_map_count's default is 65530 mappings per
 * process. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct region_key);
	__type(value, struct region_slots);
} regions SEC(".maps");

/* [0] -> the key of an entry of `regions` this CPU left empty (tgid 0:
 * none), kept for the next mapping of its chunk: a chunk freed is often
 * mapped again (malloc's large chunks, a runtime's pages), and an entry
 * kept is a slot claimed, not an element allocated and, after an RCU grace
 * period, freed. One per CPU: when the CPU empties another, this one goes. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct region_key);
} region_vacant SEC(".maps");

/* tgid -> bit L set when the process has (or had) a mapping of level L in
 * `regions`: containment lookups try only those levels. Bits are only
 * ever set (the kernel with an atomic or, userspace when it seeds).
 * 8192: as `targets`. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, u32);
	__type(value, u64);
} region_levels SEC(".maps");

/* The current thread's releasing state while it gives memory back, or
 * NULL: rss_stat reads it on every decrease of a target's RSS. */
static __always_inline struct releasing *current_releasing(void)
{
	struct pending_slot *slot = bpf_task_storage_get(&pending, bpf_get_current_task_btf(), 0, 0);
	return slot && slot->releasing ? &slot->rel : NULL;
}

/* tgid -> struct libc_range (userspace reads it from /proc/PID/maps; fork
 * copies it to the child). 8192: as `targets`. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, u32);
	__type(value, struct libc_range);
} libc_ranges SEC(".maps");

/* A mapping found in `regions`, kept for the next lookup on the same CPU:
 * lookups come in runs through one mapping (a fault's pages, V8's
 * madvise and mprotect inside one reservation), and the search costs two
 * entry lookups per level the process uses. It answers for tgid's image
 * r.gen (a mapping is keyed by the image it belongs to, so an exec makes
 * it miss) at any address inside r, while regions_epoch still reads
 * epoch: then the table is as it was when r was found, and the search
 * would find r again. */
struct region_cache {
	struct region r;
	u64 epoch;
	u32 tgid;
	u32 _pad;
};

/* The last user fault of the thread running on this CPU: {tid, address}.
 * rss_stat follows its fault on the same CPU, so this names the mapping a
 * new page went to without a per-thread table. */
struct last_fault {
	u32 tid;
	u32 tgid;
	u64 addr;
	u32 uncounted; /* 1: the fault is not yet in its thread's bucket */
	u32 _pad;
	/* The mapping the last fault that asked was found in: here, not in
	 * `last_regions`, so a fault's hit costs no lookup more, and faults and
	 * the syscalls between them do not evict each other's mapping. */
	struct region_cache cache;
};

/* [0] -> bumped after a mapping leaves the table in the kernel, and after
 * userspace changes it (seeding, forgetting a process), so a region_cache
 * knows when it may be stale (regions_changed). One counter. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} regions_epoch SEC(".maps");

/* [0] -> struct last_fault, per CPU: the CPU's last target fault and the
 * mapping it was found in. One entry per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct last_fault);
} last_faults SEC(".maps");

/* [0] -> struct region_cache, per CPU: the mapping the syscall paths
 * (mprotect, madvise, munmap of part of a mapping, mremap) last found
 * with region_find. One entry per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct region_cache);
} last_regions SEC(".maps");

#define PAGE_ALIGN(x) (((x) + 4095) & ~4095ULL)
#define IS_ERR_VALUE(x) ((u64)(x) >= (u64)-4095)

/* Adds bytes to one virtual-memory counter (enum charge_field) of the
 * current thread's bucket. */
static __always_inline void vm_charge(u32 tgid, u32 tid, u32 f, u64 bytes)
{
	if (!bytes)
		return;
	struct bucket_key key = {};
	current_bucket(&key, tgid, tid);
	charge(&key, f, bytes, 0);
}

/*
 * The region table: one hash entry per mapping, and the chunk index.
 */

/* Bits set in x, without branches (SWAR). */
static __always_inline u64 popcount64(u64 x)
{
	x = x - ((x >> 1) & 0x5555555555555555ULL);
	x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
	x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
	return (x * 0x0101010101010101ULL) >> 56;
}

#define MIN_LEVEL 12
#define MAX_LEVEL 57 /* 2^57: above any user address */

/* The level of a mapping of len bytes: the smallest L >= 12 with
 * 2^L >= len. */
static __always_inline u32 region_level(u64 len)
{
	if (len <= (1ULL << MIN_LEVEL))
		return MIN_LEVEL;
	u64 x = len - 1;
	x |= x >> 1;
	x |= x >> 2;
	x |= x >> 4;
	x |= x >> 8;
	x |= x >> 16;
	x |= x >> 32;
	u32 l = popcount64(x); /* bits below the top one, plus it: ceil(log2(len)) */
	return l > MAX_LEVEL ? MAX_LEVEL : l;
}

static __always_inline u64 chunk_of(u64 addr, u32 level)
{
	return ((addr >> level) << 6) | level;
}

/* The chunk before chunk, of the same level (~0 before the first). */
static __always_inline u64 chunk_before(u64 chunk)
{
	return chunk >= 64 ? chunk - 64 : ~0ULL;
}

/* Whether a slot holds a mapping (not free, not being written). */
static __always_inline int slot_live(const struct region *r)
{
	return r->len > REGION_CLAIMED;
}

/* Whether an entry's slots are all free. */
static __always_inline int slots_empty(const struct region_slots *s)
{
	for (int i = 0; i < REGION_SLOTS; i++)
		if (s->r[i].len)
			return 0;
	return 1;
}

/* The table's functions below are global (verified once each, not at
 * every call site: inlined, the unmap loop's paths multiply past the
 * verifier's limit). */

/* A mapping left the table: every region_cache is stale. Called once the
 * change is visible to a search (a lookup that read the epoch before then
 * either saw the change or caches under an epoch that is gone now). A
 * mapping added does not bump it: in a table that matches the process it
 * changes no answer (mappings do not overlap). The table can also keep a
 * mapping whose end memdiag did not see (an unmap that stopped at a gap
 * or after MAX_UNMAP_REGIONS, an mremap onto other mappings); a new
 * mapping over one of those at a lower level is what the search finds,
 * where a cache still gives the stale one, until the next mapping leaves
 * (munmaps are frequent). Bumping at every add cost more: V8 maps all
 * the time, every fault after it searched again, and a plain Node.js
 * server took ~1 us more CPU per request (BENCHMARKS.md, sixth round). */
static __always_inline void regions_changed(void)
{
	u32 zero = 0;
	u64 *epoch = bpf_map_lookup_elem(&regions_epoch, &zero);
	if (epoch)
		__sync_fetch_and_add(epoch, 1);
}

/* The epoch now: read before a search whose answer is cached. */
static __always_inline u64 regions_epoch_now(void)
{
	u32 zero = 0;
	u64 *epoch = bpf_map_lookup_elem(&regions_epoch, &zero);
	return epoch ? *epoch : 0;
}

/* The cached mapping if it answers for addr of tgid's image gen, else
 * NULL. */
static __always_inline struct region *region_cached(struct region_cache *c, u32 tgid, u32 gen, u64 epoch, u64 addr)
{
	if (c->tgid != tgid || c->r.gen != gen || c->epoch != epoch || addr - c->r.start >= c->r.len)
		return NULL;
	return &c->r;
}

/* Keeps r, found under epoch (read before the search), in c. */
static __always_inline void region_cache_fill(struct region_cache *c, u32 tgid, u64 epoch, const struct region *r)
{
	c->r = *r;
	c->epoch = epoch;
	c->tgid = tgid;
}

/* Frees the slot of the mapping that starts at start in the entry s of
 * key k; an entry left empty stays as this CPU's vacant one, and the one
 * kept before goes, if still empty. */
static __always_inline void slots_free(struct region_slots *s, struct region_key *k, u64 start)
{
	int used = 0;
	for (int i = 0; i < REGION_SLOTS; i++) {
		if (slot_live(&s->r[i]) && s->r[i].start == start)
			s->r[i].len = 0;
		else if (s->r[i].len)
			used = 1;
	}
	regions_changed();
	if (used)
		return;
	u32 zero = 0;
	struct region_key *vacant = bpf_map_lookup_elem(&region_vacant, &zero);
	if (!vacant) {
		bpf_map_delete_elem(&regions, k);
		return;
	}
	if (vacant->tgid && (vacant->tgid != k->tgid || vacant->gen != k->gen || vacant->chunk != k->chunk)) {
		struct region_key old = *vacant;
		struct region_slots *o = bpf_map_lookup_elem(&regions, &old);
		if (o && slots_empty(o))
			bpf_map_delete_elem(&regions, &old);
	}
	*vacant = *k;
}

/* Forgets the mapping [start, start + len) of tgid's image gen. Returns 0. */
__noinline int region_drop(u32 tgid, u32 gen, u64 start, u64 len)
{
	struct region_key k = { .tgid = tgid, .gen = gen, .chunk = chunk_of(start, region_level(len)) };
	struct region_slots *s = bpf_map_lookup_elem(&regions, &k);
	if (s)
		slots_free(s, &k, start);
	return 0;
}

/* Forgets the mapping of tgid's image gen that is exactly [start, start +
 * len), if the table has it, copying it into out first; returns 1 when it
 * did: an munmap of a whole mapping, in one lookup. */
__noinline int region_take(u32 tgid, u32 gen, u64 start, u64 len, struct region *out)
{
	if (!out)
		return 0;
	struct region_key k = { .tgid = tgid, .gen = gen, .chunk = chunk_of(start, region_level(len)) };
	struct region_slots *s = bpf_map_lookup_elem(&regions, &k);
	if (!s)
		return 0;
	for (int i = 0; i < REGION_SLOTS; i++) {
		if (slot_live(&s->r[i]) && s->r[i].start == start && s->r[i].len == len) {
			*out = s->r[i];
			slots_free(s, &k, start);
			return 1;
		}
	}
	return 0;
}

/* Stores the mapping r (NULL: nothing) in a slot of its chunk's entry: a
 * slot claimed in the existing one (often one kept vacant), or a new
 * entry with the slot filled. Mappings never overlap, so a slot
 * whose mapping overlaps r holds one whose end memdiag did not see: it is
 * taken over. Returns 0. */
__noinline int region_put(u32 tgid, struct region *r)
{
	if (!r || r->len <= REGION_CLAIMED)
		return 0;
	u32 level = region_level(r->len);
	struct region_key k = { .tgid = tgid, .gen = r->gen, .chunk = chunk_of(r->start, level) };
	struct region_key *key = &k;
	struct region_slots *s = bpf_map_lookup_elem(&regions, key);
	if (!s) {
		struct region_slots fresh = {};
		fresh.r[0] = *r;
		if (!bpf_map_update_elem(&regions, key, &fresh, BPF_NOEXIST))
			goto stored;
		s = bpf_map_lookup_elem(&regions, key); /* another thread's, just made */
		if (!s) {
			stat_inc(ST_REGION_OVERFLOW);
			return 0;
		}
	}
	u64 end = r->start + r->len;
	for (int i = 0; i < REGION_SLOTS; i++) {
		struct region *o = &s->r[i];
		u64 olen = o->len;
		if (olen > REGION_CLAIMED && o->start < end && r->start < o->start + olen) {
			__sync_val_compare_and_swap(&o->len, olen, 0); /* stale: free it */
			regions_changed();
		}
	}
	/* Claim a free slot (compare-and-swap of its len), write it, then
	 * publish its len: a reader skips a slot being written. */
	for (int i = 0; i < REGION_SLOTS; i++) {
		struct region *o = &s->r[i];
		if (o->len == 0 && __sync_val_compare_and_swap(&o->len, 0, REGION_CLAIMED) == 0) {
			o->start = r->start;
			o->owner = r->owner;
			o->class = r->class;
			o->counted = r->counted;
			o->gen = r->gen;
			barrier();
			o->len = r->len;
			goto stored;
		}
	}
	stat_inc(ST_REGION_OVERFLOW);
	return 0;
stored:;
	u64 bit = 1ULL << level;
	u64 *levels = bpf_map_lookup_elem(&region_levels, &tgid);
	if (!levels) {
		u64 none = 0;
		bpf_map_update_elem(&region_levels, &tgid, &none, BPF_NOEXIST);
		levels = bpf_map_lookup_elem(&region_levels, &tgid);
	}
	if (levels && !(*levels & bit))
		__sync_fetch_and_or(levels, bit);
	return 0;
}

/* The process's exec generation (0 when unknown). */
static __always_inline u32 exec_gen(u32 tgid)
{
	struct target *t = bpf_map_lookup_elem(&targets, &tgid);
	return t ? t->gen : 0;
}

/* Copies into out the mapping of chunk's entry that holds addr (exact:
 * that starts at addr); returns 1 when there is one. */
static __always_inline int slots_find(u32 tgid, u32 gen, u64 chunk, u64 addr, int exact, struct region *out)
{
	struct region_key k = { .tgid = tgid, .gen = gen, .chunk = chunk };
	struct region_slots *s = bpf_map_lookup_elem(&regions, &k);
	if (!s)
		return 0;
	for (int i = 0; i < REGION_SLOTS; i++) {
		struct region *o = &s->r[i];
		u64 start = o->start, len = o->len;
		if (len <= REGION_CLAIMED || start > addr || (exact ? start != addr : addr - start >= len))
			continue;
		*out = *o;
		/* A slot freed and claimed again while copied: not this one. */
		if (out->start != start || out->len != len)
			return 0;
		return 1;
	}
	return 0;
}

/* Copies into out the mapping of tgid's image gen that starts at start
 * and is len bytes long, if the table has it; returns 1 when it does. */
__noinline int region_exact(u32 tgid, u32 gen, u64 start, u64 len, struct region *out)
{
	if (!out)
		return 0;
	return slots_find(tgid, gen, chunk_of(start, region_level(len)), start, 1, out) && out->len == len;
}

struct find_ctx {
	struct region *out;
	u64 addr;
	u64 levels;
	u32 tgid;
	u32 gen;
	u32 found;
};

/* One level of region_find: bpf_loop callback, returns 1 to stop. */
static long find_step(u64 i, struct find_ctx *c)
{
	u32 level = MIN_LEVEL + (u32)i;
	if (level > MAX_LEVEL || !(c->levels >> level))
		return 1; /* no mapping of this level or above */
	if (!((c->levels >> level) & 1))
		return 0;
	u64 chunk = chunk_of(c->addr, level);
	if (slots_find(c->tgid, c->gen, chunk, c->addr, 0, c->out) ||
	    slots_find(c->tgid, c->gen, chunk_before(chunk), c->addr, 0, c->out)) {
		c->found = 1;
		return 1;
	}
	return 0;
}

/* Copies into out the mapping of tgid's image gen that holds addr;
 * returns 1 when there is one: two entry lookups per level the process
 * uses. Uncached: region_find and fault_class keep its answers. */
__noinline int region_search(u32 tgid, u32 gen, u64 addr, struct region *out)
{
	if (!out)
		return 0;
	u64 *levels = bpf_map_lookup_elem(&region_levels, &tgid);
	if (!levels)
		return 0;
	struct find_ctx c = { .out = out, .addr = addr, .levels = *levels, .tgid = tgid, .gen = gen };
	bpf_loop(MAX_LEVEL - MIN_LEVEL + 1, find_step, &c, 0);
	return c.found;
}

/* region_search through this CPU's last answer (`last_regions`): V8 calls
 * madvise and mprotect inside its large reservations many times a second,
 * each a search through every level below the reservation's. */
__noinline int region_find(u32 tgid, u32 gen, u64 addr, struct region *out)
{
	if (!out)
		return 0;
	u32 zero = 0;
	struct region_cache *rc = bpf_map_lookup_elem(&last_regions, &zero);
	u64 epoch = regions_epoch_now();
	struct region *hit = rc ? region_cached(rc, tgid, gen, epoch, addr) : NULL;
	if (hit) {
		*out = *hit;
		return 1;
	}
	if (!region_search(tgid, gen, addr, out))
		return 0;
	if (rc)
		region_cache_fill(rc, tgid, epoch, out);
	return 1;
}

/* Copies into out the mapping of the process's image gen that holds
 * addr; returns 1 when there is one. len is a guess of its length (the
 * range a syscall names usually is one whole mapping): one lookup when
 * right, else this CPU's last answer or a search through every level.
 * (The exact lookup comes first, as it did before the cache: where the
 * table holds two mappings over addr, one of them stale, the answer stays
 * the one that starts at addr and is len long.) */
static __always_inline int region_at_gen(u32 tgid, u32 gen, u64 addr, u64 len, struct region *out)
{
	if (len && region_exact(tgid, gen, addr, len, out))
		return 1;
	return region_find(tgid, gen, addr, out);
}

/* The class of the mapping this thread last faulted in, in the image gen
 * of process tgid. */
static __always_inline u32 fault_class(u32 tgid, u32 gen, u32 tid)
{
	u32 zero = 0;
	struct last_fault *lf = bpf_map_lookup_elem(&last_faults, &zero);
	if (!lf || lf->tid != tid)
		return RC_UNKNOWN;
	u64 epoch = regions_epoch_now();
	struct region *hit = region_cached(&lf->cache, tgid, gen, epoch, lf->addr);
	if (hit)
		return hit->class;
	struct region r;
	if (!region_search(tgid, gen, lf->addr, &r))
		return RC_UNKNOWN;
	region_cache_fill(&lf->cache, tgid, epoch, &r);
	return r.class;
}

/* The bucket a mapping's owner is credited through: an op that has ended
 * (its slot was freed) is credited through its BK_FREED bucket. */
static __always_inline void owner_key(struct bucket_key *owner)
{
	if (owner->kind == BK_OP && !op_slot(owner->id))
		owner->kind = BK_FREED;
}

/* Adds bytes (signed) to the retained counters of key, for a region
 * counted as counted (enum region_counted). */
static __always_inline void retain(struct bucket_key *key, u32 class, u32 counted, s64 bytes)
{
	charge(key, CF_NONE, bytes, RETAIN | (class == RC_NATIVE ? RETAIN_NATIVE : 0) | (counted == RG_HEAP ? RETAIN_HEAP : 0));
}

/* Records a new mapping [start, start + len) of class, owned by the
 * current thread's bucket, counted as counted (enum region_counted). Only
 * writable memory counts as retained: a PROT_NONE reservation (V8, glibc
 * arenas) is address space, not memory. */
static __always_inline void map_region(u32 tgid, u32 tid, u64 start, u64 len, u32 class, u32 counted)
{
	struct region r = { .start = start, .len = len, .class = class, .counted = counted, .gen = exec_gen(tgid) };
	current_bucket(&r.owner, tgid, tid);
	region_put(tgid, &r);
	if (counted)
		retain(&r.owner, class, counted, (s64)len);
}

/* How many mappings one unmap follows; the rest is counted. */
#define MAX_UNMAP_REGIONS 8

struct unmap_ctx {
	struct releasing *rel;
	u64 a;
	u64 b;
	u32 tgid;
	u32 gen; /* the process's current image */
	u32 done;
};

/* One mapping of unmap_range: bpf_loop callback, returns 1 to stop. */
static long unmap_step(u64 i, struct unmap_ctx *c)
{
	if (c->a >= c->b) {
		c->done = 1;
		return 1;
	}
	/* The first mapping holds a (and is usually all of [a, b)); the
	 * next ones start where the last one ended, or there is a gap. */
	struct region r;
	if (i == 0 && region_take(c->tgid, c->gen, c->a, c->b - c->a, &r)) {
		/* The whole of one mapping: taken out already. */
	} else if (region_find(c->tgid, c->gen, c->a, &r) && (i == 0 || r.start == c->a)) {
		region_drop(c->tgid, r.gen, r.start, r.len);
	} else {
		c->done = 1;
		return 1; /* a gap: what follows was mapped before tracing */
	}
	u64 end = r.start + r.len;
	u64 lo = c->a > r.start ? c->a : r.start, hi = c->b < end ? c->b : end;
	if (r.start < lo) {
		struct region left = r;
		left.len = lo - r.start;
		region_put(c->tgid, &left);
	}
	if (hi < end) {
		struct region right = r;
		right.start = hi;
		right.len = end - hi;
		region_put(c->tgid, &right);
	}
	if (i == 0)
		c->rel->class = r.class;
	if (r.owner.kind) {
		struct bucket_key owner = r.owner;
		owner_key(&owner);
		if (hi > lo && r.counted)
			retain(&owner, r.class, r.counted, -(s64)(hi - lo));
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
static __always_inline void unmap_range(u32 tgid, u32 gen, u64 a, u64 b, struct releasing *rel)
{
	rel->credit_owner = 0;
	struct unmap_ctx c = { .rel = rel, .a = a, .b = b, .tgid = tgid, .gen = gen };
	bpf_loop(MAX_UNMAP_REGIONS, unmap_step, &c, 0);
	if (!c.done && c.a < c.b)
		stat_inc(ST_UNMAP_SPLIT);
}

#define PROT_WRITE 0x2
#define MAP_SHARED 0x01
#define MAP_FIXED 0x10
#define MAP_ANONYMOUS 0x20
#define MAP_GROWSDOWN 0x100
#define MAP_STACK 0x20000

/* The user return address at syscall entry: [sp] is where the libc
 * wrapper (a leaf) returns to, i.e. the code that asked for the mapping. */
static __always_inline u64 syscall_caller(void)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	u64 ret = 0;
	/* A trusted pointer: the stack pointer is a direct load. */
	if (bpf_probe_read_user(&ret, sizeof(ret), (void *)PT_REGS_SP(regs)))
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

/* The class of a new mapping, from how it is asked for (caller: the code
 * that asked, for an anonymous private one). */
static __always_inline u32 mmap_class(u32 tgid, u64 flags, s32 fd, u64 caller)
{
	if (!(flags & MAP_ANONYMOUS) && fd >= 0)
		return RC_FILE;
	if (flags & (MAP_STACK | MAP_GROWSDOWN))
		return RC_STACK;
	if (flags & MAP_SHARED)
		return RC_SHARED;
	return anon_class(tgid, caller);
}

static __noinline int on_exit_mmap(struct pt_regs *regs, s64 ret)
{
	u32 tgid, tid;
	struct target *t = exit_target(&tgid, &tid);
	if (!t || IS_ERR_VALUE(ret))
		return 0;
	u64 start = (u64)ret, len = PAGE_ALIGN(PT_REGS_PARM2_SYSCALL(regs)), flags = PT_REGS_PARM4_SYSCALL(regs);
	struct region r = {
		.start = start,
		.len = len,
		.class = mmap_class(tgid, flags, (s32)PT_REGS_PARM5_SYSCALL(regs), syscall_caller()),
		.counted = PT_REGS_PARM3_SYSCALL(regs) & PROT_WRITE ? RG_MAPPING : RG_UNCOUNTED,
		.gen = t->gen,
	};
	/* One bucket for the charge and the new mapping's owner. */
	target_bucket(&r.owner, t, tgid, tid);
	charge(&r.owner, CF_MAPPED, len,
	       r.counted ? RETAIN | (r.class == RC_NATIVE ? RETAIN_NATIVE : 0) : 0);
	/* MAP_FIXED over an old mapping replaces it; without MAP_FIXED the
	 * kernel never places a mapping over another, so there is nothing
	 * to look for. */
	if (flags & MAP_FIXED) {
		struct releasing rel = {};
		unmap_range(tgid, r.gen, start, start + len, &rel);
	}
	region_put(tgid, &r);
	return 0;
}

/* Marks the thread, whose syscall's arguments are in slot, as giving back
 * [a, b) until the syscall's exit (take_args): forgets those mappings and
 * remembers, for the RSS decreases to come, whose they were. */
static __always_inline void release_begin(struct pending_slot *slot, u32 tgid, u32 gen, u64 a, u64 b, int forget)
{
	struct releasing rel = {};
	if (forget) {
		unmap_range(tgid, gen, a, b, &rel);
	} else {
		struct region r;
		if (!region_at_gen(tgid, gen, a, b - a, &r))
			return;
		rel.class = r.class; /* madvise: only what it held, not whose */
	}
	if (!slot)
		return;
	slot->rel = rel;
	slot->releasing = 1;
}

static __noinline int on_enter_munmap(struct tp_sys_enter *ctx)
{
	u32 tgid = bpf_get_current_task_btf()->tgid;
	struct target *t = current_target(tgid);
	if (!t)
		return 0;
	struct pending p = { .args = { ctx->args[0], ctx->args[1] } };
	release_begin(put_args(&p), tgid, t->gen, ctx->args[0], ctx->args[0] + PAGE_ALIGN(ctx->args[1]), 1);
	return 0;
}

static __noinline int on_exit_munmap(s64 ret)
{
	struct pending p;
	u32 tgid, tid;
	if (!take_args(&p, &tgid, &tid))
		return 0;
	if (ret != 0)
		return 0;
	vm_charge(tgid, tid, CF_UNMAPPED, PAGE_ALIGN(p.args[1]));
	return 0;
}

static __noinline int on_exit_mremap(struct pt_regs *regs, s64 ret)
{
	u32 tgid, tid;
	struct target *t = exit_target(&tgid, &tid);
	if (!t || IS_ERR_VALUE(ret))
		return 0;
	u64 old = PT_REGS_PARM1_SYSCALL(regs), old_len = PAGE_ALIGN(PT_REGS_PARM2_SYSCALL(regs)),
	    new_len = PAGE_ALIGN(PT_REGS_PARM3_SYSCALL(regs));
	if (new_len > old_len)
		vm_charge(tgid, tid, CF_MAPPED, new_len - old_len);
	else
		vm_charge(tgid, tid, CF_UNMAPPED, old_len - new_len);
	/* The mapping moved or resized: it keeps its class; the part that
	 * grew is the current thread's. */
	u32 gen = t->gen;
	struct region moved = {};
	int found = region_at_gen(tgid, gen, old, old_len, &moved);
	u32 class = moved.class;
	struct releasing rel = {};
	unmap_range(tgid, gen, old, old + old_len, &rel);
	u64 start = (u64)ret;
	if (found) {
		moved.start = start;
		moved.len = new_len < old_len ? new_len : old_len;
		region_put(tgid, &moved);
		if (moved.owner.kind && moved.counted) {
			struct bucket_key owner = moved.owner;
			owner_key(&owner);
			retain(&owner, class, moved.counted, (s64)moved.len);
		}
	}
	if (new_len > old_len)
		map_region(tgid, tid, start + old_len, new_len - old_len, class, moved.counted);
	return 0;
}

static __noinline int on_enter_brk(struct tp_sys_enter *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	struct target *t = current_target(id >> 32);
	if (!t)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct pending p = {};
	p.args[0] = BPF_CORE_READ(task, mm, brk); /* the break before the call */
	struct pending_slot *slot = put_args(&p);
	if (ctx->args[0] && PAGE_ALIGN(ctx->args[0]) < PAGE_ALIGN(p.args[0])) {
		/* Shrinking the heap gives native memory back. */
		u32 tgid = id >> 32;
		release_begin(slot, tgid, t->gen, PAGE_ALIGN(ctx->args[0]), PAGE_ALIGN(p.args[0]), 1);
	}
	return 0;
}

static __noinline int on_exit_brk(s64 ret)
{
	struct pending p;
	u32 tgid, tid;
	if (!take_args(&p, &tgid, &tid))
		return 0;
	/* brk returns the new break, or the old one on failure. */
	u64 before = PAGE_ALIGN(p.args[0]), after = PAGE_ALIGN((u64)ret);
	if (after > before) {
		vm_charge(tgid, tid, CF_MAPPED, after - before);
		map_region(tgid, tid, before, after - before, RC_NATIVE, RG_HEAP); /* the brk heap is malloc's */
	} else {
		vm_charge(tgid, tid, CF_UNMAPPED, before - after);
	}
	return 0;
}


static __noinline int on_exit_mprotect(struct pt_regs *regs, s64 ret)
{
	if (ret != 0 || !(PT_REGS_PARM3_SYSCALL(regs) & PROT_WRITE))
		return 0;
	u32 tgid, tid;
	struct target *t = exit_target(&tgid, &tid);
	if (!t)
		return 0;
	u64 a = PT_REGS_PARM1_SYSCALL(regs), len = PAGE_ALIGN(PT_REGS_PARM2_SYSCALL(regs));
	vm_charge(tgid, tid, CF_WRITABLE, len);
	/* A commit: part of a reservation (PROT_NONE, not counted) made
	 * writable — glibc arenas grow this way, V8 commits its pages so. It
	 * becomes a mapping of its own, owned by the current bucket and
	 * retained by it until given back. Only the native allocator's
	 * (glibc arenas): a runtime that commits its own pages (V8) reuses
	 * them, and its heap is measured by its sampler. A range already
	 * writable (W^X flips) changes no owner. */
	u32 gen = t->gen;
	struct region r;
	if (!region_at_gen(tgid, gen, a, len, &r) || r.counted || r.class != RC_NATIVE || a + len > r.start + r.len)
		return 0;
	u32 class = r.class;
	struct releasing rel = {};
	unmap_range(tgid, gen, a, a + len, &rel);
	map_region(tgid, tid, a, len, class, RG_HEAP);
	return 0;
}

#define MADV_DONTNEED 4
#define MADV_FREE 8
#define MADV_REMOVE 9

static __noinline int on_enter_madvise(struct tp_sys_enter *ctx)
{
	u32 tgid = bpf_get_current_task_btf()->tgid;
	struct target *t = current_target(tgid);
	if (!t)
		return 0;
	struct pending p = { .args = { ctx->args[0], ctx->args[1], ctx->args[2] } };
	struct pending_slot *slot = put_args(&p);
	u64 advice = ctx->args[2];
	if (advice == MADV_DONTNEED || advice == MADV_FREE || advice == MADV_REMOVE)
		release_begin(slot, tgid, t->gen, ctx->args[0], ctx->args[0] + PAGE_ALIGN(ctx->args[1]), 0);
	return 0;
}

static __noinline int on_exit_madvise(s64 ret)
{
	struct pending p;
	u32 tgid, tid;
	if (!take_args(&p, &tgid, &tid))
		return 0;
	if (ret != 0)
		return 0;
	u64 advice = p.args[2];
	if (advice == MADV_DONTNEED || advice == MADV_FREE || advice == MADV_REMOVE)
		vm_charge(tgid, tid, CF_ADVISED, PAGE_ALIGN(p.args[1]));
	return 0;
}

#endif /* MEMDIAG_MAPPINGS_BPF_H */
