// Package dump writes what memdiag learned about a process in formats other
// tools read.
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
