/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Uprobes, attached for the target pids only (each hit is a trap: 7 µs
 * for an entry, 11 µs with the return, measured on the development VM):
 * --tls (llhttp_execute in a Node binary, or OpenSSL's SSL_read/SSL_read_ex
 * in the libssl a process maps: requests on TLS sockets), --exact-external
 * (Node's ArrayBuffer allocator), --native-heap (libc's malloc family),
 * and runtime heap sampling (V8's SamplingHeapProfiler, Go's memory
 * profiler: rare hits, one per sample). The programs read registers
 * through bpf_tracing.h's PT_REGS_* macros (C calling convention) and
 * GO_REGS_* below (Go's); memdiag is built for amd64 only (gen.go), and
 * another architecture fails to compile here.
 */
#ifndef MEMDIAG_UPROBES_BPF_H
#define MEMDIAG_UPROBES_BPF_H

/* Go's register ABI (ABIInternal): integer arguments in AX, BX, CX, DI,
 * ... on amd64, not the C convention PT_REGS_PARM* reads. */
#if defined(__TARGET_ARCH_x86)
#define GO_REGS_PARM1(x) ((x)->rax)
#define GO_REGS_PARM2(x) ((x)->rbx)
#define GO_REGS_PARM3(x) ((x)->rcx)
#else
#error "uprobes.bpf.h: Go's argument registers are given for amd64 only"
#endif

/* Heap sampling (V8): tgid -> samples seen since sampling started. The
 * n-th hit of SampleObject is the sample V8 numbers n (its ordinal);
 * userspace deletes the entry before it starts sampling. 1024: far more
 * sampled Node processes than one attach has. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, u32);
	__type(value, u64);
} v8_samples SEC(".maps");

/* Offset of `kind` in the Go runtime's struct special (next *special,
 * offset uintptr, kind byte: 16 since Go 1.24). */
volatile const u32 go_special_kind_off = 16;

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
 * (Allocate entry -> return). 16384: far more threads than take part in ops. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, u64);
} ab_pending SEC(".maps");

/* Exact mode: tgid -> ArrayBuffer bytes live (allocated while traced,
 * minus those freed). 8192: as `targets`. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, u32);
	__type(value, s64);
} ab_live SEC(".maps");

/* The cleartext of len bytes at data, read from the TLS socket the thread
 * read last (tls_reads): starts an op when it begins a request, as a read
 * of the same bytes would on a plain socket. Returns 0. */
static __always_inline int tls_cleartext(u32 tgid, u32 tid, u64 data, s64 len)
{
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
	u64 head = 0;
	if (len < 8 || bpf_probe_read_user(&head, sizeof(head), (void *)data) || !looks_like_request(head))
		return 0;
	op_begin(s, tgid, tid, k.fd, OP_HTTP_SERVER, data, len, 0, 0);
	if (len > OP_DATA_LEN - 8 && s->op_id)
		emit_op_data(tgid, tid, s->op_id, k.fd, DATA_REST, data + OP_DATA_LEN - 8, len - (OP_DATA_LEN - 8));
	return 0;
}

/* llhttp_execute(parser, data, len) in the target's node binary (--tls):
 * the cleartext of a request read on a TLS socket, which the syscalls only
 * see encrypted. Attached for the target's pid only: each call traps. */
SEC("uprobe.multi")
int on_llhttp_execute(struct pt_regs *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32, tid = (u32)id;
	if (!current_target(tgid))
		return 0;
	return tls_cleartext(tgid, tid, PT_REGS_PARM2(ctx), (s64)PT_REGS_PARM3(ctx));
}

/* --tls on a process that maps OpenSSL's libssl (Python, Ruby, nginx…):
 * SSL_read(ssl, buf, num) returns the bytes read; SSL_read_ex(ssl, buf,
 * num, &readbytes) returns 1 and stores them. The entry saves buf (and
 * &readbytes), the return hands the cleartext over. Two traps per call;
 * attached for the target's pid only. */
