// Package memdiag holds the go:generate line that compiles the BPF program.
//
// Generated files policy: bpf2go compiles bpf/memdiag.bpf.c into
// tracer/memdiag_bpfel.o and writes tracer/memdiag_bpfel.go (loaders and Go
// mirrors of the C structs named with -type). Both are committed, so `go
// build` needs neither clang nor libbpf headers; `make generate` rebuilds
// them with the pinned flags below and CI fails when the committed copies
// are stale.
package memdiag

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -output-dir tracer -go-package tracer -target bpfel -type event_hdr -type fork_event -type exec_event -type exit_event -type bucket_key -type counters -type mm_state -type target -type group_total -type op_begin_event -type op_end_event -type thread_state -type sock_key -type sock_info -type region_key -type region -type libc_range -type ab_key -type ab_alloc -type oom_event -type stack_key -type stack_growth -type heap_sample_event -type heap_note_event memdiag bpf/memdiag.bpf.c -- -O2 -g -Wall -Werror -mcpu=v3 -I/usr/include/x86_64-linux-gnu
