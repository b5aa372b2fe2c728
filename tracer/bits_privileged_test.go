//go:build privileged

package tracer

import (
	"testing"
)

// TestTargetBitsShared: the bitmap every hook tests first keeps a bit set
// while any live target maps to it, and clears it once none does.
func TestTargetBitsShared(t *testing.T) {
	tr := openDrained(t)
	size := uint32(len(tr.bits.mem) * 8)
	a, b := uint32(3_000_001), 3_000_001+size // pids above any pid_max here: nothing runs as them
	for _, p := range []uint32{a, b} {
		if err := tr.AddTarget(int(p)); err != nil {
			t.Fatal(err)
		}
	}
	if !tr.bits.has(a) || !tr.bits.has(b) || tr.bits.slot(a) != tr.bits.slot(b) {
		t.Fatalf("after AddTarget: bit of %d set=%v, of %d set=%v (slots %d, %d)", a, tr.bits.has(a), b, tr.bits.has(b), tr.bits.slot(a), tr.bits.slot(b))
	}
	if tr.bits.has(a + 1) {
		t.Fatalf("bit of %d set, no such target", a+1)
	}
	// b exits (the kernel deletes its entry): a still needs the bit.
	if err := tr.objs.Targets.Delete(&b); err != nil {
		t.Fatal(err)
	}
	if err := tr.ForgetProcess(b); err != nil {
		t.Fatal(err)
	}
	if !tr.bits.has(a) {
		t.Fatalf("forgetting %d cleared the bit live target %d shares", b, a)
	}
	if err := tr.objs.Targets.Delete(&a); err != nil {
		t.Fatal(err)
	}
	if err := tr.ForgetProcess(a); err != nil {
		t.Fatal(err)
	}
	if tr.bits.has(a) {
		t.Fatalf("bit of %d still set after its last target was forgotten", a)
	}
}
