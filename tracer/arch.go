//go:build !amd64

package tracer

// memdiag is built for amd64 only: its uprobe programs read x86_64
// registers (struct pt_regs_x86 in bpf/kernel.h) and gen.go compiles them
// with -target amd64. bpf2go's x86 bindings also build for 386, whose
// registers differ; this name is undefined on purpose so that any other
// architecture fails to compile here, with this comment next to the error.
var _ = memdiagSupportsAmd64Only
