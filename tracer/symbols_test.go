package tracer

import (
	"debug/elf"
	"os/exec"
	"path/filepath"
	"runtime"
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
