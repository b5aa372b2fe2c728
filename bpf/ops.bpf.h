/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Operations: sockets and the HTTP op state machine. The thread's current
 * op lives in `thread_states` (core.bpf.h); this part moves it.
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
 * A client socket connected while the thread serves an op belongs to that
 * op (SF_BOUND: its first write is the op's even from another op's loop
 * turn), and closing a call made inside another op ends nothing
 * (SF_JOINED). A socket the target knew before attach is learned at its
 * first request (reads) or first request written (writes, peer read from
 * the kernel socket). A served socket whose first bytes are a TLS
 * handshake is marked SF_TLS; its requests are named by the llhttp uprobe
 * (uprobes.bpf.h, --tls).
 *
 * Pipelined HTTP/1.1: a read may bring several requests. The op begun by
 * the read is the first request's; Go gets the read's bytes (OP_BEGIN's
 * data, then EV_OP_DATA DATA_REST for the rest, bounded) and queues the
 * requests after the first. A response written on a socket that already
 * responded, with no request read since, is the next pipelined request's:
 * it begins an OP_HTTP_PIPELINED op there, which Go names from its queue,
 * in order. A later read that starts with a request while the op has not
 * responded yet sends its bytes too (DATA_REQUESTS).
 *
 * HTTP/2 (h2c, prior knowledge): a served socket whose first bytes are the
 * connection preface is marked SF_H2 and every read on it is walked frame
 * by frame (bpf_loop, at most MAX_FRAMES per read; `frame_skip` carries a
 * frame that continues into the next read). A HEADERS frame on a client
 * stream id above every one seen opens a stream: an OP_H2_STREAM op whose
 * data is the frame, header first, for Go's HPACK decoder. Other HEADERS
 * (trailers) and CONTINUATION frames go to Go as DATA_H2_HEADERS so the
 * decoder's dynamic table stays in step. A stream's op lasts until the
 * next stream opens on its connection, or close: streams that run at once
 * share the time between them as their reads and writes interleave. A
 * frame header split across reads loses the frame boundaries: the socket
 * is marked SF_FRAMES_LOST (ST_FRAMES_LOST) and opens no more streams.
 *
 * WebSocket: a served socket whose response was 101 Switching Protocols
 * is marked SF_WS; its reads are walked the same way as WebSocket frames,
 * and every text or binary frame from the client begins an OP_WS_MESSAGE
 * op (continuations and control frames are the current message's). Go
 * names it after the connection's upgrade request, so messages are ops
 * of the connection's category. A read that brings several messages
 * begins one op each; what the server does with them is charged to the
 * last (one loop turn handles them all).
 *
 * Ops end at the next request (or call) on their socket, or at close; a
 * close by the op's own callback ends it when the thread is back in its
 * poll (thread_state.end_fd). Op ids come from `op_ids`; OP_BEGIN carries
 * the first OP_DATA_LEN bytes to Go (the kernel only checks they start
 * with an HTTP method), OP_END the op's final counters, taken out of
 * `buckets`.
 */
#ifndef MEMDIAG_OPS_BPF_H
#define MEMDIAG_OPS_BPF_H

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

/* tid -> fd of the TLS socket the thread read last: the cleartext that
 * Node's HTTP parser gets next (uprobe on llhttp_execute, --tls) came from
 * it. Deleted at thread exit; 16384: far more threads than take part in ops. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, s32);
} tls_reads SEC(".maps");

/* Local ports whose accepted connections are memdiag's own (the Node
 * inspector it samples the heap through): port (host order) -> 1. 16:
 * one inspector per sampled process, a few at once. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, u16);
	__type(value, u8);
} ignored_ports SEC(".maps");

/* [0] -> the last op sequence number handed out: an op's id is its
 * sequence number and its slot (op_claim), unique across processes. One
 * counter. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} op_ids SEC(".maps");

/* Fills the OP_END record e for op_id with the op's final counters, taken
 * out of its slot, which is freed. A slot already freed leaves has_final
 * 0. (A charge racing the copy on another CPU can be lost; ops run on one
 * thread at a time, so this is rare and small.) */
static __always_inline void take_final(struct op_end_event *e, u64 op_id, s32 fd, u32 reason)
{
	e->op_id = op_id;
	e->fd = fd;
	e->reason = reason;
	e->has_final = 0;
	e->_pad = 0;
	struct op_slot *slot = op_slot(op_id);
	if (slot) {
		__builtin_memcpy(&e->final, &slot->c, sizeof(e->final));
		e->has_final = 1;
		op_slot_free(slot, (u32)op_id & op_slot_mask);
	} else {
		__builtin_memset(&e->final, 0, sizeof(e->final));
	}
}

/* Sends OP_END for op_id. When the ring is full the bucket stays:
 * userspace finds it in a snapshot and ends the op itself, so no byte is
 * lost with the record. */
static __always_inline void emit_op_end(u32 tgid, u32 tid, u64 op_id, s32 fd, u32 reason)
{
	struct op_end_event *e = event_reserve(sizeof(*e), EV_OP_END, tgid, tid);
	if (!e)
		return;
	take_final(e, op_id, fd, reason);
	submit(e);
}

/* Sends EV_OP_DATA with the len bytes at buf (at most OP_MORE_LEN) of the
 * socket fd whose op is op_id. */
static __always_inline void emit_op_data(u32 tgid, u32 tid, u64 op_id, s32 fd, u32 what, u64 buf, s64 len)
{
	if (!buf || len <= 0)
		return;
	struct op_data_event *e = event_reserve(sizeof(*e), EV_OP_DATA, tgid, tid);
	if (!e)
		return;
	e->op_id = op_id;
	e->fd = fd;
	e->what = what;
	e->_pad = 0;
	u64 n = (u64)len;
	if (n > OP_MORE_LEN)
		n = OP_MORE_LEN;
	asm volatile("" : "+r"(n));
	n &= 2 * OP_MORE_LEN - 1;
	if (n > OP_MORE_LEN)
		n = OP_MORE_LEN;
	e->data_len = 0;
	if (n > 0 && !bpf_probe_read_user(e->data, n, (void *)buf))
		e->data_len = n;
	submit(e);
}

/* Sends the END_CLOSE the thread owes, if any: its op's socket was closed
 * by the op's own callback (thread_state.end_fd), and the op ends when the
 * thread moves on — to its poll, another op, or idle. */
static __always_inline void end_owed(struct thread_state *ts, u32 tgid, u32 tid)
{
	if (ts->mode == TM_OP && ts->end_fd) {
		emit_op_end(tgid, tid, ts->op_id, (s32)ts->end_fd - 1, END_CLOSE);
		ts->end_fd = 0;
	}
}

/* Makes op_id (or idle) the current thread's charge, in its state cur.
 * An op whose socket closed under the thread ends when the thread moves
 * on (end_owed). */
static __always_inline void set_thread_state(struct thread_state *cur, u32 tgid, u32 tid, u32 mode, u64 op_id)
{
	if (cur->mode == mode && cur->op_id == op_id)
		return;
	end_owed(cur, tgid, tid);
	int first = cur->mode == 0;
	cur->op_id = op_id;
	cur->mode = mode;
	if (first) {
		/* From now on the fault and RSS paths look threads up. */
		struct target *t = bpf_map_lookup_elem(&targets, &tgid);
		if (t && !(t->flags & TF_OPS))
			__sync_fetch_and_or(&t->flags, TF_OPS);
	}
}

/* set_thread_state for the current thread, whose state is made if it has
 * none; returns the state (NULL when it could not be made). */
static __always_inline struct thread_state *set_thread(u32 tgid, u32 tid, u32 mode, u64 op_id)
{
	struct thread_state *cur = bpf_task_storage_get(&thread_states, bpf_get_current_task_btf(), 0,
							BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!cur) {
		stat_inc(ST_THREAD_OVERFLOW);
		return NULL;
	}
	set_thread_state(cur, tgid, tid, mode, op_id);
	return cur;
}

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

/* What op_begin_global needs besides the socket: BPF functions take at
 * most five arguments, and a global one checks its pointers' sizes. */
struct op_start {
	u64 buf;     /* the first bytes, in user memory (0: none) */
	s64 len;     /* how many of them are valid */
	u64 pre;     /* bytes read alone before (pre_len of them, at most 7) */
	u32 pre_len;
	u32 kind;    /* enum op_kind */
	u32 tgid;
	u32 tid;
	s32 fd;
	u32 _pad;
};

/* Takes slot idx for op id (sequence seq) if it is free; returns the
 * op's id, 0 when it was held. */
static __always_inline u64 op_take(u32 idx, u64 seq, u32 tgid, u64 now)
{
	idx &= op_slot_mask;
	struct op_slot *slot = bpf_map_lookup_elem(&op_slots, &idx);
	u64 op_id = (seq << OP_SLOT_BITS) | idx;
	if (!slot || slot->op_id || __sync_val_compare_and_swap(&slot->op_id, 0, op_id))
		return 0;
	/* Nobody charges an id not handed out yet: the slot is this op's to
	 * fill. */
	slot->tgid = tgid;
	__builtin_memset(&slot->c, 0, sizeof(slot->c));
	slot->c.first_ns = now;
	return op_id;
}

/* Claims a free slot for a new op, started at now, of process tgid: the
 * slot want (plus one; 0: none) first — the slot its connection's
 * previous op just freed — then the one this CPU freed last, then slots
 * spread over the table (the sequence number scattered, Fibonacci
 * hashing: ops begun together and kept, a burst of keep-alive
 * connections, do not hold a run the next probes all fall on). Returns
 * the op's id, 0 when every slot tried was held (the op's activity stays
 * idle). A global function, verified once: inlined, the rest of
 * op_begin_global was verified once per try that can succeed. */
__noinline u64 op_claim(u32 tgid, u64 now, u32 want)
{
	u32 zero = 0;
	u64 *next = bpf_map_lookup_elem(&op_ids, &zero);
	if (!next)
		return 0;
	u64 seq = __sync_fetch_and_add(next, 1) + 1;
	u64 op_id;
	if (want && (op_id = op_take(want - 1, seq, tgid, now)))
		return op_id;
	u32 *freed = bpf_map_lookup_elem(&op_slot_freed, &zero);
	if (freed && *freed && *freed != want && (op_id = op_take(*freed - 1, seq, tgid, now)))
		return op_id;
	for (u32 i = 0; i < OP_CLAIM_TRIES; i++) {
		u32 idx = (u32)(((seq * OP_CLAIM_TRIES + i) * 0x9E3779B97F4A7C15ULL) >> 32);
		if ((op_id = op_take(idx, seq, tgid, now)))
			return op_id;
	}
	return 0;
}

/* Fills a record header inside a larger record (an EV_OP_PAIR's parts). */
static __always_inline void inner_hdr(struct event_hdr *h, u32 kind, u32 size, u64 ktime, u32 tgid, u32 tid)
{
	h->kind = kind;
	h->size = size;
	h->ktime_ns = ktime;
	h->pid = tgid;
	h->tid = tid;
}

/* Starts an op on socket s: creates its bucket, makes it the thread's and
 * the socket's current op, and sends OP_BEGIN with the first bytes at buf
 * (len of them valid). The socket's previous op ends (END_NEXT) in the
 * same record (EV_OP_PAIR): a keep-alive server's every request but the
 * first. Returns 0. A global function: the kernel verifies it once per
 * program instead of once per call site and path (the read handler calls
 * it from five places and two bpf_loop callbacks). */
__noinline int op_begin_global(struct sock_info *s, struct op_start *o)
{
	if (!s || !o)
		return 0;
	u32 tgid = o->tgid, tid = o->tid, kind = o->kind, pre_len = o->pre_len;
	s32 fd = o->fd;
	u64 buf = o->buf, pre = o->pre;
	s64 len = o->len;
	/* The END_CLOSE the thread owes goes first (set_thread, below, would
	 * send it after this op's begin): an op begun on a reused fd must
	 * reach the reader after the end of the fd's previous connection,
	 * which drops that fd's naming state in Go. */
	struct thread_state *ts = bpf_task_storage_get(&thread_states, bpf_get_current_task_btf(), 0,
						       BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (ts)
		end_owed(ts, tgid, tid);
	else
		stat_inc(ST_THREAD_OVERFLOW);
	u64 prev = s->op_id;
	struct op_pair_event *pair = NULL;
	struct op_begin_event *e = NULL;
	u64 now;
	if (prev) {
		s->op_id = 0;
		pair = event_reserve(sizeof(*pair), EV_OP_PAIR, tgid, tid);
		if (!pair)
			stat_inc(ST_LOST_EVENTS); /* two records lost: the end and the begin */
		if (pair) {
			now = pair->hdr.ktime_ns;
			inner_hdr(&pair->end.hdr, EV_OP_END, sizeof(pair->end), now, tgid, tid);
			take_final(&pair->end, prev, fd, END_NEXT);
			e = &pair->begin;
		}
		/* else the ring is full: the previous op's bucket stays, as
		 * with a lost OP_END (emit_op_end) */
	} else {
		e = event_reserve(sizeof(*e), EV_OP_BEGIN, tgid, tid);
		if (e)
			now = e->hdr.ktime_ns;
	}
	if (!e)
		now = bpf_ktime_get_ns();
	u64 op_id = op_claim(tgid, now, prev ? ((u32)prev & op_slot_mask) + 1 : 0);
	if (!op_id) {
		/* No free slot: its activity stays idle. */
		stat_inc(ST_BUCKET_OVERFLOW);
		if (ts)
			set_thread_state(ts, tgid, tid, TM_IDLE, 0);
		if (pair) {
			pair->begin.hdr.kind = 0; /* the end alone */
			submit(pair);
		} else if (e) {
			bpf_ringbuf_discard(e, 0);
		}
		return 0;
	}
	s->op_id = op_id;
	s->flags &= ~SF_RESPONDED;
	s->flags |= SF_STARTED;
	if (ts)
		set_thread_state(ts, tgid, tid, TM_OP, op_id);
	if (!e)
		return 0;
	if (pair)
		inner_hdr(&e->hdr, EV_OP_BEGIN, sizeof(*e), now, tgid, tid);
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
	if (pair)
		submit(pair);
	else
		submit(e);
	return 0;
}

/* op_begin_global with its arguments spelled out. */
static __always_inline int op_begin(struct sock_info *s, u32 tgid, u32 tid, s32 fd, u32 kind, u64 buf, s64 len, u64 pre, u32 pre_len)
{
	struct op_start o = { .buf = buf, .len = len, .pre = pre, .pre_len = pre_len, .kind = kind,
			      .tgid = tgid, .tid = tid, .fd = fd, ._pad = 0 };
	return op_begin_global(s, &o);
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
static __always_inline int accepted(s64 ret)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32;
	if (ret < 0 || !current_target(tgid))
		return 0;
	struct sock_key k = { .tgid = tgid, .fd = (s32)ret };
	struct sock_info s = { .role = SOCK_SERVER };
	u16 port = local_port((s32)ret);
	if (port && bpf_map_lookup_elem(&ignored_ports, &port))
		s.role = SOCK_IGNORED; /* memdiag's own connection to the inspector */
	if (bpf_map_update_elem(&sockets, &k, &s, BPF_ANY))
		stat_inc(ST_SOCK_OVERFLOW);
	return 0;
}

/* For accept4 and accept. */
static __noinline int on_exit_accept(s64 ret) { return accepted(ret); }

/* struct sockaddr_in / sockaddr_in6, as much as we read. */
struct sockaddr_ {
	u16 family;
	u16 port_be;
	u32 flowinfo_or_addr4;
	u8 addr6[16];
};

static __noinline int on_enter_connect(struct tp_sys_enter *ctx)
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
	struct thread_state *ts = current_thread_state();
	if (ts && ts->mode == TM_OP) {
		if (op_slot(ts->op_id)) {
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
#define MAX_FRAMES 64 /* frames walked per read (HTTP/2, WebSocket); more lose the boundaries */
#define H2_PREFACE_LEN 24 /* "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" */
#define H2_HEADERS 1
#define H2_CONTINUATION 9
#define WS_TEXT 1
#define WS_BINARY 2
#define WS_MAX_LEN (1ULL << 40) /* a frame length past this is garbage: the walk stops */

/* The state of one read's frame walk, shared with the bpf_loop callback. */
struct frame_walk {
	u64 buf;  /* the read's buffer */
	u64 len;  /* bytes read into it */
	u64 off;  /* the next frame header's offset in it */
	struct sock_key k;
	u32 tid;
	u32 _pad;
};

/* One frame of an HTTP/2 read: opens a stream at a new client HEADERS
 * frame, hands other header blocks to Go. Returns 1 to stop the walk
 * (no whole frame header left, or the socket is gone). */
static long h2_frame(u64 i, void *ctx)
{
	struct frame_walk *w = ctx;
	u64 off = w->off;
	if (off + 9 > w->len)
		return 1;
	u8 h[9];
	if (bpf_probe_read_user(h, sizeof(h), (void *)(w->buf + off)))
		return 1;
	u64 len = ((u64)h[0] << 16) | ((u64)h[1] << 8) | h[2];
	u32 stream = (((u32)h[5] << 24) | ((u32)h[6] << 16) | ((u32)h[7] << 8) | h[8]) & 0x7fffffff;
	u64 have = w->len - off; /* the frame's bytes in this read */
	if (have > 9 + len)
		have = 9 + len;
	struct sock_info *s = bpf_map_lookup_elem(&sockets, &w->k);
	if (!s)
		return 1;
	if (h[3] == H2_HEADERS && stream > s->h2_stream) {
		s->h2_stream = stream;
		op_begin(s, w->k.tgid, w->tid, w->k.fd, OP_H2_STREAM, w->buf + off, (s64)have, 0, 0);
	} else if (h[3] == H2_HEADERS || h[3] == H2_CONTINUATION) {
		emit_op_data(w->k.tgid, w->tid, s->op_id, w->k.fd, DATA_H2_HEADERS, w->buf + off, (s64)have);
	}
	w->off = off + 9 + len;
	return 0;
}

/* One frame of a WebSocket read (RFC 6455 §5.2: 2 bytes, a 16- or 64-bit
 * length, a 4-byte mask key from clients): a text or binary frame begins
 * a message, an op; continuations and control frames (ping, pong, close)
 * are more of the current one. Returns 1 to stop the walk. */
static long ws_frame(u64 i, void *ctx)
{
	struct frame_walk *w = ctx;
	u64 off = w->off;
	if (off + 2 > w->len)
		return 1;
	u8 h[14] = {};
	/* 14 bytes: the longest header; near the end of the buffer's
	 * mapping only 2 may be readable, enough for a short header. */
	int whole = !bpf_probe_read_user(h, sizeof(h), (void *)(w->buf + off));
	if (!whole && bpf_probe_read_user(h, 2, (void *)(w->buf + off)))
		return 1;
	u64 len = h[1] & 0x7f, hl = 2;
	if (len == 126) {
		len = ((u64)h[2] << 8) | h[3];
		hl = 4;
	} else if (len == 127) {
		len = ((u64)h[2] << 56) | ((u64)h[3] << 48) | ((u64)h[4] << 40) | ((u64)h[5] << 32) |
		      ((u64)h[6] << 24) | ((u64)h[7] << 16) | ((u64)h[8] << 8) | h[9];
		hl = 10;
	}
	if (h[1] & 0x80)
		hl += 4;
	if (off + hl > w->len || len > WS_MAX_LEN || (!whole && hl > 2))
		return 1;
	u8 opcode = h[0] & 0x0f;
	if (opcode == WS_TEXT || opcode == WS_BINARY) {
		struct sock_info *s = bpf_map_lookup_elem(&sockets, &w->k);
		if (!s)
			return 1;
		u64 have = w->len - off;
		if (have > hl + len)
			have = hl + len;
		op_begin(s, w->k.tgid, w->tid, w->k.fd, OP_WS_MESSAGE, w->buf + off, (s64)have, 0, 0);
	}
	w->off = off + hl + len;
	return 0;
}

/* A read of len bytes at buf on an HTTP/2 or WebSocket socket: walks its
 * frames from the first whole one; what runs next is the socket's op (the
 * last one a frame began). Returns 0. */
static __always_inline int frames_read(struct sock_info *s, struct sock_key *k, u32 tid, u64 buf, u64 len)
{
	if (s->flags & SF_FRAMES_LOST)
		goto out;
	if (s->frame_skip >= len) {
		s->frame_skip -= len; /* all of it inside one frame */
		goto out;
	}
	struct frame_walk w = { .buf = buf, .len = len, .off = s->frame_skip, .k = *k, .tid = tid };
	if (s->flags & SF_WS)
		bpf_loop(MAX_FRAMES, ws_frame, &w, 0);
	else
		bpf_loop(MAX_FRAMES, h2_frame, &w, 0);
	s = bpf_map_lookup_elem(&sockets, k);
	if (!s)
		return 0;
	if (w.off >= len) {
		s->frame_skip = w.off - len;
	} else {
		/* A frame header split across reads, or more frames than
		 * one walk follows: the boundaries are lost. */
		s->flags |= SF_FRAMES_LOST;
		stat_inc(ST_FRAMES_LOST);
	}
out:
	if (s->op_id)
		set_thread(k->tgid, tid, TM_OP, s->op_id);
	return 0;
}

/* How many of a read's ret bytes its first buffer holds: all of a plain
 * read's; for readv/recvmsg, at most the first iovec's length (read from
 * user memory: call it only when the bytes are needed). */
static __always_inline s64 first_got(struct pending *p, s64 ret)
{
	if ((u32)p->args[2] == IO_PLAIN)
		return ret;
	s64 n = first_len(p->args[1], (u32)p->args[2]);
	return n < ret ? n : ret;
}

/* x86_64 syscall numbers of the reads and writes whose first argument
 * is not a plain buffer (the tracepoint record carries the number). */
#define NR_READV 19
#define NR_WRITEV 20
#define NR_SENDMSG 46
#define NR_RECVMSG 47

/* How the buffer argument of read/write syscall nr is laid out. */
static __always_inline u32 io_kind(s32 nr)
{
	if (nr == NR_READV || nr == NR_WRITEV)
		return IO_IOV;
	if (nr == NR_RECVMSG || nr == NR_SENDMSG)
		return IO_MSG;
	return IO_PLAIN;
}

/* A read of ret bytes finished: switch to the socket's op, or start one
 * when the bytes begin a request. The read's arguments are in regs, as
 * the syscall's entry found them: the entry saves nothing. */
static __always_inline int read_done(struct pt_regs *regs, s64 ret)
{
	if (ret < 0)
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	u32 tgid = task->tgid, tid = task->pid;
	/* fd, buffer, how the buffer is laid out */
	struct pending p = { .args = { PT_REGS_PARM1_SYSCALL(regs), PT_REGS_PARM2_SYSCALL(regs), io_kind(regs->orig_rax) } };
	s32 fd = (s32)p.args[0];
	struct sock_key k = { .tgid = tgid, .fd = fd };
	struct sock_info *s = bpf_map_lookup_elem(&sockets, &k);
	/* A socket in `sockets` is a target's (its entries go with the
	 * target): only an fd memdiag does not know needs the target looked
	 * up, one hash lookup fewer a request. */
	if (!s && !bpf_map_lookup_elem(&targets, &tgid))
		return 0;
	if (s && s->role == SOCK_IGNORED)
		return 0;
	if (ret == 0) {
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
	u64 buf = first_buffer(p.args[1], (u32)p.args[2]);
	if (s && (s->flags & (SF_H2 | SF_WS)))
		return buf ? frames_read(s, &k, tid, buf, (u64)first_got(&p, ret)) : 0;
	/* A served socket, or an fd we do not know yet (a connection
	 * accepted before attach): look at the first bytes. */
	if (s && s->op_id && !(s->flags & SF_RESPONDED)) {
		set_thread(tgid, tid, TM_OP, s->op_id); /* more of the same request */
		/* ...unless it starts with another request: pipelined. */
		u64 w = 0;
		if (s->role == SOCK_SERVER && !(s->flags & SF_TLS) && buf && ret >= 8 &&
		    !bpf_probe_read_user(&w, sizeof(w), (void *)buf) && looks_like_request(w))
			emit_op_data(tgid, tid, s->op_id, fd, DATA_REQUESTS, buf, first_got(&p, ret));
		return 0;
	}
	u64 head = 0, pre = 0;
	u32 pre_len = 0;
	if (s && s->pre_len) {
		pre = s->pre;
		pre_len = s->pre_len & 7;
		s->pre_len = 0;
	}
	if (!buf)
		goto not_request;
	if (!pre_len && ret < 8) {
		/* A request's first bytes read alone (Go's server reads one byte
		 * ahead, in the background, after a response): kept for the
		 * next read, which brings the rest of the request line. */
		u64 got = (u64)ret & 7;
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
	if (STARTS(head, "PRI * HT", 8) && !pre_len && (!s || (s->role == SOCK_SERVER && !(s->flags & SF_STARTED)))) {
		/* The HTTP/2 connection preface: its streams are ops. */
		if (!s) {
			struct sock_info fresh = { .role = SOCK_SERVER };
			if (bpf_map_update_elem(&sockets, &k, &fresh, BPF_NOEXIST) == -E2BIG)
				stat_inc(ST_SOCK_OVERFLOW);
			s = bpf_map_lookup_elem(&sockets, &k);
			if (!s)
				return 0;
		}
		s->flags |= SF_H2 | SF_STARTED;
		s->frame_skip = H2_PREFACE_LEN;
		s->h2_stream = 0;
		return frames_read(s, &k, tid, buf, (u64)first_got(&p, ret));
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
			return op_begin(s, tgid, tid, fd, OP_HTTP_SERVER, buf, ret, 0, 0);
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
	op_begin(s, tgid, tid, fd, OP_HTTP_SERVER, buf, ret, pre, pre_len);
	/* More than OP_BEGIN carries: the rest may hold pipelined requests. */
	if (ret > OP_DATA_LEN - 8 && s->op_id) {
		s64 got = first_got(&p, ret);
		if (got > OP_DATA_LEN - 8)
			emit_op_data(tgid, tid, s->op_id, fd, DATA_REST, buf + OP_DATA_LEN - 8, got - (OP_DATA_LEN - 8));
	}
	return 0;

not_request:
	if (s && s->op_id)
		set_thread(tgid, tid, TM_OP, s->op_id);
	return 0;
}

/* The handler below is called by the syscall dispatch (syscalls.bpf.h)
 * at the exit of read, recvfrom, readv and recvmsg alike (their entry
 * has none), one copy of read_done to verify. */
static __noinline int on_exit_read(struct pt_regs *regs, s64 ret) { return read_done(regs, ret); }

/* A write begins: a served socket's write belongs to its op (and releases
 * the thread when it returns); a client socket's joins the thread's op or,
 * from an idle thread, starts an outbound op. */
static __always_inline int write_begin(struct tp_sys_enter *ctx, u32 kind)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32, tid = (u32)id;
	s32 fd = (s32)ctx->args[0];
	struct sock_key k = { .tgid = tgid, .fd = fd };
	struct sock_info *s = bpf_map_lookup_elem(&sockets, &k);
	if (!s) {
		/* A socket connected before memdiag came (a keep-alive pool):
		 * it becomes a client socket at its first request written.
		 * (A known socket is a target's: read_done.) */
		u64 wb = first_buffer(ctx->args[1], kind), w = 0;
		if (!current_target(tgid) || !wb || bpf_probe_read_user(&w, sizeof(w), (void *)wb) || !looks_like_request(w))
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
		if (!(s->flags & (SF_H2 | SF_WS))) {
			/* The first 16 bytes: "HTTP/1.x NNN ..." starts a response.
			 * An interim 1xx (100 Continue) is not the response: the
			 * body still comes, in the same op. 101 Switching Protocols
			 * is not either: the upgrade's op lasts until the first
			 * message. */
			u64 wb = first_buffer(ctx->args[1], kind);
			u64 w[2] = {};
			int resp = wb && !bpf_probe_read_user(w, sizeof(w), (void *)wb) &&
				   STARTS(w[0], "HTTP/1.", 7) && (w[1] & 0xff) == ' ';
			int interim = resp && ((w[1] >> 8) & 0xff) == '1';
			/* A second response with no request read since: the next
			 * pipelined request's, which Go names from its queue. */
			if (resp && !interim && (s->flags & SF_RESPONDED))
				op_begin(s, tgid, tid, fd, OP_HTTP_PIPELINED, 0, 0, 0, 0);
			if (!interim)
				s->flags |= SF_RESPONDED;
			else if (STARTS(w[1], " 101", 4)) {
				s->flags |= SF_WS; /* reads are WebSocket frames from now on */
				s->frame_skip = 0;
			}
		}
		struct thread_state *ts = set_thread(tgid, tid, TM_OP, s->op_id);
		if (ts)
			ts->release = 1; /* the exit releases the thread */
		return 0;
	}
	if ((s->flags & SF_BOUND) && s->op_id) {
		/* The first write of a socket connected inside an op: a
		 * non-blocking connect completes after a poll, and the loop may
		 * write it while busy with another op's sockets. It is still the
		 * connecting op's call, and what its callbacks do is that op's. */
		s->flags &= ~SF_BOUND;
		if (op_slot(s->op_id)) {
			set_thread(tgid, tid, TM_OP, s->op_id);
			return 0;
		}
	}
	struct thread_state *ts = current_thread_state();
	if (ts && ts->mode == TM_OP) {
		if (op_slot(ts->op_id)) {
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
static __always_inline int write_done(s64 ret)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct thread_state *ts = bpf_task_storage_get(&thread_states, task, 0, 0);
	if (!ts || !ts->release)
		return 0;
	ts->release = 0;
	set_thread_state(ts, task->tgid, task->pid, TM_IDLE, 0);
	return 0;
}

/* For write, sendto, writev and sendmsg. */
static __noinline int on_enter_write(struct tp_sys_enter *ctx) { return write_begin(ctx, io_kind(ctx->nr)); }
static __noinline int on_exit_write(s64 ret) { return write_done(ret); }

static __noinline int on_enter_close(struct tp_sys_enter *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32, tid = (u32)id;
	/* A known socket is a target's (read_done): no target lookup. */
	struct sock_key k = { .tgid = tgid, .fd = (s32)ctx->args[0] };
	struct sock_info *s = bpf_map_lookup_elem(&sockets, &k);
	if (!s)
		return 0;
	if (s->flags & SF_JOINED) {
		/* A call made inside another op: closing it ends nothing. */
		bpf_map_delete_elem(&sockets, &k);
		return 0;
	}
	struct thread_state *ts = current_thread_state();
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
	struct thread_state *ts = current_thread_state();
	if (!ts || ts->mode != TM_OP)
		return 0;
	end_owed(ts, id >> 32, tid);
	ts->mode = TM_IDLE;
	ts->op_id = 0;
	return 0;
}

/* For epoll_wait, epoll_pwait, epoll_pwait2, poll and ppoll. */
static __noinline int on_exit_poll(s64 ret) { return poll_done(); }

#endif /* MEMDIAG_OPS_BPF_H */
