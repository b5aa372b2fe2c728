package tracer

// Runtime heap sampling: uprobes on the allocation samplers that V8 and the
// Go runtime already run. See "Runtime heap sampling" in bpf/uprobes.bpf.h.

import (
	"debug/buildinfo"
	"debug/elf"
	"debug/gosym"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/memdiag/memdiag/procfs"
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
	// TurnedOn: the profiler was off (MemProfileRate 0, as Go's linker sets
	// it in binaries that never read the profile) and memdiag set it to
	// GoDefaultRate; Close sets it back to 0.
	TurnedOn bool
	// Assumed: the binary is stripped, so the rate could not be read; it
	// is taken as GoDefaultRate (the profile reader is linked).
	Assumed bool
}

// GoDefaultRate is the Go runtime's default runtime.MemProfileRate: one
// sample per 512 KiB allocated, on average.
const GoDefaultRate = 512 * 1024

// AttachGoSampler attaches uprobes on the Go runtime's memory profiler
// (mProf_Malloc, freeSpecial, gcMarkTermination) in the binary at path, for
// process pid only, and reads the process's MemProfileRate. When the
// profiler is off (MemProfileRate = 0) and turnOn is set, it sets
// MemProfileRate to GoDefaultRate in the process — the runtime reads it at
// every allocation and supports changing it at run time (each P re-arms its
// sampling point when it sees a new rate) — and sets it back to 0 when the
// tracer closes. It returns an error wrapping ErrNoSampler when the binary
// is not Go, is older than Go 1.24 (the layout the free probe reads), has no
// symbol table, or has the profiler off and turnOn is not set.
func (t *Tracer) AttachGoSampler(pid int, path string, turnOn bool) (GoSampler, error) {
	var gs GoSampler
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return gs, fmt.Errorf("%w: %s is not a Go binary", ErrNoSampler, path)
	}
	gs.GoVersion = bi.GoVersion
	if !goAtLeast(bi.GoVersion, 1, 24) {
		return gs, fmt.Errorf("%w: %s is built with %s; memdiag joins the Go memory profiler of Go 1.24 and later", ErrNoSampler, path, bi.GoVersion)
	}
	funcs := []string{goMallocSymbol, goFreeSymbol, goGCSymbol}
	syms, err := lookupSymbols(path, append(funcs, goRateSymbol)...)
	if err != nil {
		return gs, fmt.Errorf("%w: %w", ErrNoSampler, err)
	}
	if _, ok := syms[goRateSymbol]; !ok {
		// Stripped (-ldflags=-s): no symbol table, but the pclntab the
		// runtime keeps for stack traces still names every function.
		return t.attachStrippedGo(pid, path, gs)
	}
	for _, name := range funcs {
		if _, ok := syms[name]; !ok {
			return gs, fmt.Errorf("%w: %s has no symbol %s", ErrNoSampler, path, name)
		}
	}
	rate, err := newGoRate(pid, path, syms[goRateSymbol].Value)
	if err != nil {
		return gs, fmt.Errorf("%w: %w", ErrNoSampler, err)
	}
	defer rate.mem.Close()
	current, err := rate.read()
	if err != nil {
		return gs, fmt.Errorf("%w: %w", ErrNoSampler, err)
	}
	if current <= 0 && !turnOn {
		return gs, fmt.Errorf("%w: the Go memory profiler is off in this process (runtime.MemProfileRate = 0): Go's linker turns it off in binaries that never read the profile; --heap-sampling auto or go turns it on for the session", ErrNoSampler)
	}
	gs.Rate = uint64(current)
	if err := t.attachGoProbes(pid, path, syms); err != nil {
		return gs, err
	}
	if current <= 0 {
		// The probes are in place: every sample from here on is seen.
		if err := rate.write(GoDefaultRate); err != nil {
			return gs, fmt.Errorf("%w: turning the Go memory profiler on: %w", ErrNoSampler, err)
		}
		gs.Rate, gs.TurnedOn = GoDefaultRate, true
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		t.links = append(t.links, goRateRestore{pid: pid, exe: exe, addr: rate.addr})
	}
	return gs, nil
}

// attachGoProbes attaches the Go sampler's uprobes at the given functions.
func (t *Tracer) attachGoProbes(pid int, path string, syms map[string]elfSymbol) error {
	for _, p := range []struct {
		sym  string
		prog *ebpf.Program
	}{
		{goMallocSymbol, t.objs.OnGoMalloc},
		{goFreeSymbol, t.objs.OnGoFreeSpecial},
		{goGCSymbol, t.objs.OnGoGc},
	} {
		if err := t.attachAt(pid, path, p.prog, syms[p.sym].Offset, "the Go sampler uprobe "+p.sym); err != nil {
			return err
		}
	}
	return nil
}

// goProfileReader is the function whose reachability decides, at link
// time, whether the memory profiler stays on (runtime/mprof.go: the linker
// sets disableMemoryProfiling when it is unreachable, and drops it).
const goProfileReader = "runtime.memProfileInternal"

