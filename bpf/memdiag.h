/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Layouts shared by the BPF program and Go (bpf2go generates the Go mirror
 * of every struct named with -type in gen.go). Fixed-size fields, explicit
 * padding, little endian.
 */
#ifndef MEMDIAG_H
#define MEMDIAG_H

#include "kernel.h"

#define COMM_LEN 16
#define PATH_LEN 128

/* Ring buffer record kinds: lifecycle, op begin/end, TLS and OOM notes.
 * Memory counters never go through it: they are aggregated in the buckets
 * map (an op's end carries its final counters). */
enum event_kind {
	EV_FORK = 1,     /* a target made a thread or a process */
	EV_EXEC = 2,     /* a target (or the run launcher) exec'd */
	EV_EXIT = 3,     /* a target thread exited */
	EV_OP_BEGIN = 4, /* an operation began: a request read, an outbound call written */
	EV_OP_END = 5,   /* an operation ended: next request on its socket, or close */
	EV_TLS_SEEN = 6, /* a served socket carries TLS (once per process) */
	EV_OOM = 7,      /* the OOM killer chose a target */
	EV_HEAP_SAMPLE = 8, /* a runtime's heap profiler sampled an allocation (uprobe) */
	EV_HEAP_FREE = 9,   /* a sampled allocation was freed (Go: its profile special) */
	EV_GC_CYCLE = 10,   /* a runtime finished a GC cycle (Go: mProf_NextCycle) */
	EV_OP_DATA = 11,    /* more bytes Go needs to name ops: pipelined requests, HTTP/2 header blocks */
	EV_OP_PAIR = 12,    /* struct op_pair_event: an OP_END and the OP_BEGIN that caused it, one record */
};




/* Every ring buffer record starts with this header. */
struct event_hdr {
	u32 kind;     /* enum event_kind */
	u32 size;     /* bytes of the whole record */
	u64 ktime_ns; /* bpf_ktime_get_ns() */
	u32 pid;      /* thread group id of the acting task */
	u32 tid;      /* thread id of the acting task */
};

struct oom_event {
	struct event_hdr hdr; /* pid: the victim's tgid */
	u64 anon_rss;         /* kB, as the OOM killer saw them */
	u64 file_rss;
	u64 shmem_rss;
	u64 total_vm;
};

/* Key of the stack_growth map: user stacks of RSS growth, sampled. */
struct stack_key {
	u32 tgid;
	s32 stack_id; /* in the stacks map */
};

struct stack_growth {
	s64 bytes;
	u64 samples;
};

#define STACK_DEPTH 64

struct fork_event {
	struct event_hdr hdr;
	u32 child_pid; /* tid of the new task (its tgid when it is a process) */
	u32 _pad;
	char comm[COMM_LEN];
};

struct exec_event {
	struct event_hdr hdr;
	char filename[PATH_LEN];
	u64 cgroup_id; /* the execing task's cgroup v2 id (its directory's inode number) */
};

/* How many leading bytes of a request (or outbound call) travel to Go,
 * which parses the request line and drops the rest. */
#define OP_DATA_LEN 256 /* a power of two: sizes are masked with OP_DATA_LEN - 1 */

enum op_kind {
	OP_HTTP_SERVER = 1, /* a request read on a served socket */
	OP_OUTBOUND = 2,    /* a call written on a client socket by an idle thread */
	OP_HTTP_PIPELINED = 3, /* a response begun with no request read since the last one: the next pipelined request's */
	OP_H2_STREAM = 4,   /* an HTTP/2 stream opened by a client HEADERS frame; data: the frame (9-byte header first) */
	OP_WS_MESSAGE = 5,  /* a WebSocket message (text or binary frame) from the client; data: the frame */
};

/* How many bytes an EV_OP_DATA record carries at most. */
#define OP_MORE_LEN 2048 /* a power of two, like OP_DATA_LEN */

enum op_data_what {
	DATA_REST = 1,       /* the bytes of the read that began op_id, after those its OP_BEGIN carried */
	DATA_REQUESTS = 2,   /* a later read that starts with a request while op_id still reads its own: pipelined requests */
	DATA_H2_HEADERS = 3, /* an HTTP/2 HEADERS (trailers) or CONTINUATION frame, 9-byte header first, that opens no stream */
};

/* EV_OP_DATA: bytes of a served socket Go needs to keep naming its ops
 * (the HPACK decoder's state, the pipelined requests after the first). */
struct op_data_event {
	struct event_hdr hdr;
	u64 op_id;     /* the socket's op when the bytes were read */
	s32 fd;
	u32 what;      /* enum op_data_what */
	u32 data_len;  /* valid bytes in data */
	u32 _pad;
	u8 data[OP_MORE_LEN];
};

