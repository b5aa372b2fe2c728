package tracer

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// possibleCPUs counts the possible CPUs (a variable: a test makes the
// machine look larger, for the program's path beyond PART_CPUS).
var possibleCPUs = ebpf.PossibleCPU

// setCPUs sets nr_cpus: rss_stat's program reads an RSS counter's per-CPU
// parts itself, one per possible CPU (bpf/rss.bpf.h rss_delta).
func setCPUs(spec *ebpf.CollectionSpec) error {
	cpus, err := possibleCPUs()
	if err != nil {
		return fmt.Errorf("counting possible CPUs: %w", err)
	}
	if err := spec.Variables["nr_cpus"].Set(uint32(cpus)); err != nil {
		return fmt.Errorf("setting nr_cpus: %w", err)
	}
	return nil
}

// targetBits is the kernel's target bitmap (bpf/core.bpf.h target_bits),
// mapped into memdiag: one bit per pid modulo its size, set for every
// traced pid, the first test of every BPF handler. Bits are set with atomic
// ors, as fork does in the kernel, and cleared only here (unmarkTargets).
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

// slot is the bit pid shares with every pid equal to it modulo the size.
func (b *targetBits) slot(pid uint32) uint32 { return pid % uint32(len(b.mem)*8) }

// unmarkTargets clears the bits of processes that are gone, unless a live
// target shares one. A fork that makes a sharing target in between sets
// its entry in targets before its bit, so the second look sees it (or the
// fork sets the bit after the clear).
func (t *Tracer) unmarkTargets(pids []uint32) {
	shared := func() map[uint32]bool {
		live := map[uint32]bool{}
		var (
			k uint32
			v memdiagTarget
		)
		it := t.objs.Targets.Iterate()
		for it.Next(&k, &v) {
			live[t.bits.slot(k)] = true
		}
		return live
	}
	live := shared()
	var cleared []uint32
	for _, p := range pids {
		if !live[t.bits.slot(p)] {
			t.bits.clear(p)
			cleared = append(cleared, p)
		}
	}
	if len(cleared) == 0 {
		return
	}
	live = shared()
	for _, p := range cleared {
		if live[t.bits.slot(p)] {
			t.bits.set(p)
		}
	}
}

func (b *targetBits) close() error {
	if b == nil || b.mem == nil {
		return nil
	}
	err := unix.Munmap(b.mem)
	b.mem = nil
	return err
}

// has says whether pid's bit is set.
func (b *targetBits) has(pid uint32) bool {
	return atomic.LoadUint32(b.word(pid))&(1<<(pid%32)) != 0
}
