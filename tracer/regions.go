package tracer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"

	"github.com/memdiag/memdiag/procfs"
)

// Region classes: the kernel's enum region_class, as bpf2go generates it.
const (
	classUnknown = uint32(memdiagRegionClassRC_UNKNOWN)
	classNative  = uint32(memdiagRegionClassRC_NATIVE)
	classRuntime = uint32(memdiagRegionClassRC_RUNTIME)
	classFile    = uint32(memdiagRegionClassRC_FILE)
	classStack   = uint32(memdiagRegionClassRC_STACK)
	classShared  = uint32(memdiagRegionClassRC_SHARED)
)

// arenaAlign is glibc's HEAP_MAX_SIZE on 64-bit: its non-main arenas are
// mappings aligned to it.
const arenaAlign = 64 << 20

// LearnProcess reads the process's mappings and gives the kernel what it
// needs to classify memory: the C library's address range (a mapping
// made from there is the native allocator's) and, when seed is set, the
// mappings that exist already (the brk heap and glibc arenas as native,
// files, stacks, the rest as runtime), owned by no bucket. It reports
// whether the C library was found (a process just exec'd may not have
// mapped it yet).
func (t *Tracer) LearnProcess(pid int, seed bool) (bool, error) {
	maps, err := procfs.ReadMaps(pid)
	if err != nil {
		return false, fmt.Errorf("reading the mappings of process %d: %w", pid, err)
	}
	key := uint32(pid)
	lo, hi, found := procfs.LibcRange(maps)
	if found {
		if err := t.objs.LibcRanges.Update(&key, &memdiagLibcRange{Lo: lo, Hi: hi}, ebpf.UpdateAny); err != nil {
			return false, fmt.Errorf("setting the libc range of process %d: %w", pid, err)
		}
	}
	if !seed {
		return found, nil
	}
	var tgt memdiagTarget
	gen := uint32(0)
	if err := t.objs.Targets.Lookup(&key, &tgt); err == nil {
		gen = tgt.Gen
	}
	mem, _ := os.Open(fmt.Sprintf("/proc/%d/mem", pid)) // nil: arenas fall back to alignment
	if mem != nil {
		defer mem.Close()
	}
	classes := seedClasses(maps, func(addr uint64) ([2]uint64, bool) {
		var w [2]uint64
		if mem == nil {
			return w, false
		}
		var b [16]byte
		if _, err := mem.ReadAt(b[:], int64(addr)); err != nil {
			return w, false
		}
		w[0], w[1] = binary.LittleEndian.Uint64(b[:8]), binary.LittleEndian.Uint64(b[8:])
		return w, true
	})
	// A seeded entry may overwrite one the kernel changed meanwhile
	// (putRegion), so caches of the kernel's answers go, even on error.
	var errs []error
	for i, m := range maps {
		r := memdiagRegion{Start: m.Start, Len: m.End - m.Start, Class: classes[i], Counted: 0, Gen: gen}
		if err := t.putRegion(key, &r); err != nil {
			errs = append(errs, err)
			break
		}
	}
	errs = append(errs, t.regionsChanged())
	return found, errors.Join(errs...)
}

// seedClasses classifies the mappings found at attach (seedClass), and
// recognizes glibc's non-main arenas by what they are: a mapping aligned to
// HEAP_MAX_SIZE that starts with a heap_info whose mprotect_size (the word
// at +24, read through sizeAt with size at +16) is its writable part and
// whose size is no larger. Such an arena and the PROT_NONE reservation that follows it (which
// glibc commits with mprotect as the arena grows) are native. Without a
// readable header, alignment alone decides, as seedClass does.
func seedClasses(maps []procfs.Mapping, sizeAt func(addr uint64) ([2]uint64, bool)) []uint32 {
	classes := make([]uint32, len(maps))
	arenaEnd := uint64(0) // end of the arena reservation being walked
	for i, m := range maps {
		classes[i] = seedClass(m)
		anon := m.Path == "" && !(len(m.Perms) == 4 && m.Perms[3] == 's')
		if !anon {
			continue
		}
		if m.Start < arenaEnd {
			classes[i] = classNative // the rest of an arena's reservation
			continue
		}
		if m.Start%arenaAlign != 0 {
			continue
		}
		w, ok := sizeAt(m.Start + 16)
		switch {
		case !ok:
			// No header to read (no permission, or PROT_NONE): keep
			// the alignment's answer.
		case w[1] == m.End-m.Start && w[0] <= w[1] && w[0] > 0 && w[1] <= arenaAlign:
			classes[i] = classNative
			arenaEnd = m.Start + arenaAlign
		default:
			classes[i] = classRuntime // aligned, but not an arena (a runtime's reservation)
		}
	}
	return classes
}

// seedClass classifies a mapping found at attach.
func seedClass(m procfs.Mapping) uint32 {
	switch {
	case m.Path == "[heap]":
		return classNative
	case m.Path == "[stack]" || len(m.Path) > 7 && m.Path[:7] == "[stack:":
		return classStack
	case m.Path != "" && m.Path[0] == '/' && m.Inode != 0:
		return classFile
	case m.Path != "":
		return classRuntime // [vdso], [vvar], anon_inode…
	case len(m.Perms) == 4 && m.Perms[3] == 's':
		return classShared
	case m.Start%arenaAlign == 0:
		return classNative
	}
	return classRuntime
}

// ForgetProcess drops the kernel's region table, libc range and sockets
// of processes that exited.
func (t *Tracer) ForgetProcess(pids ...uint32) error {
	t.unmarkTargets(pids)
	return t.forgetRegions(pids, true)
}

// ForgetOldImage drops the regions a process mapped before its last exec;
// those of its new image (mapped since, tagged with the new generation)
// stay.
func (t *Tracer) ForgetOldImage(pid uint32) error {
	return t.forgetRegions([]uint32{pid}, false)
}

func (t *Tracer) forgetRegions(pids []uint32, all bool) error {
	dead := map[uint32]bool{}
	gens := map[uint32]uint32{}
	for _, p := range pids {
		dead[p] = true
		var tgt memdiagTarget
		if err := t.objs.Targets.Lookup(&p, &tgt); err == nil {
			gens[p] = tgt.Gen
		}
	}
	errs := []error{
		deleteWhere(t.objs.Regions, "regions", func(k memdiagRegionKey, _ memdiagRegionSlots) bool {
			return dead[k.Tgid] && (all || k.Gen != gens[k.Tgid])
		}),
	}
	for _, p := range pids {
		if !all {
			break
		}
		if err := t.objs.RegionLevels.Delete(&p); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("deleting region levels: %w", err))
		}
	}
	// A pid may come back as a new target (a child forked by another)
	// whose image has the same generation: no cache may answer for it
	// from the old process's mappings.
	errs = append(errs, t.regionsChanged())
	for _, p := range pids {
		if !all {
			break
		}
		if err := t.objs.LibcRanges.Delete(&p); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("deleting a libc range: %w", err))
		}
	}
	if all {
		// A process's exit closes its sockets without a close syscall:
		// their entries go here. The kernel takes a socket it knows for
		// a target's without looking the target up (ops.bpf.h,
		// read_done), so none may outlive its process.
		errs = append(errs, deleteWhere(t.objs.Sockets, "sockets", func(k memdiagSockKey, _ memdiagSockInfo) bool { return dead[k.Tgid] }))
	}
	return errors.Join(errs...)
}
