package tracer

// A lean ELF symbol lookup for uprobes: the offsets of a few named functions
// (and the address of a variable), found by streaming the symbol and string
// tables with bounded memory. debug/elf's Symbols, which the uprobe library
// uses when given names, loads every symbol with its name: for the Node.js
// binary (over 100,000 long C++ names) that alone was ~45 MiB of memdiag's
// peak.

import (
	"bufio"
	"debug/elf"
	"errors"
	"fmt"
	"io"
)

// symChunk is how much of a table is read at a time. A chunk of 1 MiB
// (and nameOffsets' copy of each) made the uprobe modes' set-up memdiag's
// peak: 17.7-18.0 MiB with --tls against Node.js, 14.9-15.2 with 64 KiB
// chunks (BENCHMARKS.md, "second diet").
const symChunk = 64 << 10

// lookupSymbols returns, for each name found in path's .dynsym (or, for
// names it lacks, .symtab), its value (virtual address) and the file offset
// of that address (what a uprobe is attached at). Names not found are
// missing from the map. .dynsym comes first: it is small, and where it has
// the names (Node.js exports the functions memdiag probes) the large
// .symtab and .strtab are never read.
func lookupSymbols(path string, names ...string) (map[string]elfSymbol, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]elfSymbol{}
	for _, tab := range []struct{ sym, str string }{{".dynsym", ".dynstr"}, {".symtab", ".strtab"}} {
		symtab, strtab := f.Section(tab.sym), f.Section(tab.str)
		if symtab == nil || strtab == nil {
			continue
		}
		want := map[string]bool{}
		for _, n := range names {
			if _, ok := out[n]; !ok {
				want[n] = true
			}
		}
		if len(want) == 0 {
			break
		}
		at, err := nameOffsets(strtab.Open(), want)
		if err != nil {
			return nil, fmt.Errorf("reading %s of %s: %w", tab.str, path, err)
		}
		if len(at) == 0 {
			continue
		}
		if err := scanSymbols(f, symtab, at, out); err != nil {
			return nil, fmt.Errorf("reading %s of %s: %w", tab.sym, path, err)
		}
	}
	return out, nil
}

// elfSymbol is one symbol found.
type elfSymbol struct {
	Value  uint64 // virtual address
	Offset uint64 // file offset of Value (0 when it is in no loadable segment)
}

// nameOffsets streams a string table (NUL-terminated names, back to back)
// and returns the offset of each wanted name.
func nameOffsets(r io.Reader, want map[string]bool) (map[uint32]string, error) {
	out := map[uint32]string{}
	br := bufio.NewReaderSize(r, symChunk)
	var long []byte // a name longer than the buffer, so far
	for off := uint32(0); ; {
		s, err := br.ReadSlice(0)
		if err == bufio.ErrBufferFull {
			long = append(long, s...)
			continue
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil // a last name without its NUL is no name
			}
			return nil, err
		}
		if long != nil {
			s, long = append(long, s...), nil
		}
		if name := s[:len(s)-1]; want[string(name)] {
			out[off] = string(name)
		}
		off += uint32(len(s))
	}
}

// scanSymbols streams an ELF64 symbol table and fills out with the symbols
// whose name offset is in at.
func scanSymbols(f *elf.File, symtab *elf.Section, at map[uint32]string, out map[string]elfSymbol) error {
	if f.Class != elf.ELFCLASS64 {
		return errors.New("not a 64-bit ELF file")
	}
	const entSize = 24 // Elf64_Sym
	r := symtab.Open()
	chunk := make([]byte, (symChunk/entSize)*entSize)
	for {
		n, err := io.ReadFull(r, chunk)
		for i := 0; i+entSize <= n; i += entSize {
			e := chunk[i : i+entSize]
			name, ok := at[f.ByteOrder.Uint32(e[0:4])]
			if !ok {
				continue
			}
			value := f.ByteOrder.Uint64(e[8:16])
			if value == 0 {
				continue
			}
			if _, dup := out[name]; !dup {
				out[name] = elfSymbol{Value: value, Offset: fileOffset(f, value)}
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil
			}
			return err
		}
	}
}

// fileOffset converts a virtual address to its offset in the file, through
// the loadable segment that maps it.
func fileOffset(f *elf.File, vaddr uint64) uint64 {
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && vaddr >= p.Vaddr && vaddr < p.Vaddr+p.Filesz {
			return vaddr - p.Vaddr + p.Off
		}
	}
	return 0
}
