package tracer

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/memdiag/memdiag/event"
)

// opSlotBits is the kernel's OP_SLOT_BITS: an op id's low bits are its
// slot (bpf/core.bpf.h, op_slots).
const opSlotBits = 20

// MaxBuckets is the largest bucket table a tracer takes (Config.MaxBuckets,
// --max-buckets): its op slots, as many, are at most 2^opSlotBits.
const MaxBuckets = 1 << opSlotBits

// opSlots is the number of op slots beside a bucket table of maxBuckets
// entries: as many, rounded up to a power of two (the slot is an id's low
// bits), at most 2^opSlotBits.
func opSlots(maxBuckets int) uint32 {
	n := uint32(64)
	for int(n) < maxBuckets && n < 1<<opSlotBits {
		n <<= 1
	}
	return n
}

// opSlotIndex is the index of op id's slot among slots (a power of two),
// as the kernel reads it (op_slot).
func opSlotIndex(id uint64, slots uint32) uint32 {
	return uint32(id) & (slots - 1)
}

// opSlotBatch is how many op slots one read of the table copies (~43 KiB).
const opSlotBatch = 256

// heldOpSlots calls f with every op slot an op holds: the live ops'
// counters, read a batch at a time.
func (t *Tracer) heldOpSlots(f func(s *memdiagOpSlot)) error {
	keys := make([]uint32, opSlotBatch)
	vals := make([]memdiagOpSlot, opSlotBatch)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := t.objs.OpSlots.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			if vals[i].OpId != 0 {
				f(&vals[i])
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading op slots: %w", err)
		}
	}
}

// opBuckets appends the live ops' buckets to s.
func (t *Tracer) opBuckets(s *event.Snapshot) error {
	return t.heldOpSlots(func(o *memdiagOpSlot) {
		s.Buckets = append(s.Buckets, event.Bucket{
			Key:      bucketKey(o.Tgid, uint32(event.BucketOp), o.OpId),
			Counters: counters(&o.C),
		})
	})
}

// opSeq is the id userspace knows an op by: the kernel's id without its
// slot, the op's sequence number. Dense, as userspace's tables of ended
// ops expect (a bit per id: one map word per 64 ops, not one per op).
func opSeq(kernelID uint64) uint64 { return kernelID >> opSlotBits }

// bucketKey is a kernel bucket key as userspace knows it: an op's id, or
// the id of the op a BK_FREED bucket credits, is its sequence number.
func bucketKey(tgid, kind uint32, id uint64) event.BucketKey {
	k := event.BucketKey{PID: tgid, Kind: event.BucketKind(kind), ID: id}
	if k.Kind == event.BucketOp || k.Kind == event.BucketFreed {
		k.ID = opSeq(id)
	}
	return k
}

// freeOpSlots frees the slots of the held ops that match: ops userspace
// ends itself (their end record was lost, or their process is gone). The
// kernel never touches such a slot again but to charge it (its socket has
// moved on), so the write races with a late charge, lost with the op,
// and, in the instant the kernel copies the zeroed value in, with a new op
// claiming the slot the moment its id reads 0: that op could start with
// its process and start time zeroed. Both rare (a lost end record, a
// process gone) and small; a slot is never lost or shared.
func (t *Tracer) freeOpSlots(match func(*memdiagOpSlot) bool) error {
	var ids []uint64
	err := t.heldOpSlots(func(o *memdiagOpSlot) {
		if match(o) {
			ids = append(ids, o.OpId)
		}
	})
	slots := t.objs.OpSlots.MaxEntries()
	for _, id := range ids {
		idx := opSlotIndex(id, slots)
		var o memdiagOpSlot
		if e := t.objs.OpSlots.Lookup(&idx, &o); e != nil {
			err = errors.Join(err, fmt.Errorf("reading op slot %d: %w", idx, e))
			continue
		}
		if o.OpId != id {
			continue // ended meanwhile
		}
		if e := t.objs.OpSlots.Update(&idx, &memdiagOpSlot{}, ebpf.UpdateExist); e != nil {
			err = errors.Join(err, fmt.Errorf("freeing op slot %d: %w", idx, e))
		}
	}
	return err
}
