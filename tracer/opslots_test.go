package tracer

import "testing"

// TestOpSlots: the slot count is the bucket table's size rounded up to a
// power of two, at least 64 and at most 2^opSlotBits; an id's slot is its
// low bits.
func TestOpSlots(t *testing.T) {
	for in, want := range map[int]uint32{64: 64, 65: 128, 1000: 1024, 16384: 16384, 1 << 24: 1 << opSlotBits} {
		if got := opSlots(in); got != want {
			t.Errorf("opSlots(%d) = %d, want %d", in, got, want)
		}
	}
	if got := opSlotIndex(7<<opSlotBits|42, 64); got != 42 {
		t.Errorf("op 7<<%d|42 in slot %d of 64, want 42", opSlotBits, got)
	}
}
