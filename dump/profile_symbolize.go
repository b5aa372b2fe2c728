package dump

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/memdiag/memdiag/procfs"
)

// maxCachedSymtabs bounds how many ELF files' symbol tables a Symbolizer
// keeps. A process maps a few dozen files but its stacks touch a handful
// (the executable, libc, libstdc++…); a table can be large (node's has
// tens of thousands of symbols), so the bound is what keeps memory flat.
const maxCachedSymtabs = 16

// Symbolizer names the code addresses of one process, from its
// /proc/PID/maps as read when it was made. It is safe for concurrent use.
type Symbolizer struct {
	pid  int
	root string           // prefix of the mapped files' paths; "/" is the host's root
	maps []procfs.Mapping // sorted by Start

	mu         sync.Mutex
	symtabs    *symtabCache
	perf       *perfMap // nil when the process wrote none
	perfLoaded bool
}

// NewSymbolizer reads the mappings of process pid. Mapped files are read
// under root, a path prefix: "/proc/PID/root" finds the files of a process
// in a container through its own mount namespace; "" means "/". Nothing
// else is read until an address needs it.
func NewSymbolizer(pid int, root string) (*Symbolizer, error) {
	maps, err := procfs.ReadMaps(pid)
	if err != nil {
		return nil, fmt.Errorf("reading the mappings of pid %d: %w", pid, err)
	}
	return newSymbolizer(pid, root, maps), nil
}

// newSymbolizer is NewSymbolizer with the mappings given, for tests.
func newSymbolizer(pid int, root string, maps []procfs.Mapping) *Symbolizer {
	if root == "" {
		root = "/"
	}
	maps = slices.Clone(maps)
	slices.SortFunc(maps, func(a, b procfs.Mapping) int {
		switch {
		case a.Start < b.Start:
			return -1
		case a.Start > b.Start:
			return 1
		}
		return 0
	})
	return &Symbolizer{pid: pid, root: root, maps: maps, symtabs: newSymtabCache(maxCachedSymtabs)}
}

// PID returns the process whose addresses s names.
func (s *Symbolizer) PID() int { return s.pid }

// Lookup names the function containing addr and returns the mapping addr
// is in. The name is "" when no symbol covers addr (a stripped binary, a
// file that cannot be read, JIT code without a perf map); the mapping is
// nil when addr is in none of the process's mappings.
//
// In a mapped file, addr is turned into a file offset (addr - Start +
// Offset) and that offset into the ELF's own virtual address through the
// PT_LOAD segment that covers it, which is what .symtab and .dynsym are
// written in; this is right for fixed executables, PIE executables and
// shared libraries alike. Anonymous memory, and whatever a file's symbols
// do not cover, is looked up in the perf map /tmp/perf-PID.map under root.
func (s *Symbolizer) Lookup(addr uint64) (name string, m *procfs.Mapping) {
	r := s.resolve(addr)
	return r.name, r.mapping
}

// resolved is what a Symbolizer knows about an address.
type resolved struct {
	name    string          // "" when unknown
	mapping *procfs.Mapping // nil outside every mapping
	buildID string          // of the mapped ELF file, when read
}

func (s *Symbolizer) resolve(addr uint64) resolved {
	var r resolved
	i, found := slices.BinarySearchFunc(s.maps, addr, func(m procfs.Mapping, a uint64) int {
		switch {
		case m.End <= a:
			return -1
		case m.Start > a:
			return 1
		}
		return 0
	})
	if found {
		r.mapping = &s.maps[i]
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := r.mapping; m != nil && isFilePath(m.Path) {
		if tab, err := s.symtab(m); err == nil {
			r.buildID = tab.buildID
			if v, ok := tab.vaddr(addr - m.Start + m.Offset); ok {
				r.name, _ = tab.lookup(v)
			}
		}
	}
	// Code a JIT placed in anonymous memory, or in a file mapping whose
	// symbols do not cover it (memfd double mappings); also addresses of
	// code unmapped since the stacks were taken.
	if r.name == "" {
		r.name, _ = s.perfMap().lookup(addr)
	}
	r.name = cleanName(r.name)
	return r
}

// isFilePath says whether a maps path names a file ("[heap]", "[vdso]",
// "[anon:…]" and "" do not).
func isFilePath(p string) bool { return strings.HasPrefix(p, "/") }

// symtab returns the symbol table of the file behind m, from the cache.
// The file is opened under root; when that fails (deleted since, or a
// root that does not show it) or finds another inode than the mapping's,
// it is opened through /proc/PID/map_files, which holds exactly the mapped
// file but needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE. Call with s.mu
// held.
func (s *Symbolizer) symtab(m *procfs.Mapping) (*elfSymtab, error) {
	path := filepath.Join(s.root, m.Path)
	return s.symtabs.get(symtabKey{path: path, inode: m.Inode}, func() (*elfSymtab, error) {
		mapFile := fmt.Sprintf("/proc/%d/map_files/%x-%x", s.pid, m.Start, m.End)
		f, err := os.Open(path)
		if err != nil {
			f, err = os.Open(mapFile)
		} else if st, serr := f.Stat(); serr == nil && m.Inode != 0 && inode(st) != m.Inode {
			// Another file at that path now, or an overlay filesystem
			// showing its own inode numbers: prefer the mapped file itself
			// when it can be had.
			if mf, merr := os.Open(mapFile); merr == nil {
				f.Close()
				f = mf
			}
		}
		if err != nil {
			return nil, fmt.Errorf("opening %s: %w", path, err)
		}
		defer f.Close()
		tab, err := readELFSymtab(f)
		if err != nil {
			return nil, fmt.Errorf("reading ELF symbols of %s: %w", path, err)
		}
		return tab, nil
	})
}

// perfMap returns the process's perf map, read on first use: the file is
// named after the pid the process sees itself as (NSpid, innermost), which
// differs from pid in a container, and /tmp is the process's own under
// root. Call with s.mu held.
func (s *Symbolizer) perfMap() *perfMap {
	if s.perfLoaded {
		return s.perf
	}
	s.perfLoaded = true
	pids := []int{s.pid}
	if ns := nsPID(s.pid); ns > 0 && ns != s.pid {
		pids = []int{ns, s.pid}
	}
	for _, pid := range pids {
		f, err := os.Open(filepath.Join(s.root, "tmp", fmt.Sprintf("perf-%d.map", pid)))
		if err != nil {
			continue
		}
		pm, err := parsePerfMap(f)
		f.Close()
		if err == nil {
			s.perf = pm
			return pm
		}
	}
	return nil
}

// inode returns the inode number of a file, 0 when the platform has none.
func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

// nsPID returns the innermost pid of a process (the last NSpid field of
// /proc/PID/status), or 0 when it cannot be read.
func nsPID(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range bytes.Lines(data) {
		rest, ok := bytes.CutPrefix(line, []byte("NSpid:"))
		if !ok {
			continue
		}
		f := strings.Fields(string(rest))
		if len(f) == 0 {
			return 0
		}
		n, _ := strconv.Atoi(f[len(f)-1])
		return n
	}
	return 0
}

// cleanName keeps a symbol name as written (no demangling) but makes it a
// valid UTF-8 string on one line, which the profile format and every
// viewer expect; names are bytes in ELF and perf maps.
func cleanName(name string) string {
	name = strings.ToValidUTF8(name, "\uFFFD")
	if strings.ContainsAny(name, "\n\r\x00") {
		name = strings.NewReplacer("\n", " ", "\r", " ", "\x00", "").Replace(name)
	}
	return strings.TrimSpace(name)
}
