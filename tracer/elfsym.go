package tracer

import (
	"debug/elf"
	"errors"
	"fmt"
)

// probeOffset returns where in the function at address value (a symbol's
// value, from lookupSymbols) of the binary at path a uprobe can go so that
// it still sees the function's arguments. x86 uprobes refuse a
// LOCK-prefixed first instruction (Node's
// NodeArrayBufferAllocator::Free starts with `lock sub %rdx, disp8(%rdi)`,
// its byte counter); such an instruction is skipped when it is that known
// shape, which touches only memory, so the argument registers are intact
// after it. name is the symbol's, for errors.
func probeOffset(path, name string, value uint64) (uint64, error) {
	f, err := elf.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var sec *elf.Section
	for _, s := range f.Sections {
		if s.Type == elf.SHT_PROGBITS && s.Flags&elf.SHF_EXECINSTR != 0 && value >= s.Addr && value < s.Addr+s.Size {
			sec = s
			break
		}
	}
	if sec == nil {
		return 0, fmt.Errorf("symbol %s is not in a code section", name)
	}
	code := make([]byte, 8)
	if _, err := sec.ReadAt(code, int64(value-sec.Addr)); err != nil {
		return 0, fmt.Errorf("reading %s: %w", name, err)
	}
	if code[0] != 0xf0 {
		return 0, nil
	}
	// lock; REX.W; sub r64 -> r/m64 (0x29); ModRM mod=01 (disp8)
	// with an r/m that needs no SIB (not 100).
	if code[1]&0xf8 == 0x48 && code[2] == 0x29 && code[3]&0xc0 == 0x40 && code[3]&0x07 != 0x04 {
		return 5, nil
	}
	return 0, fmt.Errorf("%s starts with a LOCK-prefixed instruction memdiag cannot step over", name)
}

// errSymbolNotFound says a binary has no symbol a uprobe needs.
var errSymbolNotFound = errors.New("symbol not found")