struct ssl_read_args {
	u64 buf;
	u64 readbytes; /* SSL_read_ex's size_t *, 0 for SSL_read */
};

/* tid -> the SSL_read(_ex) in flight. 16384: far more threads than take part in ops. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, struct ssl_read_args);
} ssl_reads SEC(".maps");

static __always_inline int ssl_read_enter(u64 buf, u64 readbytes)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!current_target(id >> 32))
		return 0;
	u32 tid = (u32)id;
	struct ssl_read_args a = { .buf = buf, .readbytes = readbytes };
	if (bpf_map_update_elem(&ssl_reads, &tid, &a, BPF_ANY))
		stat_inc(ST_PENDING_OVERFLOW);
	return 0;
}

SEC("uprobe.multi")
int on_ssl_read(struct pt_regs *ctx) { return ssl_read_enter(PT_REGS_PARM2(ctx), 0); }

SEC("uprobe.multi")
int on_ssl_read_ex(struct pt_regs *ctx) { return ssl_read_enter(PT_REGS_PARM2(ctx), PT_REGS_PARM4(ctx)); }

SEC("uretprobe.multi")
int on_ssl_read_return(struct pt_regs *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32, tid = (u32)id;
	struct ssl_read_args *a = bpf_map_lookup_elem(&ssl_reads, &tid);
	if (!a)
		return 0;
	struct ssl_read_args args = *a;
	bpf_map_delete_elem(&ssl_reads, &tid);
	s64 n = (s32)PT_REGS_RC(ctx);
	if (args.readbytes) {
		u64 got = 0;
		if (n != 1 || bpf_probe_read_user(&got, sizeof(got), (void *)args.readbytes))
			return 0;
		n = (s64)got;
	}
	if (n <= 0)
		return 0;
	return tls_cleartext(tgid, tid, args.buf, n);
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
int on_ab_allocate(struct pt_regs *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!current_target(id >> 32))
		return 0;
	u32 tid = (u32)id;
	u64 size = PT_REGS_PARM2(ctx); /* (this, size) */
	bpf_map_update_elem(&ab_pending, &tid, &size, BPF_ANY);
	return 0;
}

SEC("uretprobe.multi")
int on_ab_allocate_ret(struct pt_regs *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32, tid = (u32)id;
	u64 *pending_size = bpf_map_lookup_elem(&ab_pending, &tid);
	if (!pending_size)
		return 0;
	u64 size = *pending_size;
	bpf_map_delete_elem(&ab_pending, &tid);
	u64 ptr = PT_REGS_RC(ctx);
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
	charge(&a.owner, CF_AB_ALLOC, size, 0);
	ab_live_add(tgid, (s64)size);
	return 0;
}

/* Credits the free of ptr to the bucket that allocated it, if it was
 * followed. */
static __always_inline int ab_free(u32 tgid, u64 ptr)
{
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
	charge(&owner, CF_AB_FREED, asize, 0);
	ab_live_add(tgid, -(s64)asize);
	return 0;
}

SEC("uprobe.multi")
int on_ab_free(struct pt_regs *ctx)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!current_target(tgid))
		return 0;
	return ab_free(tgid, PT_REGS_PARM2(ctx)); /* (this, data, size): the size is the allocation's */
}

/*
 * Native heap (--native-heap): uprobes on malloc, calloc, realloc (entry
 * and return) and free (entry) in the libc the target maps, for the target
 * pid only, into the same table as exact mode (the two are exclusive).
 * Every call traps, so this is a diagnosis mode: it costs what heaptrack or
 * bcc's memleak cost. To keep the table and the map work small, an
 * allocation of at least NATIVE_SAMPLE bytes is always followed and a
 * smaller one with probability size / NATIVE_SAMPLE, counted as
 * NATIVE_SAMPLE bytes: the sum stays an unbiased estimate of the bytes
 * allocated, and freed, per bucket.
 */
