package tracer

import (
	"math/rand/v2"
	"testing"
)

// maxBlocks is MAX_BLOCKS in bpf/mappings.bpf.h: the kernel's
// region_blocks stops after that many blocks, so a tiling the Go side
// seeds (putRegion) must never need more, or the kernel would leave its
// tail behind when the mapping goes.
const maxBlocks = 96

// TestRegionBlocks: regionBlocks tiles a page-rounded range exactly, in
// order, with aligned power-of-two blocks, each as large as its start's
// alignment and the length left allow (the kernel's rule, so both sides
// name the same LPM keys), in at most maxBlocks blocks.
func TestRegionBlocks(t *testing.T) {
	check := func(start, length uint64) {
		t.Helper()
		bs := regionBlocks(start, length)
		pos, left := start&^4095, (length+4095)&^4095
		if len(bs) > maxBlocks {
			t.Fatalf("[%#x, +%#x): %d blocks, the kernel tiles at most %d", start, length, len(bs), maxBlocks)
		}
		for _, b := range bs {
			size := uint64(1) << b.log2
			if b.start != pos || b.start%size != 0 || size < 4096 || size > left {
				t.Fatalf("[%#x, +%#x): block %#x/%d at %#x with %#x left", start, length, b.start, b.log2, pos, left)
			}
			// As large as allowed: doubling it breaks alignment or length.
			if b.start%(2*size) == 0 && 2*size <= left {
				t.Fatalf("[%#x, +%#x): block %#x/%d could be twice as large", start, length, b.start, b.log2)
			}
			pos, left = pos+size, left-size
		}
		if left != 0 {
			t.Fatalf("[%#x, +%#x): %#x not tiled", start, length, left)
		}
	}
	check(0x7f0000000000, 1<<30)        // aligned: one block
	check(0x7f0000001000, 4096)         // one page
	check(0x7f0000001234, 10)           // rounded to its page
	check(0x7f0000001000, 0x7fffffe000) // the worst shape: every size down and up again
	check(0x555555554000, 0)            // nothing
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20000; i++ {
		start := r.Uint64N(1<<47) &^ 4095
		check(start, r.Uint64N(1<<47-start))
	}
}
