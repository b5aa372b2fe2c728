//go:build !amd64

package tracer

// memdiag is built for amd64 only: gen.go compiles the BPF program with
// -target amd64, so its uprobe programs read x86_64 registers (PT_REGS_*,
// GO_REGS_* in bpf/uprobes.bpf.h). bpf2go's x86 bindings also build for 386, whose
// registers differ; this name is undefined on purpose so that any other
// architecture fails to compile here, with this comment next to the error.
var _ = memdiagSupportsAmd64Only