struct op_begin_event {
	struct event_hdr hdr;
	u64 op_id;
	u32 op_kind;   /* enum op_kind */
	s32 fd;
	u16 family;    /* AF_INET, AF_INET6 for outbound; 0 when unknown */
	u16 port;      /* destination port, host order, outbound */
	u32 data_len;  /* valid bytes in data */
	u8 addr[16];   /* destination address, outbound (IPv4 in the first 4) */
	u8 data[OP_DATA_LEN];
};

enum op_end_reason {
	END_NEXT = 1,  /* a new request (or call) on the same socket */
	END_CLOSE = 2, /* the socket was closed */
};


struct exit_event {
	struct event_hdr hdr;
	s32 exit_code;  /* task->exit_code: wait(2) status encoding */
	u8 group_dead;  /* 1 when the last thread of the process exited */
	u8 _pad[3];
	char comm[COMM_LEN];
};

/* Where memory is charged. */
enum bucket_kind {
	BK_THREAD = 1,   /* id = tid: the thread's own activity */
	BK_BASELINE = 2, /* id = 0: counters as found at first sight after attach */
	BK_START = 3,    /* id = 0: counters a forked child inherited from its parent */
	BK_KERNEL = 4,   /* id = 0: changes made from outside the process: reclaim, remote access */
	BK_OVERFLOW = 5, /* tgid = 0, id = 0: whatever found the buckets map full */
	BK_RELEASE = 6,  /* id = 0: the process tearing down its own mm (exit, or the old image at exec) */
	BK_OP = 7,       /* id = op id: an operation (request, outbound call) */
	BK_IDLE = 8,     /* id = 0: event-loop threads between operations */
	BK_FREED = 9,    /* id = op id: memory an op mapped, given back after the op ended */
};

struct bucket_key {
	u32 tgid;
	u32 kind; /* enum bucket_kind */
	u64 id;
};

/* Whose heap profiler a heap record comes from. */
enum heap_runtime {
	HR_V8 = 1, /* v8::internal::SamplingHeapProfiler (Node.js), started over the inspector */
	HR_GO = 2, /* the Go runtime's memory profiler (on by default, MemProfileRate) */
};

/* EV_HEAP_SAMPLE: one sampled allocation and the bucket that was current
 * on the allocating thread. V8 numbers its samples 1, 2, ... from the start
 * of sampling (the ordinal getSamplingProfile reports); the kernel counts
 * the hits per process the same way. Go's are keyed by address. */
struct heap_sample_event {
	struct event_hdr hdr;
	u32 runtime;  /* enum heap_runtime */
	u32 _pad;
	u64 ordinal;  /* V8: the sample's number since sampling started; Go: 0 */
	u64 addr;     /* the object's address */
	u64 size;     /* bytes the runtime asked for (unscaled) */
	struct bucket_key owner;
};

/* EV_HEAP_FREE (addr: the freed sampled object) and EV_GC_CYCLE (addr 0). */
struct heap_note_event {
	struct event_hdr hdr;
	u32 runtime; /* enum heap_runtime */
	u32 _pad;
	u64 addr;
};

/* Indexes of struct counters.rss, the kernel's MM_* counters. */
enum rss_member {
	RSS_FILE = 0,
	RSS_ANON = 1,
	RSS_SWAP = 2,
	RSS_SHMEM = 3,
	RSS_MEMBERS = 4,
};

/* Per-bucket totals, only ever added to (atomically). */
struct counters {
	s64 rss[RSS_MEMBERS]; /* bytes of RSS change per member */
	u64 faults;           /* user page faults */
	u64 mapped;           /* bytes mapped: mmap, mremap growth, brk growth */
	u64 unmapped;         /* bytes unmapped: munmap, mremap shrink, brk shrink */
	u64 made_writable;    /* bytes mprotect'ed writable (commits of reserved ranges) */
	u64 advised_free;     /* bytes given back with madvise DONTNEED/FREE/REMOVE */
	s64 external;         /* bytes of RSS change in native-allocator (RC_NATIVE) mappings */
	s64 retained;         /* bytes of mappings made here and not unmapped yet (negative: gave back others') */
	s64 retained_native;  /* the RC_NATIVE part of retained */
	s64 retained_heap;    /* the part of retained_native that grew a shared heap (brk, arena commits): who committed, not who keeps */
	u64 ab_alloc;         /* exact mode: ArrayBuffer bytes allocated */
	u64 ab_freed;         /* exact mode: ArrayBuffer bytes allocated here and freed (anywhere) */
	u64 first_ns;         /* ktime of the first charge */
	u64 last_ns;          /* ktime of the latest charge (racy, informative) */
	char comm[COMM_LEN];  /* thread name, for BK_THREAD */
};

