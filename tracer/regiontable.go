package tracer

import (
	"errors"
	"fmt"
	"math/bits"

	"github.com/cilium/ebpf"
)

// The region table (bpf/mappings.bpf.h): one `regions` entry per mapping,
// keyed by (tgid, exec generation, start), and the `region_index` that
// finds the mapping holding an address. A mapping of len bytes has the
// level L = max(12, ceil(log2(len))); it is listed in the index under the
// aligned chunks of 2^L bytes it meets (one or two), and a chunk lists at
// most three mappings of its level. The mapping holding addr is in the
// chunk addr >> L of some level L the process uses (`region_levels`).
// These functions mirror the kernel's, for seeding at attach and for
// tests that check the kernel's table.

const (
	minRegionLevel = 12
	maxRegionLevel = 57
	chunkSlots     = 4
)

// regionLevel mirrors region_level.
func regionLevel(n uint64) uint32 {
	if n <= 1<<minRegionLevel {
		return minRegionLevel
	}
	return min(uint32(bits.Len64(n-1)), maxRegionLevel)
}

// chunkOf mirrors chunk_of.
func chunkOf(addr uint64, level uint32) uint64 {
	return addr>>level<<6 | uint64(level)
}

// regionChunks lists the index chunks of [start, start+n).
func regionChunks(start, n uint64) []uint64 {
	l := regionLevel(n)
	first, last := chunkOf(start, l), chunkOf(start+n-1, l)
	if first == last {
		return []uint64{first}
	}
	return []uint64{first, last}
}

// errChunkFull says an index chunk had no free slot.
var errChunkFull = errors.New("region index chunk full")

// putRegion stores a mapping found at attach, as region_put does; one the
// kernel stored already (mapped since attach) is left alone.
func (t *Tracer) putRegion(tgid uint32, r *memdiagRegion) error {
	if r.Len == 0 {
		return nil
	}
	key := memdiagRegionKey{Tgid: tgid, Gen: r.Gen, Start: r.Start}
	if err := t.objs.Regions.Update(&key, r, ebpf.UpdateNoExist); err != nil {
		if errors.Is(err, ebpf.ErrKeyExist) {
			return nil
		}
		return fmt.Errorf("seeding the region table: %w", err)
	}
	for _, c := range regionChunks(r.Start, r.Len) {
		ck := memdiagRegionChunkKey{Tgid: tgid, Gen: r.Gen, Chunk: c}
		var rc memdiagRegionChunk
		if err := t.objs.RegionIndex.Lookup(&ck, &rc); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("reading the region index: %w", err)
		}
		free := -1
		for i := range chunkSlots {
			if rc.Start[i] == 0 && free < 0 {
				free = i
			}
		}
		if free < 0 {
			return fmt.Errorf("seeding mapping %#x+%#x: %w", r.Start, r.Len, errChunkFull)
		}
		rc.Start[free], rc.End[free] = r.Start, r.Start+r.Len
		if err := t.objs.RegionIndex.Update(&ck, &rc, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("seeding the region index: %w", err)
		}
	}
	// The kernel sets bits with an atomic or; this read-modify-write can
	// lose one it sets in between, until its next mapping of that level.
	var levels uint64
	_ = t.objs.RegionLevels.Lookup(&tgid, &levels)
	if bit := uint64(1) << regionLevel(r.Len); levels&bit == 0 {
		levels |= bit
		if err := t.objs.RegionLevels.Update(&tgid, &levels, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("seeding region levels: %w", err)
		}
	}
	return nil
}

// regionAt finds the mapping of tgid's image gen that holds addr through
// the index, as region_at does.
func (t *Tracer) regionAt(tgid, gen uint32, addr uint64) (memdiagRegion, bool, error) {
	var r memdiagRegion
	key := memdiagRegionKey{Tgid: tgid, Gen: gen, Start: addr}
	if err := t.objs.Regions.Lookup(&key, &r); err == nil {
		return r, true, nil
	}
	var levels uint64
	if err := t.objs.RegionLevels.Lookup(&tgid, &levels); err != nil {
		return r, false, nil
	}
	for l := uint32(minRegionLevel); l <= maxRegionLevel && levels>>l != 0; l++ {
		if levels>>l&1 == 0 {
			continue
		}
		ck := memdiagRegionChunkKey{Tgid: tgid, Gen: gen, Chunk: chunkOf(addr, l)}
		var rc memdiagRegionChunk
		if err := t.objs.RegionIndex.Lookup(&ck, &rc); err != nil {
			continue
		}
		for i := range chunkSlots {
			if rc.Start[i] != 0 && rc.Start[i] <= addr && addr < rc.End[i] {
				key.Start = rc.Start[i]
				if err := t.objs.Regions.Lookup(&key, &r); err != nil {
					return r, false, fmt.Errorf("index lists %#x, the table has no such mapping: %w", rc.Start[i], err)
				}
				if addr < r.Start || addr-r.Start >= r.Len {
					return r, false, fmt.Errorf("index lists %#x for %#x, the mapping is %#x+%#x", rc.Start[i], addr, r.Start, r.Len)
				}
				return r, true, nil
			}
		}
	}
	return r, false, nil
}
