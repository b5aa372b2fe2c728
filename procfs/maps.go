package procfs

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Mapping is one line of /proc/PID/maps.
type Mapping struct {
	Start, End uint64
	Perms      string // "rw-p"
	Offset     uint64
	Inode      uint64
	Path       string // file path, or [heap], [stack], [vdso]…, or "" for anonymous
}

// ReadMaps reads /proc/PID/maps.
func ReadMaps(pid int) ([]Mapping, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil, err
	}
	return ParseMaps(data)
}

// ParseMaps parses the text of a /proc/PID/maps file.
func ParseMaps(data []byte) ([]Mapping, error) {
	var out []Mapping
	for line := range bytes.Lines(data) {
		f := strings.Fields(string(line))
		if len(f) < 5 {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			return nil, fmt.Errorf("bad maps line %q", strings.TrimSpace(string(line)))
		}
		var m Mapping
		var err error
		if m.Start, err = strconv.ParseUint(lo, 16, 64); err != nil {
			return nil, fmt.Errorf("bad maps line %q", strings.TrimSpace(string(line)))
		}
		if m.End, err = strconv.ParseUint(hi, 16, 64); err != nil || m.End < m.Start {
			return nil, fmt.Errorf("bad maps line %q", strings.TrimSpace(string(line)))
		}
		m.Perms = f[1]
		m.Offset, _ = strconv.ParseUint(f[2], 16, 64)
		m.Inode, _ = strconv.ParseUint(f[4], 10, 64)
		if len(f) > 5 {
			m.Path = strings.Join(f[5:], " ")
		}
		out = append(out, m)
	}
	return out, nil
}

// IsLibc says whether a mapped file is the C library (glibc or musl).
func IsLibc(path string) bool {
	base := filepath.Base(path)
	return strings.HasPrefix(base, "libc.so") || strings.HasPrefix(base, "libc-") && strings.HasSuffix(base, ".so") ||
		strings.HasPrefix(base, "ld-musl-")
}

// LibcRange returns the address range of the C library's mappings (all of
// them, so code in any of its segments counts), and whether it was found.
func LibcRange(maps []Mapping) (lo, hi uint64, ok bool) {
	for _, m := range maps {
		if !IsLibc(m.Path) {
			continue
		}
		if !ok || m.Start < lo {
			lo = m.Start
		}
		if !ok || m.End > hi {
			hi = m.End
		}
		ok = true
	}
	return lo, hi, ok
}