struct op_end_event {
	struct event_hdr hdr;
	u64 op_id;
	s32 fd;
	u32 reason;    /* enum op_end_reason */
	u32 has_final; /* final holds the op's counters, taken from the buckets map */
	u32 _pad;
	struct counters final;
};

/* EV_OP_PAIR: a request that ends its socket's previous op (keep-alive:
 * END_NEXT) sends both records in one reservation, each whole with its own
 * header: half the ring buffer records, reservations and reader wakeups of
 * a keep-alive server. begin.hdr.kind is 0 when the new op could not start
 * (no room for its bucket): the end alone. */
struct op_pair_event {
	struct event_hdr hdr;
	struct op_end_event end;
	struct op_begin_event begin;
};

/* What a mapping holds, from how it was made. */
enum region_class {
	RC_UNKNOWN = 0, /* anonymous, made before memdiag knew the process's libc */
	RC_NATIVE = 1,  /* the native allocator's (libc malloc: brk heap, arenas, large chunks): external */
	RC_RUNTIME = 2, /* anonymous, mapped by anything else (V8, the Go runtime, …) */
	RC_FILE = 3,    /* a file */
	RC_STACK = 4,   /* a thread stack (MAP_STACK, MAP_GROWSDOWN) */
	RC_SHARED = 5,  /* shared anonymous memory */
};

/* Key of the region table: the mappings of one level (2^(level-1) < len
 * <= 2^level bytes; level 12 for one page) that start in the aligned chunk
 * [chunk << level, (chunk + 1) << level). A chunk holds the starts of at
 * most two mappings of its level (each is longer than half a chunk), and
 * the mapping that holds an address of a chunk starts in that chunk or the
 * one before. */
struct region_key {
	u32 tgid;
	u32 gen;   /* the process's exec generation: older images' mappings are never found */
	u64 chunk; /* (start >> level) << 6 | level */
};

/* How a region counts in its owner's retained bytes. */
enum region_counted {
	RG_UNCOUNTED = 0, /* not writable: address space, not memory */
	RG_MAPPING = 1,   /* a writable mapping of its own: kept while mapped */
	RG_HEAP = 2,      /* growth of a shared heap (brk, an arena's commit): whoever commits, not who keeps */
};

/* A mapping made while traced (or found at attach), with its owner. */
struct region {
	u64 start;
	u64 len;                 /* 0: a free slot; REGION_CLAIMED: being written */
	struct bucket_key owner; /* the bucket of whoever mapped it */
	u32 class;               /* enum region_class */
	u32 counted;             /* enum region_counted: counted in the owner's retained bytes, and how */
	u32 gen;                 /* the process's exec generation when mapped: older ones are gone */
	u32 _pad;
};

#define REGION_SLOTS 2
#define REGION_CLAIMED 1 /* a slot's len while its claimer writes it (no mapping is 1 byte) */

/* The mappings of a region_key, one per slot. */
struct region_slots {
	struct region r[REGION_SLOTS];
};

/* While a thread gives memory back (munmap, madvise, brk shrink): who
 * mapped it and what it held. */
struct releasing {
	struct bucket_key owner;
	u32 class;
	u32 credit_owner; /* 1: resident decreases go to owner, not the thread */
};

/* The address range of a process's libc: a mapping made from code there
 * is the native allocator's. Written by userspace from /proc/PID/maps. */
struct libc_range {
	u64 lo;
	u64 hi;
};

/* Exact mode: an ArrayBuffer allocated while traced and not freed yet,
 * keyed by struct ab_key. */
struct ab_key {
	u32 tgid;
	u32 _pad;
	u64 ptr;
};

struct ab_alloc {
	struct bucket_key owner; /* the bucket that allocated it */
	u64 size;
};

/* Per-mm state, keyed by the rss_stat mm_id. */
/* CPUs whose parts of an RSS counter an mm_state remembers: on a machine
 * with up to PART_CPUS possible CPUs a change reads its own CPU's part
 * only (rss.bpf.h rss_delta); with more, every change sums all parts. */
#define PART_CPUS 64

