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

/* Ring buffer record kinds. Only lifecycle goes through the ring buffer:
 * memory counters are aggregated in the buckets map. */
enum event_kind {
	EV_FORK = 1, /* a target made a thread or a process */
	EV_EXEC = 2, /* a target (or the run launcher) exec'd */
	EV_EXIT = 3, /* a target thread exited */
};

/* Every ring buffer record starts with this header. */
struct event_hdr {
	u32 kind;     /* enum event_kind */
	u32 size;     /* bytes of the whole record */
	u64 ktime_ns; /* bpf_ktime_get_ns() */
	u32 pid;      /* thread group id of the acting task */
	u32 tid;      /* thread id of the acting task */
};

struct fork_event {
	struct event_hdr hdr;
	u32 child_pid; /* tid of the new task (its tgid when it is a process) */
	u32 _pad;
	char comm[COMM_LEN];
};

struct exec_event {
	struct event_hdr hdr;
	char filename[PATH_LEN];
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
};

struct bucket_key {
	u32 tgid;
	u32 kind; /* enum bucket_kind */
	u64 id;
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
	u64 first_ns;         /* ktime of the first charge */
	u64 last_ns;          /* ktime of the latest charge (racy, informative) */
	char comm[COMM_LEN];  /* thread name, for BK_THREAD */
};

/* Per-mm state, keyed by the rss_stat mm_id. */
struct mm_state {
	s64 last[RSS_MEMBERS]; /* last counter value seen per member */
	s64 total;             /* sum of last[] over FILE, ANON, SHMEM */
	s64 peak;              /* highest total seen */
	u32 tgid;              /* process the mm belongs to */
	u32 seen;              /* bit per member: a value has been seen */
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
};

/* Indexes of the per-CPU stats array. */
enum stat_index {
	ST_LOST_EVENTS = 0,     /* ring buffer reserve failures */
	ST_BUCKET_OVERFLOW = 1, /* charges that found the buckets map full */
	ST_MM_OVERFLOW = 2,     /* mms that found the mm_state map full */
	ST_TARGET_OVERFLOW = 3, /* tasks that found the targets map full */
	ST_PENDING_OVERFLOW = 4,/* syscalls whose arguments found the pending map full */
	ST_MAX = 8,
};

#endif
