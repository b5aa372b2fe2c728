package dump

import (
	"bytes"
	"container/list"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"sort"
	"strings"
)

// elfSymtab is what symbolization needs from one ELF file: its function
// symbols, and the load segments that turn a file offset into the virtual
// address its symbols are written in.
type elfSymtab struct {
	syms    []elfSym  // sorted by addr, one per address
	loads   []elfLoad // PT_LOAD segments
	buildID string    // hex GNU build id, "" when none
}

// elfSym is one function symbol.
type elfSym struct {
	addr, size uint64
	name       string
}

// elfLoad is one PT_LOAD segment: file bytes [off, off+filesz) are loaded at
// vaddr.
type elfLoad struct {
	off, filesz, vaddr uint64
}

// readELFSymtab reads the function symbols of .symtab and .dynsym and the
// load segments of an ELF file. A file with no symbols at all (stripped, and
// nothing exported) is not an error: its table is empty.
func readELFSymtab(r io.ReaderAt) (*elfSymtab, error) {
	f, err := elf.NewFile(r)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	t := &elfSymtab{buildID: elfBuildID(f)}
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && p.Filesz > 0 {
			t.loads = append(t.loads, elfLoad{off: p.Off, filesz: p.Filesz, vaddr: p.Vaddr})
		}
	}
	var cands []elfCand
	for _, read := range []func() ([]elf.Symbol, error){f.Symbols, f.DynamicSymbols} {
		syms, err := read()
		if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
			// A corrupt table costs its symbols, not the other table's.
			continue
		}
		for _, s := range syms {
			typ := elf.ST_TYPE(s.Info)
			if typ != elf.STT_FUNC && typ != elf.STT_GNU_IFUNC || s.Section == elf.SHN_UNDEF || s.Value == 0 || s.Name == "" {
				continue
			}
			cands = append(cands, elfCand{
				elfSym:  elfSym{addr: s.Value, size: s.Size, name: s.Name},
				binding: elf.ST_BIND(s.Info),
			})
		}
	}
	// Aliases share an address (malloc, __libc_malloc): keep the best name.
	sort.Slice(cands, func(i, j int) bool {
		if cands[i].addr != cands[j].addr {
			return cands[i].addr < cands[j].addr
		}
		return cands[i].better(cands[j])
	})
	for i, c := range cands {
		if i > 0 && c.addr == cands[i-1].addr {
			continue
		}
		t.syms = append(t.syms, c.elfSym)
	}
	return t, nil
}

// elfCand is a symbol competing with its aliases for an address.
type elfCand struct {
	elfSym
	binding elf.SymBind
}

// better orders aliases: a symbol with a size first (its extent is known),
// then global before weak before local, then the name with the fewest
// leading underscores, the shortest, and the first in byte order, so that
// the choice is deterministic.
func (c elfCand) better(o elfCand) bool {
	if (c.size > 0) != (o.size > 0) {
		return c.size > 0
	}
	if rc, ro := bindRank(c.binding), bindRank(o.binding); rc != ro {
		return rc < ro
	}
	uc := len(c.name) - len(strings.TrimLeft(c.name, "_"))
	uo := len(o.name) - len(strings.TrimLeft(o.name, "_"))
	if uc != uo {
		return uc < uo
	}
	if len(c.name) != len(o.name) {
		return len(c.name) < len(o.name)
	}
	return c.name < o.name
}

func bindRank(b elf.SymBind) int {
	switch b {
	case elf.STB_GLOBAL:
		return 0
	case elf.STB_WEAK:
		return 1
	}
	return 2
}

// vaddr turns an offset in the file into the virtual address the ELF's
// symbols use, through the PT_LOAD segment whose file bytes cover it.
func (t *elfSymtab) vaddr(fileOff uint64) (uint64, bool) {
	for _, l := range t.loads {
		if fileOff >= l.off && fileOff-l.off < l.filesz {
			return fileOff - l.off + l.vaddr, true
		}
	}
	return 0, false
}

// lookup returns the name of the function whose symbol covers the virtual
// address v. A symbol without a size covers everything up to the next one.
func (t *elfSymtab) lookup(v uint64) (string, bool) {
	i := sort.Search(len(t.syms), func(i int) bool { return t.syms[i].addr > v }) - 1
	if i < 0 {
		return "", false
	}
	s := t.syms[i]
	if s.size > 0 && v-s.addr >= s.size {
		return "", false
	}
	return s.name, true
}

// elfBuildID returns the GNU build id of f in hex, from its PT_NOTE
// segments or, failing that, its .note.gnu.build-id section.
func elfBuildID(f *elf.File) string {
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE || p.Filesz > 1<<20 {
			continue
		}
		data := make([]byte, p.Filesz)
		if _, err := p.ReadAt(data, 0); err != nil {
			continue
		}
		if id := gnuBuildID(data, f.ByteOrder); id != "" {
			return id
		}
	}
	if s := f.Section(".note.gnu.build-id"); s != nil && s.Size <= 1<<20 {
		if data, err := s.Data(); err == nil {
			return gnuBuildID(data, f.ByteOrder)
		}
	}
	return ""
}

// gnuBuildID finds the NT_GNU_BUILD_ID note in a run of ELF notes (each
// namesz, descsz, type, then name and desc padded to 4 bytes).
func gnuBuildID(data []byte, bo binary.ByteOrder) string {
	const ntGNUBuildID = 3
	align := func(n uint64) uint64 { return (n + 3) &^ 3 }
	for len(data) >= 12 {
		namesz, descsz := uint64(bo.Uint32(data)), uint64(bo.Uint32(data[4:]))
		typ := bo.Uint32(data[8:])
		data = data[12:]
		if align(namesz) > uint64(len(data)) || align(namesz)+align(descsz) > uint64(len(data)) {
			return ""
		}
		name, desc := data[:namesz], data[align(namesz):align(namesz)+descsz]
		if typ == ntGNUBuildID && bytes.Equal(name, []byte("GNU\x00")) {
			return hex.EncodeToString(desc)
		}
		data = data[align(namesz)+align(descsz):]
	}
	return ""
}

// symtabCache keeps the symbol tables of the last few ELF files read, keyed
// by path and inode (a file replaced at the same path is another file). An
// entry is also kept when the file could not be read, so that each of its
// addresses does not try again. Not safe for concurrent use: the Symbolizer
// holds its lock around it.
type symtabCache struct {
	max   int
	order *list.List // of *symtabEntry, most recently used first
	byKey map[symtabKey]*list.Element
}

type symtabKey struct {
	path  string
	inode uint64
}

type symtabEntry struct {
	key symtabKey
	tab *elfSymtab // nil when the file could not be read
	err error      // why tab is nil
}

func newSymtabCache(max int) *symtabCache {
	return &symtabCache{max: max, order: list.New(), byKey: make(map[symtabKey]*list.Element)}
}

// get returns the entry for key, reading it with load on a miss and
// evicting the least recently used entry beyond the bound.
func (c *symtabCache) get(key symtabKey, load func() (*elfSymtab, error)) (*elfSymtab, error) {
	if e, ok := c.byKey[key]; ok {
		c.order.MoveToFront(e)
		ent := e.Value.(*symtabEntry)
		return ent.tab, ent.err
	}
	tab, err := load()
	c.byKey[key] = c.order.PushFront(&symtabEntry{key: key, tab: tab, err: err})
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.byKey, last.Value.(*symtabEntry).key)
	}
	return tab, err
}
