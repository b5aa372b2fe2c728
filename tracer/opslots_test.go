package tracer

import "testing"

// TestOpSlots: the slot count is the bucket table's size rounded up to a
// power of two (at least 64), and op ids that follow one another land on
// slots spread over the table, every slot reachable.
func TestOpSlots(t *testing.T) {
	for in, want := range map[int]uint32{64: 64, 65: 128, 1000: 1024, 16384: 16384} {
		if got := opSlots(in); got != want {
			t.Errorf("opSlots(%d) = %d, want %d", in, got, want)
		}
	}
	const slots = 64
	seen := map[uint32]bool{}
	for id := uint64(1); id <= 8; id++ {
		seen[opSlotIndex(id, slots)] = true
	}
	if len(seen) < 7 {
		t.Errorf("8 consecutive ids on %d distinct slots of %d", len(seen), slots)
	}
	for id := uint64(1); id <= 64*slots && len(seen) < slots; id++ {
		seen[opSlotIndex(id, slots)] = true
	}
	if len(seen) != slots {
		t.Errorf("only %d of %d slots reachable", len(seen), slots)
	}
}
