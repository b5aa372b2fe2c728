package dump

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"sort"
	"strconv"
)

// perfMap is a parsed /tmp/perf-PID.map: the names a JIT (node
// --perf-basic-prof, the JVM's perf-map-agent, …) gives to code it placed
// in anonymous memory.
type perfMap struct {
	entries []perfEntry // sorted by start
}

// perfEntry is one line of a perf map. seq is its line order: a JIT that
// moves or reuses code writes a new line, and the later line wins.
type perfEntry struct {
	start, end uint64
	seq        int
	maxEnd     uint64 // the largest end of entries[0..this], to stop lookups early
	name       string
}

// parsePerfMap reads the perf map format: one "START SIZE name" per line,
// START and SIZE in hex (with or without 0x), name the rest of the line and
// possibly containing spaces. Lines that do not have that shape are
// skipped, as perf does; only a read error fails.
func parsePerfMap(r io.Reader) (*perfMap, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	m := &perfMap{}
	for seq := 0; ; seq++ {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			if e, ok := parsePerfMapLine(line); ok {
				e.seq = seq
				m.entries = append(m.entries, e)
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	sort.SliceStable(m.entries, func(i, j int) bool { return m.entries[i].start < m.entries[j].start })
	var maxEnd uint64
	for i := range m.entries {
		maxEnd = max(maxEnd, m.entries[i].end)
		m.entries[i].maxEnd = maxEnd
	}
	return m, nil
}

func parsePerfMapLine(line []byte) (perfEntry, bool) {
	line = bytes.TrimRight(line, "\r\n")
	startField, rest, ok := cutField(line)
	if !ok {
		return perfEntry{}, false
	}
	sizeField, name, ok := cutField(rest)
	if !ok {
		return perfEntry{}, false
	}
	start, err1 := parseHex(startField)
	size, err2 := parseHex(sizeField)
	name = bytes.TrimSpace(name)
	if err1 != nil || err2 != nil || size == 0 || len(name) == 0 {
		return perfEntry{}, false
	}
	end := start + size
	if end < start { // wraps: clamp to the top of the address space
		end = ^uint64(0)
	}
	return perfEntry{start: start, end: end, name: string(name)}, true
}

// cutField splits off the first space-separated field of b.
func cutField(b []byte) (field, rest []byte, ok bool) {
	b = bytes.TrimLeft(b, " \t")
	i := bytes.IndexAny(b, " \t")
	if i <= 0 {
		return nil, nil, false
	}
	return b[:i], b[i+1:], true
}

func parseHex(b []byte) (uint64, error) {
	s := string(b)
	if len(s) > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') {
		s = s[2:]
	}
	return strconv.ParseUint(s, 16, 64)
}

// lookup returns the name of the code covering addr; among overlapping
// entries, the one written last.
func (m *perfMap) lookup(addr uint64) (string, bool) {
	if m == nil {
		return "", false
	}
	e := m.entries
	i := sort.Search(len(e), func(i int) bool { return e[i].start > addr }) - 1
	best := -1
	for j := i; j >= 0 && e[j].maxEnd > addr; j-- {
		if addr < e[j].end && (best < 0 || e[j].seq > e[best].seq) {
			best = j
		}
	}
	if best < 0 {
		return "", false
	}
	return e[best].name, true
}