struct mm_state {
	s64 last[RSS_MEMBERS]; /* per member: the counter's shared count last seen, in pages
				* (with more than PART_CPUS CPUs: its whole value, in bytes) */
	s64 total;             /* resident bytes: FILE + ANON + SHMEM, as charged */
	s64 peak;              /* highest total seen */
	u32 tgid;              /* process the mm belongs to */
	u32 seen;              /* bit per member: a value has been seen */
	u32 gen;               /* the process's image (struct target's gen), kept here */
	u32 _pad;
	s32 parts[PART_CPUS][RSS_MEMBERS]; /* each CPU's part last seen, in pages */
};

/* Target states: what the first sight of an mm's counter means. */
enum target_state {
	TS_ATTACHED = 1, /* existed before attach: first sight is the baseline */
	TS_FORKED = 2,   /* forked while traced: first sight is inherited memory */
	TS_EXECED = 3,   /* exec'd while traced: the mm started at zero */
};

struct target {
	u32 state;      /* enum target_state */
	u32 prev_state; /* state before an execve in flight, restored if it fails */
	u32 flags;      /* TF_* */
	u32 gen;        /* exec generation: bumped at every exec, regions carry it */
};

#define TF_TLS_SEEN 1 /* EV_TLS_SEEN was sent for this process */
#define TF_OPS 2      /* a thread of the process has a thread state (served an op) */

/* What a thread's activity is charged to. */
enum thread_mode {
	TM_OP = 1,   /* the operation op_id */
	TM_IDLE = 2, /* the process's idle bucket: back from the event loop's poll */
};

struct thread_state {
	u64 op_id;
	u32 mode;     /* enum thread_mode */
	u32 end_fd;   /* fd + 1 of the op's socket when it closed under the op: its end waits for the poll */
	u32 release;  /* 1 from a served socket's write entry to its exit, which makes the thread idle */
	u32 _pad;
};

/* A socket of a target, keyed by struct sock_key. */
enum sock_role {
	SOCK_SERVER = 1, /* accepted, or first read a request */
	SOCK_CLIENT = 2, /* connected by the target */
	SOCK_IGNORED = 3, /* accepted on a port memdiag itself talks to (the inspector): never an op */
};

#define SF_RESPONDED 1 /* the server wrote (not a 1xx) since its op began */
#define SF_TLS 2       /* the first bytes read were a TLS handshake */
#define SF_STARTED 4   /* an op began on it: later non-request bytes continue ops */
#define SF_JOINED 8    /* a client socket whose call joined another op: its close ends nothing */
#define SF_BOUND 16    /* connected inside an op: its first write is that op's, whichever op the thread is in */
#define SF_H2 32       /* the first bytes read were the HTTP/2 connection preface: reads are walked frame by frame */
#define SF_FRAMES_LOST 64 /* an HTTP/2 or WebSocket socket whose frame boundaries were lost (a frame header split across reads) */
#define SF_WS 128      /* the server answered 101 Switching Protocols: reads are walked as WebSocket frames */

struct sock_key {
	u32 tgid;
	s32 fd;
};

struct sock_info {
	u64 op_id;     /* the socket's current op, 0 when none */
	u32 role;      /* enum sock_role */
	u32 flags;     /* SF_* */
	u16 family;
	u16 port;      /* host order */
	u8 pre_len;    /* bytes in pre: the first bytes of a request read alone */
	u8 _pad[3];
	u8 addr[16];
	u64 pre;       /* those bytes (Go's server reads one byte ahead of the next request) */
	u32 h2_stream; /* HTTP/2: the highest client stream id opened */
	u32 frame_skip; /* HTTP/2, WebSocket: bytes of the stream still to come before the next frame header */
};

/* Indexes of the per-CPU stats array. */
enum stat_index {
	ST_LOST_EVENTS = 0,     /* ring buffer reserve failures */
	ST_BUCKET_OVERFLOW = 1, /* charges that found the buckets map full */
	ST_MM_OVERFLOW = 2,     /* mms that found the mm_state map full */
	ST_TARGET_OVERFLOW = 3, /* tasks that found the targets map full */
	ST_PENDING_OVERFLOW = 4,/* syscalls whose arguments found the pending map full */
	ST_SOCK_OVERFLOW = 5,   /* sockets that found the sockets map full */
	ST_THREAD_OVERFLOW = 6, /* threads whose thread_states storage could not be had */
	ST_REGION_OVERFLOW = 7, /* mappings that found the region table (or a chunk of its index) full */
	ST_OUTSTANDING_OVERFLOW = 8, /* exact mode: ArrayBuffers that found the outstanding table full */
	ST_UNMAP_SPLIT = 9,     /* unmaps that crossed more regions than one pass follows */
	ST_FRAMES_LOST = 10,    /* HTTP/2 or WebSocket sockets whose frame boundaries were lost: no more ops begun on them */
	ST_MAX = 16,
};

#endif
