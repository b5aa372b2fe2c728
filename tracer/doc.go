// Package tracer is memdiag's only door to the kernel: it probes for the
// features memdiag needs, loads the BPF program (bpf/memdiag.bpf.c and the
// headers it includes, one per concern), attaches
// it to its tracepoints, reads lifecycle records from the ring buffer and
// snapshots the counters the kernel aggregates, and detaches.
//
// It decodes kernel bytes into the plain values of package event and knows
// nothing about operations or categories. One piece of state is kept
// across records, by the reader alone: each served connection's naming
// state (httpreq.Conns), because a pipelined request, an HTTP/2 stream and
// a WebSocket message are named from bytes of earlier records of the same
// connection (EV_OP_DATA records feed it and decode to nothing).
//
// One tracer can serve several targets (fleet mode: Shared). It follows a
// parent cgroup, so the kernel makes every process that execs below it a
// target at its exec and puts the process's cgroup id in the exec record;
// a router goroutine between the reader and the consumers sends each
// record to the View of its process's cgroup (children follow their
// parent), or keeps it pending, bounded, until a View claims the cgroup
// or Drop frees it. A View is what a session needs of a tracer
// (session.Tracer): its records, snapshots of its processes only (one
// read of the maps serves every View flushing within 250 ms), and Close
// frees its processes' kernel entries (DropProcesses). The reader marks
// in the channel each moment it finds the ring empty, so that a View's
// Stop ends once every record made before it is routed.
//
// Shutdown order: Stop detaches every link so no new charges or records
// appear and drains the ring buffer into the events channel; the caller takes
// its final Snapshot; Close closes the reader, then the maps and programs.
// Both are idempotent.
//
// Loading: cilium/ebpf creates the maps and loads the uprobe programs;
// the tp_btf programs are loaded here (leanload.go) with what cilium/ebpf
// would look up in the kernel's BTF, read without decoding all of it
// (kernelbtf.go): decoding it was most of memdiag's peak memory. The
// kernel gets the same programs (TestLeanLoadIsCiliumsLoad); whatever
// that path does not cover goes to cilium/ebpf's loader, as before.
//
// amd64 only: the uprobe programs read x86_64 registers, gen.go builds the
// object with -target amd64, and arch.go stops any other build.
//
// # What tracing costs, and where that is decided
//
// Every hook runs for every process on the host, so each one is attached
// the cheapest way this kernel offers and returns first thing for a
// process it does not trace:
//   - Every hook is a BTF raw tracepoint (tp_btf): the kernel builds no
//     trace record. rss_stat's record used to cost every process a hash of
//     the mm and a locked sum over every CPU on every RSS change; the
//     program now sums a traced mm's counter itself (rss_value).
//   - Syscalls come through one raw sys_enter/sys_exit pair that dispatches
//     on the syscall number (bpf/syscalls.bpf.h), not a perf tracepoint per
//     syscall: the pair runs on every syscall of every process, hooked or
//     not (a bit test for the untraced), but a perf-event tracepoint took
//     50 ms to over a second to detach (RCU grace periods under the
//     kernel's event_mutex, one after the other: 2 s for the ~40 syscall
//     ones at exit), and made the kernel copy the syscall's arguments into
//     a record before each program ran. The handlers the dispatch calls are
//     verified once each; so are op_begin_global and the region table's
//     functions (bench/verifier prints the verifier's work per program).
//   - The untraced exit is one bit test (target_bits, mapped here as
//     targetBits: one bit per pid modulo 65536, set by AddTarget and by
//     fork in the kernel, cleared by ForgetProcess).
//   - Mappings live in a hash of one entry per mapping with a chunk index
//     for "which mapping holds this address" (regiontable.go mirrors it),
//     so mmap and munmap are O(1) map updates.
//
// BENCHMARKS.md has the nanoseconds per event.
//
// # Where it departs from the plan on purpose
//
// The ring buffer reader blocks when the events channel is full; it never
// drops (STYLE asks for a bounded channel with drops counted). An op's end
// record carries the op's final counters, which the kernel deleted from its
// table when it sent the record: a record dropped here would lose those
// bytes from the totals. A slow consumer fills the ring buffer instead,
// where a record that finds no room is counted (Stats.LostEvents) and its
// bytes stay in the kernel's tables, so the totals stay exact. Records that
// do not decode are the only ones the reader skips; they are counted apart
// (Stats.DecodeErrors) and mean a layout mismatch, a bug.
//
// The kernel wakes the reader only when the ring fills (a wakeup per record
// would cost the traced service an inter-processor interrupt), so the
// reader also polls on a short deadline.
package tracer
