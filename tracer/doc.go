// Package tracer is memdiag's only door to the kernel: it probes for the
// features memdiag needs, loads the BPF program (bpf/memdiag.bpf.c), attaches
// it to its tracepoints, reads lifecycle records from the ring buffer and
// snapshots the counters the kernel aggregates, and detaches.
//
// It decodes kernel bytes into the plain values of package event and knows
// nothing about operations or categories.
//
// Shutdown order: Stop detaches every link so no new charges or records
// appear and drains the ring buffer into the events channel; the caller takes
// its final Snapshot; Close closes the reader, then the maps and programs.
// Both are idempotent.
package tracer
