package tracer

// Runtime heap sampling: uprobes on the allocation samplers that V8 and the
// Go runtime already run. See "Runtime heap sampling" in bpf/uprobes.bpf.h.

import (
	"debug/buildinfo"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Symbols the samplers probe.
const (
	// V8SampleSymbol is v8::internal::SamplingHeapProfiler::SampleObject
	// (Address, size_t): called once per sample of V8's sampling heap
	// profiler.
	V8SampleSymbol = "_ZN2v88internal20SamplingHeapProfiler12SampleObjectEmm"
	goMallocSymbol = "runtime.mProf_Malloc"
	goFreeSymbol   = "runtime.freeSpecial"
	goGCSymbol     = "runtime.gcMarkTermination"
	goRateSymbol   = "runtime.MemProfileRate"
)

// ErrNoSampler means the target's binary has no sampler memdiag can join:
// not Node.js or Go, stripped, or too old. The caller falls back to the
// mapping-level estimate and says so.
var ErrNoSampler = errors.New("no runtime heap sampler")

// IgnorePort makes connections accepted on the local port never ops: memdiag
// uses it for its own connections to the target's inspector.
func (t *Tracer) IgnorePort(port uint16) error {
	one := uint8(1)
	if err := t.objs.IgnoredPorts.Update(&port, &one, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("ignoring port %d: %w", port, err)
	}
	return nil
}

// ResetV8Samples restarts the numbering of V8 samples of process pid: call
// it before the profiler starts sampling, whose ordinals start at 1.
func (t *Tracer) ResetV8Samples(pid int) error {
	key := uint32(pid)
	if err := t.objs.V8Samples.Delete(&key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("resetting the V8 sample count of %d: %w", pid, err)
	}
	return nil
}

// V8Samples returns how many V8 samples process pid has taken since the
// last ResetV8Samples: the highest ordinal handed out so far.
func (t *Tracer) V8Samples(pid int) (uint64, error) {
	key := uint32(pid)
	var n uint64
	if err := t.objs.V8Samples.Lookup(&key, &n); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return 0, nil
		}
		return 0, fmt.Errorf("reading the V8 sample count of %d: %w", pid, err)
	}
	return n, nil
}

// AttachV8Sampler attaches the uprobe on V8's SampleObject in the binary at
// path, for process pid only. It fires once per sample (one per sampling
// interval of bytes allocated), only while the sampling heap profiler runs.
func (t *Tracer) AttachV8Sampler(pid int, path string) error {
	syms, err := lookupSymbols(path, V8SampleSymbol)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNoSampler, err)
	}
	sym, ok := syms[V8SampleSymbol]
	if !ok || sym.Offset == 0 {
		return fmt.Errorf("%w: %s has no symbol v8::internal::SamplingHeapProfiler::SampleObject", ErrNoSampler, path)
	}
	return t.attachAt(pid, path, t.objs.OnV8Sample, sym.Offset, "the V8 sampler uprobe")
}

// attachAt attaches prog as a uprobe at a file offset of the binary at
// path, for process pid only: no symbol table is loaded (lookupSymbols
// found the offset).
func (t *Tracer) attachAt(pid int, path string, prog *ebpf.Program, offset uint64, what string) error {
	ex, err := link.OpenExecutable(path)
	if err != nil {
		return fmt.Errorf("opening %s: %w", path, err)
	}
	l, err := ex.UprobeMulti(nil, prog, &link.UprobeMultiOptions{PID: uint32(pid), Addresses: []uint64{offset}})
	if err != nil {
		return fmt.Errorf("attaching %s to process %d: %w", what, pid, err)
	}
	t.links = append(t.links, l)
	return nil
}

// GoSampler describes the Go runtime's memory profiler in a binary.
type GoSampler struct {
	GoVersion string
	Rate      uint64 // runtime.MemProfileRate of the running process: bytes between samples
}

