// Package memdiag holds the go:generate line that compiles the BPF program.
//
// Generated files policy: bpf2go compiles bpf/memdiag.bpf.c (and the
// bpf/*.bpf.h headers it includes) into tracer/memdiag_x86_bpfel.o and
// writes tracer/memdiag_x86_bpfel.go: loaders, Go mirrors of the C structs
// and the C enums named with -type (tracer uses the generated enum
// constants, never hand-copied values). Both are committed, so `go build`
// needs neither clang nor libbpf headers; `make generate` rebuilds them with
// the pinned flags below and CI fails when the committed copies are stale.
//
// -target amd64, not bpfel: bpf2go then defines __TARGET_ARCH_x86, so the
// uprobe programs' PT_REGS_* macros (bpf_tracing.h) and GO_REGS_* read
// x86_64 registers; memdiag is built for amd64 only. bpf2go's x86 bindings
// carry `//go:build 386 || amd64`; tracer/arch.go refuses 386.
package memdiag

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -output-dir tracer -go-package tracer -target amd64 -type event_hdr -type fork_event -type exec_event -type exit_event -type bucket_key -type counters -type op_slot -type mm_state -type target -type group_total -type op_begin_event -type op_end_event -type op_pair_event -type op_data_event -type op_data_what -type thread_state -type sock_key -type sock_info -type region_key -type region_slots -type region -type libc_range -type ab_key -type ab_alloc -type oom_event -type stack_key -type stack_growth -type heap_sample_event -type heap_note_event -type event_kind -type op_kind -type op_end_reason -type bucket_kind -type heap_runtime -type rss_member -type region_class -type target_state -type thread_mode -type sock_role -type stat_index memdiag bpf/memdiag.bpf.c -- -O2 -g -Wall -Werror -mcpu=v3 -I/usr/include/x86_64-linux-gnu