#define NATIVE_SAMPLE 4096

/* Notes an allocation of size bytes in flight on this thread, when it is
 * sampled; the return probe takes it. */
static __always_inline int native_pending(u64 size)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!current_target(id >> 32) || size == 0)
		return 0;
	if (size < NATIVE_SAMPLE) {
		if (bpf_get_prandom_u32() % NATIVE_SAMPLE >= size)
			return 0;
		size = NATIVE_SAMPLE;
	}
	u32 tid = (u32)id;
	bpf_map_update_elem(&ab_pending, &tid, &size, BPF_ANY);
	return 0;
}

/* malloc(size) */
SEC("uprobe.multi")
int on_malloc(struct pt_regs *ctx)
{
	return native_pending(PT_REGS_PARM1(ctx));
}

/* calloc(n, size). Factors of 4 GiB and more are not followed (an
 * overflowing product fails in libc; the check stays free of a 128-bit
 * multiply the verifier refuses). */
SEC("uprobe.multi")
int on_calloc(struct pt_regs *ctx)
{
	u64 n = PT_REGS_PARM1(ctx), size = PT_REGS_PARM2(ctx);
	if (n >> 32 || size >> 32)
		return 0;
	return native_pending(n * size);
}

/* realloc(ptr, size): the old block is freed, the new one is the
 * reallocating op's (a block that moves, or grows in place, is then kept
 * by whoever made it grow). realloc(ptr, 0) is a free. */
SEC("uprobe.multi")
int on_realloc(struct pt_regs *ctx)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!current_target(tgid))
		return 0;
	ab_free(tgid, PT_REGS_PARM1(ctx));
	return native_pending(PT_REGS_PARM2(ctx));
}

/* free(ptr) */
SEC("uprobe.multi")
int on_free(struct pt_regs *ctx)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!current_target(tgid))
		return 0;
	return ab_free(tgid, PT_REGS_PARM1(ctx));
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
int on_v8_sample(struct pt_regs *ctx)
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
	return heap_sample(HR_V8, n, PT_REGS_PARM2(ctx), PT_REGS_PARM3(ctx));
}

/* runtime.mProf_Malloc(mp *m, p unsafe.Pointer, size uintptr), Go's
 * register ABI: AX, BX, CX. */
SEC("uprobe.multi")
int on_go_malloc(struct pt_regs *ctx)
{
	if (!current_target(bpf_get_current_pid_tgid() >> 32))
		return 0;
	return heap_sample(HR_GO, 0, GO_REGS_PARM2(ctx), GO_REGS_PARM3(ctx));
}

#define GO_KIND_SPECIAL_PROFILE 4

/* runtime.freeSpecial(s *special, p unsafe.Pointer, size uintptr): a
 * profiled object's record is freed with the object (other specials, such
 * as finalizers, are not frees). */
SEC("uprobe.multi")
int on_go_free_special(struct pt_regs *ctx)
{
	if (!current_target(bpf_get_current_pid_tgid() >> 32))
		return 0;
	u8 kind = 0;
	if (bpf_probe_read_user(&kind, sizeof(kind), (void *)(GO_REGS_PARM1(ctx) + go_special_kind_off)))
		return 0;
	if (kind != GO_KIND_SPECIAL_PROFILE)
		return 0;
	return heap_note(EV_HEAP_FREE, HR_GO, GO_REGS_PARM2(ctx));
}

/* runtime.gcMarkTermination: one GC cycle ended (once per cycle). */
SEC("uprobe.multi")
int on_go_gc(struct pt_regs *ctx)
{
	if (!current_target(bpf_get_current_pid_tgid() >> 32))
		return 0;
	return heap_note(EV_GC_CYCLE, HR_GO, 0);
}

#endif /* MEMDIAG_UPROBES_BPF_H */
