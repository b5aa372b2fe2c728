// SPDX-License-Identifier: GPL-2.0
/*
 * memdiag's kernel half: charges every change of a target's memory to a
 * bucket, in the kernel, without one event per change. One translation
 * unit; each part below is a header that opens with its share of the
 * design and owns its maps.
 *
 *   core.bpf.h       targets, buckets and how a charge picks one (the
 *                    thread's op, the idle bucket, or the thread's own),
 *                    stats, the events ring buffer, syscall argument saving
 *   mappings.bpf.h   mmap/munmap/mremap/brk/mprotect/madvise, the regions
 *                    table: virtual memory, retained bytes, who gives back
 *   rss.bpf.h        kmem:rss_stat and page faults: exact RSS deltas per
 *                    bucket (conservation), external bytes, peaks, stacks
 *   ops.bpf.h        sockets and the HTTP op state machine: which op is
 *                    the thread's, op begin/end records
 *   syscalls.bpf.h   the raw sys_enter/sys_exit pair that calls the
 *                    mapping and op handlers by syscall number
 *   uprobes.bpf.h    opt-in uprobes: --tls, --exact-external, runtime heap
 *                    sampling (V8, Go); amd64 registers
 *   lifecycle.bpf.h  exec, fork, exit, rename, OOM: who is a target
 *
 * In short: every handler first tests the current tgid's bit in
 * `target_bits` (then looks it up in `targets`) and returns when it is not
 * traced. The hot hooks (rss_stat, page faults, sched, and the syscalls
 * through one sys_enter/sys_exit pair) are BTF raw tracepoints (tp_btf),
 * which make the kernel build no trace record. RSS changes (rss_stat) and faults update
 * per-bucket counters in `buckets` with atomic adds; userspace reads that
 * map periodically. Only lifecycle records, op begin/end, TLS sightings
 * and heap samples go through the ring buffer; a failed reserve is counted
 * (ST_LOST_EVENTS) and loses no bytes from the totals, which live in maps.
 * Every byte of RSS change lands in exactly one bucket: the sum over all
 * buckets but BK_BASELINE is the RSS growth since attach.
 *
 * memdiag.h holds the layouts shared with Go (bpf2go mirrors them, and the
 * enums, with -type); kernel.h the few kernel structs read through CO-RE
 * and the tracepoint contexts.
 */
#include "memdiag.h"

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

#include "core.bpf.h"
#include "mappings.bpf.h"
#include "rss.bpf.h"
#include "ops.bpf.h"
#include "uprobes.bpf.h"
#include "lifecycle.bpf.h"
#include "syscalls.bpf.h"

/* Keeps the record layouts in BTF so bpf2go emits their Go mirrors. */
const struct event_hdr *unused_event_hdr __attribute__((unused));
const struct fork_event *unused_fork_event __attribute__((unused));
const struct exec_event *unused_exec_event __attribute__((unused));
const struct exit_event *unused_exit_event __attribute__((unused));
const struct op_begin_event *unused_op_begin_event __attribute__((unused));
const struct op_end_event *unused_op_end_event __attribute__((unused));
const struct op_pair_event *unused_op_pair_event __attribute__((unused));
const struct op_data_event *unused_op_data_event __attribute__((unused));
const struct thread_state *unused_thread_state __attribute__((unused));
const struct sock_info *unused_sock_info __attribute__((unused));
const struct region *unused_region __attribute__((unused));
const struct region_key *unused_region_key __attribute__((unused));
const struct region_slots *unused_region_slots __attribute__((unused));
const struct libc_range *unused_libc_range __attribute__((unused));
const struct ab_key *unused_ab_key __attribute__((unused));
const struct ab_alloc *unused_ab_alloc __attribute__((unused));
const struct oom_event *unused_oom_event __attribute__((unused));
const struct stack_key *unused_stack_key __attribute__((unused));
const struct stack_growth *unused_stack_growth __attribute__((unused));
const struct heap_sample_event *unused_heap_sample_event __attribute__((unused));
const struct heap_note_event *unused_heap_note_event __attribute__((unused));

/* Keeps the enums shared with Go in BTF, so bpf2go -type emits them as Go
 * constants (tracer uses those, never hand-copied values). */
const enum event_kind *unused_event_kind __attribute__((unused));
const enum op_kind *unused_op_kind __attribute__((unused));
const enum op_end_reason *unused_op_end_reason __attribute__((unused));
const enum op_data_what *unused_op_data_what __attribute__((unused));
const enum bucket_kind *unused_bucket_kind __attribute__((unused));
const enum heap_runtime *unused_heap_runtime __attribute__((unused));
const enum rss_member *unused_rss_member __attribute__((unused));
const enum region_class *unused_region_class __attribute__((unused));
const enum target_state *unused_target_state __attribute__((unused));
const enum thread_mode *unused_thread_mode __attribute__((unused));
const enum sock_role *unused_sock_role __attribute__((unused));
const enum stat_index *unused_stat_index __attribute__((unused));