// attachStrippedGo attaches the Go sampler to a binary without a symbol
// table, through its pclntab. runtime.MemProfileRate, a variable, cannot be
// found there, so it can be neither read nor turned on: where the profile
// reader was linked, the rate is taken as Go's default (the attribution
// stops trusting the sampler if no sample comes over several GC cycles);
// where it was not, the profiler is off and stays off.
func (t *Tracer) attachStrippedGo(pid int, path string, gs GoSampler) (GoSampler, error) {
	syms, err := goFuncs(path, goMallocSymbol, goFreeSymbol, goGCSymbol, goProfileReader)
	if err != nil {
		return gs, fmt.Errorf("%w: %s has no symbol table (stripped) and %w", ErrNoSampler, path, err)
	}
	for _, name := range []string{goMallocSymbol, goFreeSymbol, goGCSymbol} {
		if _, ok := syms[name]; !ok {
			return gs, fmt.Errorf("%w: %s has no function %s", ErrNoSampler, path, name)
		}
	}
	if _, ok := syms[goProfileReader]; !ok {
		return gs, fmt.Errorf("%w: %s is stripped and never reads the memory profile, so Go's linker turned the profiler off; without a symbol table memdiag cannot find runtime.MemProfileRate to turn it on (build without -ldflags=-s, or link net/http/pprof)", ErrNoSampler, path)
	}
	if err := t.attachGoProbes(pid, path, syms); err != nil {
		return gs, err
	}
	gs.Rate, gs.Assumed = GoDefaultRate, true
	return gs, nil
}

// goFuncs finds Go functions by name in a binary's pclntab (which a
// stripped binary keeps): their entry address and its file offset.
func goFuncs(path string, names ...string) (map[string]elfSymbol, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	pcln, text := f.Section(".gopclntab"), f.Section(".text")
	if pcln == nil || text == nil {
		return nil, errors.New("it has no .gopclntab section")
	}
	data, err := pcln.Data()
	if err != nil {
		return nil, fmt.Errorf("reading its .gopclntab: %w", err)
	}
	tab, err := gosym.NewTable(nil, gosym.NewLineTable(data, text.Addr))
	if err != nil {
		return nil, fmt.Errorf("reading its .gopclntab: %w", err)
	}
	out := map[string]elfSymbol{}
	for _, n := range names {
		if fn := tab.LookupFunc(n); fn != nil {
			out[n] = elfSymbol{Value: fn.Entry, Offset: fileOffset(f, fn.Entry)}
		}
	}
	return out, nil
}

// goRate is runtime.MemProfileRate in a running process.
type goRate struct {
	mem  *os.File // /proc/PID/mem
	addr uint64   // where it is in the process
}

// newGoRate finds runtime.MemProfileRate, at symAddr (the symbol's value;
// plus the load bias of a PIE binary), in process pid.
func newGoRate(pid int, path string, symAddr uint64) (goRate, error) {
	f, err := elf.Open(path)
	if err != nil {
		return goRate{}, err
	}
	defer f.Close()
	// memdiag may write there: the address must be an aligned word of
	// the binary's writable data, and writable in the process.
	sec := sectionAt(f, symAddr)
	if sec == nil || sec.Flags&elf.SHF_WRITE == 0 || sec.Type != elf.SHT_PROGBITS || symAddr%8 != 0 {
		return goRate{}, fmt.Errorf("%s is not an aligned word of %s's writable data", goRateSymbol, path)
	}
	addr := symAddr
	if f.Type == elf.ET_DYN {
		bias, err := loadBias(pid, path, f)
		if err != nil {
			return goRate{}, err
		}
		addr += bias
	}
	if !writableAt(pid, addr) {
		return goRate{}, fmt.Errorf("%s (%#x) is not in a writable mapping of process %d", goRateSymbol, addr, pid)
	}
	mem, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", pid), os.O_RDWR, 0)
	if err != nil {
		return goRate{}, err
	}
	return goRate{mem: mem, addr: addr}, nil
}

func (r goRate) read() (int64, error) {
	var b [8]byte
	if _, err := r.mem.ReadAt(b[:], int64(r.addr)); err != nil {
		return 0, fmt.Errorf("reading %s: %w", goRateSymbol, err)
	}
	return int64(binary.LittleEndian.Uint64(b[:])), nil
}

// write stores v with one aligned 8-byte write, as a Go assignment to the
// variable would.
func (r goRate) write(v int64) error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(v))
	if _, err := r.mem.WriteAt(b[:], int64(r.addr)); err != nil {
		return fmt.Errorf("writing %s: %w", goRateSymbol, err)
	}
	return nil
}

// goRateRestore sets MemProfileRate back to 0 in a process memdiag turned
// the profiler on in, if it still runs the same binary and nobody changed
// the rate since.
type goRateRestore struct {
	pid  int
	exe  string // /proc/PID/exe when it was turned on
	addr uint64
}

func (g goRateRestore) Close() error {
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", g.pid)); err != nil || exe != g.exe {
		return nil // the process is gone, or exec'd another program
	}
	mem, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", g.pid), os.O_RDWR, 0)
	if err != nil {
		return nil // gone meanwhile
	}
	defer mem.Close()
	r := goRate{mem: mem, addr: g.addr}
	if v, err := r.read(); err != nil || v != GoDefaultRate {
		return nil
	}
	if err := r.write(0); err != nil {
		return fmt.Errorf("turning the Go memory profiler of process %d back off: %w", g.pid, err)
	}
	return nil
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

// sectionAt is the section of f holding the virtual address addr.
func sectionAt(f *elf.File, addr uint64) *elf.Section {
	for _, s := range f.Sections {
		if s.Flags&elf.SHF_ALLOC != 0 && addr >= s.Addr && addr+8 <= s.Addr+s.Size {
			return s
		}
	}
	return nil
}

// writableAt says whether the 8 bytes at addr are in a writable mapping of
// process pid.
func writableAt(pid int, addr uint64) bool {
	maps, err := procfs.ReadMaps(pid)
	if err != nil {
		return false
	}
	for _, m := range maps {
		if strings.HasPrefix(m.Perms, "rw") && addr >= m.Start && addr+8 <= m.End {
			return true
		}
	}
	return false
}
