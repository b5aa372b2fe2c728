package tracer

import (
	"debug/elf"
	"errors"
	"fmt"
)

// probeOffset returns where in symbol a uprobe can go so that it still
// sees the function's arguments. x86 uprobes refuse a LOCK-prefixed first
// instruction (Node's NodeArrayBufferAllocator::Free starts with
// `lock sub %rdx, disp8(%rdi)`, its byte counter); such an instruction is
// skipped when it is that known shape, which touches only memory, so the
// argument registers are intact after it.
func probeOffset(path, symbol string) (uint64, error) {
	f, err := elf.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	syms, _ := f.DynamicSymbols()
	if more, err := f.Symbols(); err == nil {
		syms = append(syms, more...)
	}
	for _, s := range syms {
		if s.Name != symbol || s.Value == 0 {
			continue
		}
		sec := f.Sections[s.Section]
		if int(s.Section) >= len(f.Sections) || sec.Type != elf.SHT_PROGBITS {
			return 0, fmt.Errorf("symbol %s is not in a code section", symbol)
		}
		code := make([]byte, 8)
		if _, err := sec.ReadAt(code, int64(s.Value-sec.Addr)); err != nil {
			return 0, fmt.Errorf("reading %s: %w", symbol, err)
		}
		if code[0] != 0xf0 {
			return 0, nil
		}
		// lock; REX.W; sub r64 -> r/m64 (0x29); ModRM mod=01 (disp8)
		// with an r/m that needs no SIB (not 100).
		if code[1]&0xf8 == 0x48 && code[2] == 0x29 && code[3]&0xc0 == 0x40 && code[3]&0x07 != 0x04 {
			return 5, nil
		}
		return 0, fmt.Errorf("%s starts with a LOCK-prefixed instruction memdiag cannot step over", symbol)
	}
	return 0, errSymbolNotFound
}

// errSymbolNotFound says probeOffset found no such symbol (the uprobe
// attach that follows reports it to the user).
var errSymbolNotFound = errors.New("symbol not found")
