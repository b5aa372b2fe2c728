// Package dump writes what memdiag learned about a process in formats other
// tools read: a pprof profile of growth by user stack, and a V8 heap
// snapshot of a Node.js process.
//
// The heap snapshot (heapsnapshot*.go) is taken through the inspector
// protocol from outside the process: an inspector that is already open is
// used and left open; otherwise SIGUSR1 (sent only when the process catches
// it) opens one on loopback in the target's network namespace, memdiag
// connects from inside that namespace, streams HeapProfiler chunks to disk,
// and closes the inspector again with process._debugEnd().
//
// The growth profile (profile*.go) is a pprof profile of RSS growth by user
// stack: the BPF program samples the user stack of the thread that crosses
// every stack_sample_bytes of growth, and BuildProfile turns those
// StackSamples into a profile whose values are bytes of growth and page
// faults. A Symbolizer names the addresses from the process's
// /proc/PID/maps, the .symtab and .dynsym of the ELF files mapped, and the
// perf map (/tmp/perf-PID.map) a JIT such as node --perf-basic-prof writes
// for code in anonymous memory. Open the result with `go tool pprof`.
package dump