// AttachGoSampler attaches uprobes on the Go runtime's memory profiler
// (mProf_Malloc, freeSpecial, gcMarkTermination) in the binary at path, for
// process pid only, and reads the process's MemProfileRate. It returns an
// error wrapping ErrNoSampler when the binary is not Go, is older than Go
// 1.24 (the layout the free probe reads), has no symbol table, or has the
// profiler off (MemProfileRate = 0).
func (t *Tracer) AttachGoSampler(pid int, path string) (GoSampler, error) {
	var gs GoSampler
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return gs, fmt.Errorf("%w: %s is not a Go binary", ErrNoSampler, path)
	}
	gs.GoVersion = bi.GoVersion
	if !goAtLeast(bi.GoVersion, 1, 24) {
		return gs, fmt.Errorf("%w: %s is built with %s; memdiag joins the Go memory profiler of Go 1.24 and later", ErrNoSampler, path, bi.GoVersion)
	}
	syms, err := lookupSymbols(path, goMallocSymbol, goFreeSymbol, goGCSymbol, goRateSymbol)
	if err != nil {
		return gs, fmt.Errorf("%w: %w", ErrNoSampler, err)
	}
	for _, name := range []string{goMallocSymbol, goFreeSymbol, goGCSymbol, goRateSymbol} {
		if _, ok := syms[name]; !ok {
			return gs, fmt.Errorf("%w: %s has no symbol %s (stripped?)", ErrNoSampler, path, name)
		}
	}
	rate, err := goMemProfileRate(pid, path, syms[goRateSymbol].Value)
	if err != nil {
		return gs, fmt.Errorf("%w: %w", ErrNoSampler, err)
	}
	if rate <= 0 {
		return gs, fmt.Errorf("%w: the Go memory profiler is off in this process (runtime.MemProfileRate = 0): Go's linker turns it off in binaries that never read the profile; a service that imports net/http/pprof or runtime/pprof (or sets MemProfileRate) gets a sampled verdict", ErrNoSampler)
	}
	gs.Rate = uint64(rate)
	for _, p := range []struct {
		sym  string
		prog *ebpf.Program
	}{
		{goMallocSymbol, t.objs.OnGoMalloc},
		{goFreeSymbol, t.objs.OnGoFreeSpecial},
		{goGCSymbol, t.objs.OnGoGc},
	} {
		if err := t.attachAt(pid, path, p.prog, syms[p.sym].Offset, "the Go sampler uprobe "+p.sym); err != nil {
			return gs, err
		}
	}
	return gs, nil
}

// goAtLeast reports whether a "go1.N[.M]" version is at least major.minor.
func goAtLeast(v string, major, minor int) bool {
	v = strings.TrimPrefix(v, "go")
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return false
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(strings.TrimFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}

// goMemProfileRate reads runtime.MemProfileRate, at addr (the symbol's
// value; plus the load bias of a PIE binary), from the memory of process pid.
func goMemProfileRate(pid int, path string, addr uint64) (int64, error) {
	f, err := elf.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if f.Type == elf.ET_DYN {
		bias, err := loadBias(pid, path, f)
		if err != nil {
			return 0, err
		}
		addr += bias
	}
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		return 0, err
	}
	defer mem.Close()
	var b [8]byte
	if _, err := mem.ReadAt(b[:], int64(addr)); err != nil {
		return 0, fmt.Errorf("reading %s of process %d: %w", goRateSymbol, pid, err)
	}
	return int64(binary.LittleEndian.Uint64(b[:])), nil
}

// loadBias is where a PIE binary was loaded: the start of its first mapping
// minus the lowest virtual address of its loadable segments.
func loadBias(pid int, path string, f *elf.File) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return 0, err
	}
	target, _ := os.Readlink(path)
	var lowest uint64 = ^uint64(0)
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && p.Vaddr < lowest {
			lowest = p.Vaddr &^ 4095
		}
	}
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 6 || (fields[5] != target && fields[5] != path) || fields[2] != "00000000" {
			continue
		}
		start, err := strconv.ParseUint(strings.SplitN(fields[0], "-", 2)[0], 16, 64)
		if err != nil {
			return 0, err
		}
		return start - lowest, nil
	}
	return 0, fmt.Errorf("the binary %s is not mapped by process %d", target, pid)
}
