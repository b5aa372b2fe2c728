package tracer

import (
	"debug/elf"
	"maps"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestLookupSymbols checks the streaming lookup finds what debug/elf finds,
// value and file offset, in the go command's binary (a Go program with its
// symbol table; test binaries are built without one) and, when there is
// one, the node binary memdiag samples V8 in.
func TestLookupSymbols(t *testing.T) {
	var paths []string
	for _, name := range []string{filepath.Join(runtime.GOROOT(), "bin", "go"), "node"} {
		if p, err := exec.LookPath(name); err == nil {
			paths = append(paths, p)
		}
	}
	if len(paths) == 0 {
		t.Skip("neither the go command nor node found: no binary with a symbol table to check against")
	}
	for _, path := range paths {
		f, err := elf.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		syms, err := f.Symbols()
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		want := map[string]uint64{}
		for i := 0; i < len(syms) && len(want) < 50; i += len(syms)/50 + 1 {
			s := syms[i]
			if s.Value != 0 && elf.ST_TYPE(s.Info) == elf.STT_FUNC && s.Name != "" {
				if _, dup := want[s.Name]; !dup {
					want[s.Name] = s.Value
				}
			}
		}
		names := []string{"no such symbol at all"}
		for n := range want {
			names = append(names, n)
		}
		got, err := lookupSymbols(path, names...)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if _, ok := got["no such symbol at all"]; ok {
			t.Errorf("%s: found a symbol that is not there", path)
		}
		for n, v := range want {
			g, ok := got[n]
			switch {
			case !ok:
				t.Errorf("%s: %s not found", path, n)
			case g.Value != v:
				t.Errorf("%s: %s = %#x, want %#x", path, n, g.Value, v)
			case g.Offset == 0:
				t.Errorf("%s: %s has no file offset", path, n)
			}
		}
		t.Logf("%s: %d symbols checked", path, len(want))
	}
}

// nameOffsets finds names at their offsets, after a name longer than its
// buffer too.
func TestNameOffsets(t *testing.T) {
	long := strings.Repeat("x", 3*symChunk)
	table := "\x00a\x00" + long + "\x00b\x00c"
	got, err := nameOffsets(strings.NewReader(table), map[string]bool{"a": true, "b": true, "c": true, long: true})
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint32]string{1: "a", 3: long, uint32(4 + len(long)): "b"}
	if !maps.Equal(got, want) {
		t.Errorf("got %d names, want %d (c has no NUL: no name)", len(got), len(want))
	}
}
