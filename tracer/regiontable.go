package tracer

import (
	"errors"
	"fmt"
	"math/bits"

	"github.com/cilium/ebpf"
)

// The region table (bpf/mappings.bpf.h): a mapping of len bytes has the
// level L = max(12, ceil(log2(len))) and is stored in a slot of the
// `regions` entry keyed by (tgid, exec generation, the aligned chunk of
// 2^L bytes where it starts). A chunk holds the starts of at most two
// mappings of its level, and the mapping that holds addr starts in the
// chunk addr >> L or the one before, for some level L the process uses
// (`region_levels`). These functions mirror the kernel's, for seeding at
// attach and for tests that check the kernel's table.

const (
	minRegionLevel = 12
	maxRegionLevel = 57
	regionClaimed  = 1 // REGION_CLAIMED: a slot being written
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

// errChunkFull says a chunk had no free slot.
var errChunkFull = errors.New("region table chunk full")

// putRegion stores a mapping found at attach, as region_put does; one the
// kernel stored already (mapped since attach) is left alone.
func (t *Tracer) putRegion(tgid uint32, r *memdiagRegion) error {
	if r.Len <= regionClaimed {
		return nil
	}
	level := regionLevel(r.Len)
	key := memdiagRegionKey{Tgid: tgid, Gen: r.Gen, Chunk: chunkOf(r.Start, level)}
	var s memdiagRegionSlots
	if err := t.objs.Regions.Lookup(&key, &s); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("reading the region table: %w", err)
	}
	free := -1
	for i, o := range s.R {
		if o.Len > regionClaimed && o.Start < r.Start+r.Len && r.Start < o.Start+o.Len {
			return nil // the kernel's, mapped since attach
		}
		if o.Len == 0 && free < 0 {
			free = i
		}
	}
	if free < 0 {
		return fmt.Errorf("seeding mapping %#x+%#x: %w", r.Start, r.Len, errChunkFull)
	}
	// The kernel may claim the same slot meanwhile: a mapping made since
	// attach in this very chunk, which the update would overwrite. The
	// attach seeds before the kernel's hooks see the process map much.
	s.R[free] = *r
	if err := t.objs.Regions.Update(&key, &s, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("seeding the region table: %w", err)
	}
	// The kernel sets bits with an atomic or; this read-modify-write can
	// lose one it sets in between, until its next mapping of that level.
	var levels uint64
	_ = t.objs.RegionLevels.Lookup(&tgid, &levels)
	if bit := uint64(1) << level; levels&bit == 0 {
		levels |= bit
		if err := t.objs.RegionLevels.Update(&tgid, &levels, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("seeding region levels: %w", err)
		}
	}
	return nil
}

// regionsChanged bumps the kernel's regions_epoch after userspace changed
// the region table (seeding, forgetting a process), as the kernel's
// regions_changed does after its own changes, so no CPU's cached mapping
// (struct region_cache) answers from the table as it was. A syscall
// cannot add atomically: the kernel may bump the epoch between the read
// and the write, and writing read+1 could then take it back to a value a
// cache holds. Read+2^32 lies past any bump made in between, so the epoch
// only moves up and never comes back to a cached value.
func (t *Tracer) regionsChanged() error {
	var zero uint32
	var epoch uint64
	if err := t.objs.RegionsEpoch.Lookup(&zero, &epoch); err != nil {
		return fmt.Errorf("reading the region table's epoch: %w", err)
	}
	epoch += 1 << 32
	if err := t.objs.RegionsEpoch.Update(&zero, &epoch, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("bumping the region table's epoch: %w", err)
	}
	return nil
}

// regionAt finds the mapping of tgid's image gen that holds addr, as
// region_find does.
func (t *Tracer) regionAt(tgid, gen uint32, addr uint64) (memdiagRegion, bool, error) {
	var levels uint64
	if err := t.objs.RegionLevels.Lookup(&tgid, &levels); err != nil {
		return memdiagRegion{}, false, nil
	}
	for l := uint32(minRegionLevel); l <= maxRegionLevel && levels>>l != 0; l++ {
		if levels>>l&1 == 0 {
			continue
		}
		c := chunkOf(addr, l)
		for _, chunk := range []uint64{c, c - 64} {
			if chunk > c {
				continue // before the first chunk
			}
			key := memdiagRegionKey{Tgid: tgid, Gen: gen, Chunk: chunk}
			var s memdiagRegionSlots
			if err := t.objs.Regions.Lookup(&key, &s); err != nil {
				continue
			}
			for _, o := range s.R {
				if o.Len > regionClaimed && o.Start <= addr && addr-o.Start < o.Len {
					if regionLevel(o.Len) != l {
						return o, false, fmt.Errorf("mapping %#x+%#x is in a chunk of level %d", o.Start, o.Len, l)
					}
					return o, true, nil
				}
			}
		}
	}
	return memdiagRegion{}, false, nil
}
