package tracer

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// setCPUs sets nr_cpus: rss_stat's program sums an RSS counter's per-CPU
// parts itself, one per possible CPU.
func setCPUs(spec *ebpf.CollectionSpec) error {
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("counting possible CPUs: %w", err)
	}
	if err := spec.Variables["nr_cpus"].Set(uint32(cpus)); err != nil {
		return fmt.Errorf("setting nr_cpus: %w", err)
	}
	return nil
}

// targetBits is the kernel's target bitmap (bpf/core.bpf.h target_bits),
// mapped into memdiag: one bit per pid, set for every traced pid, the
// first test of every BPF handler. Bits are set and cleared with atomic
// ors and ands, as the kernel side does (fork sets, exit clears).
type targetBits struct {
	mem []byte
}

func mapTargetBits(m *ebpf.Map) (*targetBits, error) {
	size := int(m.ValueSize())
	mem, err := unix.Mmap(m.FD(), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mapping the target bitmap: %w", err)
	}
	return &targetBits{mem: mem}, nil
}

func (b *targetBits) word(pid uint32) *uint32 {
	i := (pid / 32) % uint32(len(b.mem)/4)
	return (*uint32)(unsafe.Pointer(&b.mem[i*4]))
}

// set marks pid as traced.
func (b *targetBits) set(pid uint32) { atomic.OrUint32(b.word(pid), 1<<(pid%32)) }

// clear unmarks pid.
func (b *targetBits) clear(pid uint32) { atomic.AndUint32(b.word(pid), ^uint32(1<<(pid%32))) }

// has says whether pid is marked.
func (b *targetBits) has(pid uint32) bool { return atomic.LoadUint32(b.word(pid))&(1<<(pid%32)) != 0 }

func (b *targetBits) close() error {
	if b == nil || b.mem == nil {
		return nil
	}
	err := unix.Munmap(b.mem)
	b.mem = nil
	return err
}
