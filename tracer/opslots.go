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
			Key:      event.BucketKey{PID: o.Tgid, Kind: event.BucketOp, ID: o.OpId},
			Counters: counters(&o.C),
		})
	})
}

// freeOpSlot frees the slot of op id when the op still holds it: for an
// op userspace ends itself (its end record was lost, or its process is
// gone). The kernel never touches such a slot again but to charge it (its
// socket has moved on), so the write races with a late charge, lost with
// the op, and, in the instant the kernel copies the zeroed value in, with
// a new op claiming the slot the moment its id reads 0: that op could
// start with its process and start time zeroed. Both rare (a lost end
// record, a process gone) and small; a slot is never lost or shared.
func (t *Tracer) freeOpSlot(id uint64) error {
	idx := opSlotIndex(id, t.objs.OpSlots.MaxEntries())
	var o memdiagOpSlot
	if err := t.objs.OpSlots.Lookup(&idx, &o); err != nil {
		return fmt.Errorf("reading op slot %d: %w", idx, err)
	}
	if o.OpId != id {
		return nil
	}
	if err := t.objs.OpSlots.Update(&idx, &memdiagOpSlot{}, ebpf.UpdateExist); err != nil {
		return fmt.Errorf("freeing op slot %d: %w", idx, err)
	}
	return nil
}

// freeOpSlotsOf frees the slots of every op of the processes in pids.
func (t *Tracer) freeOpSlotsOf(pids map[uint32]bool) error {
	var ids []uint64
	err := t.heldOpSlots(func(o *memdiagOpSlot) {
		if pids[o.Tgid] {
			ids = append(ids, o.OpId)
		}
	})
	for _, id := range ids {
		err = errors.Join(err, t.freeOpSlot(id))
	}
	return err
}
