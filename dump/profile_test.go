package dump

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/memdiag/memdiag/procfs"
)

// profileWorkloadC is a program whose functions the tests name: it prints
// the addresses of memdiag_alloc_leaf, memdiag_alloc_mid, libc's malloc and
// an anonymous executable page (JIT code, as far as maps can tell), then
// waits for stdin to close.
const profileWorkloadC = `
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

volatile char sink;

__attribute__((noinline)) void memdiag_alloc_leaf(char *p, size_t n) {
	for (size_t i = 0; i < n; i += 4096)
		p[i] = 1;
}

__attribute__((noinline)) void memdiag_alloc_mid(size_t n) {
	char *p = malloc(n);
	memdiag_alloc_leaf(p, n);
	sink = p[0];
	free(p);
}

int main(void) {
	void *jit = mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (jit == MAP_FAILED)
		return 1;
	memdiag_alloc_mid(1 << 16);
	/* dlsym, not &malloc: a -no-pie executable takes the address of its
	 * own PLT entry for malloc, libc's is what the test wants. */
	printf("%p %p %p %p\n", (void *)memdiag_alloc_leaf, (void *)memdiag_alloc_mid,
	       dlsym(RTLD_NEXT, "malloc"), jit);
	fflush(stdout);
	char buf[256];
	while (read(0, buf, sizeof buf) > 0)
		;
	return 0;
}
`

// profileWorkload is a running profileWorkloadC.
type profileWorkload struct {
	pid               int
	bin               string
	leaf, mid, malloc uint64
	jit               uint64
}

// startProfileWorkload compiles profileWorkloadC with gcc and extra flags,
// runs it and reads the addresses it prints. The process is killed when
// the test ends.
func startProfileWorkload(t *testing.T, flags ...string) *profileWorkload {
	t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("needs gcc to build the workload")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "workload.c")
	bin := filepath.Join(dir, "workload")
	if err := os.WriteFile(src, []byte(profileWorkloadC), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-O0", "-fno-omit-frame-pointer", "-o", bin, src}, flags...)
	args = append(args, "-ldl")
	if out, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	cmd := exec.Command(bin)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the workload's addresses: %v", err)
	}
	f := strings.Fields(line)
	if len(f) != 4 {
		t.Fatalf("workload printed %q, want 4 addresses", line)
	}
	var addrs [4]uint64
	for i, s := range f {
		if addrs[i], err = strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, 64); err != nil {
			t.Fatalf("workload printed %q: %v", line, err)
		}
	}
	return &profileWorkload{pid: cmd.Process.Pid, bin: bin, leaf: addrs[0], mid: addrs[1], malloc: addrs[2], jit: addrs[3]}
}

// roundTrip writes p and parses it back, as pprof would read it.
func roundTrip(t *testing.T, p *Profile) *profile.Profile {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteProfile(&buf, p); err != nil {
		t.Fatal(err)
	}
	q, err := profile.Parse(&buf)
	if err != nil {
		t.Fatalf("parsing the written profile: %v", err)
	}
	if err := q.CheckValid(); err != nil {
		t.Fatalf("parsed profile: %v", err)
	}
	return q
}

// names returns the function names of a sample's stack, leaf first, with
// "0xADDR" for a location without one.
func names(s *profile.Sample) []string {
	var out []string
	for _, l := range s.Location {
		if len(l.Line) == 0 {
			out = append(out, fmt.Sprintf("%#x", l.Address))
			continue
		}
		out = append(out, l.Line[0].Function.Name)
	}
	return out
}

func findSample(t *testing.T, p *profile.Profile, stack ...string) *profile.Sample {
	t.Helper()
	want := strings.Join(stack, " <- ")
	for _, s := range p.Sample {
		if strings.Join(names(s), " <- ") == want {
			return s
		}
	}
	var got []string
	for _, s := range p.Sample {
		got = append(got, strings.Join(names(s), " <- "))
	}
	t.Fatalf("no sample with stack %s; samples: %q", want, got)
	return nil
}

func TestProfileSymbolizesRealProcess(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags []string
		root  func(pid int) string
	}{
		{"no-pie", []string{"-no-pie"}, func(int) string { return "" }},
		{"pie", []string{"-fPIE", "-pie"}, func(int) string { return "" }},
		{"pie-proc-root", []string{"-fPIE", "-pie"}, func(pid int) string { return fmt.Sprintf("/proc/%d/root", pid) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := startProfileWorkload(t, tc.flags...)
			sym, err := NewSymbolizer(w.pid, tc.root(w.pid))
			if err != nil {
				t.Fatal(err)
			}
			// The leaf is the faulting instruction, a few bytes in; the
			// caller frame is a return address inside memdiag_alloc_mid.
			stack := []uint64{w.leaf + 4, w.mid + 12}
			samples := []StackSample{
				{PID: uint32(w.pid), Stack: stack, Bytes: 4096, Pages: 1},
				{PID: uint32(w.pid), Stack: []uint64{w.malloc + 8, w.mid + 12}, Bytes: 100, Pages: 1},
				{PID: uint32(w.pid), Stack: append([]uint64(nil), stack...), Bytes: 8192, Pages: 2},
			}
			start := time.Unix(1700000000, 0)
			p, err := BuildProfile(samples, sym, start, 30*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			q := roundTrip(t, p)

			if len(q.Sample) != 2 {
				t.Errorf("%d samples, want 2 (identical stacks merged)", len(q.Sample))
			}
			s := findSample(t, q, "memdiag_alloc_leaf", "memdiag_alloc_mid")
			if s.Value[0] != 4096+8192 || s.Value[1] != 3 {
				t.Errorf("leaf<-mid values %v, want [12288 3]", s.Value)
			}
			if got := s.NumLabel["pid"]; len(got) != 1 || got[0] != int64(w.pid) {
				t.Errorf("pid label %v, want [%d]", got, w.pid)
			}
			m := s.Location[0].Mapping
			if m == nil || m.File != w.bin || !m.HasFunctions {
				t.Errorf("leaf mapping %+v, want the workload binary %s with functions", m, w.bin)
			} else if m.Start > w.leaf || w.leaf >= m.Limit {
				t.Errorf("leaf %#x outside its mapping %#x-%#x", w.leaf, m.Start, m.Limit)
			}
			if f, err := elf.Open(w.bin); err == nil {
				if f.Section(".note.gnu.build-id") != nil && (m == nil || m.BuildID == "") {
					t.Errorf("workload mapping has no build id")
				}
				f.Close()
			}

			// libc is a shared library mapped at a file offset: malloc
			// (or an alias of it) must still be found.
			ms := findSampleByLeafPrefix(t, q, w.malloc+8)
			if n := names(ms); !strings.Contains(n[0], "malloc") || n[1] != "memdiag_alloc_mid" {
				t.Errorf("libc frame named %q, want malloc <- memdiag_alloc_mid", n)
			}
			if lm := ms.Location[0].Mapping; lm == nil || !procfs.IsLibc(lm.File) {
				t.Errorf("malloc mapping %+v, want libc", lm)
			}

			if q.DefaultSampleType != "growth" || len(q.SampleType) != 2 ||
				q.SampleType[0].Type != "growth" || q.SampleType[0].Unit != "bytes" ||
				q.SampleType[1].Type != "faults" || q.SampleType[1].Unit != "count" {
				t.Errorf("sample types %v default %q", q.SampleType, q.DefaultSampleType)
			}
			if q.TimeNanos != start.UnixNano() || q.DurationNanos != int64(30*time.Second) {
				t.Errorf("time %d duration %d", q.TimeNanos, q.DurationNanos)
			}
			seen := map[string]bool{}
			for _, f := range q.Function {
				if seen[f.Name] {
					t.Errorf("function %s twice", f.Name)
				}
				seen[f.Name] = true
			}
			if len(q.Location) != 3 {
				t.Errorf("%d locations, want 3 (one per distinct address)", len(q.Location))
			}
		})
	}
}

func findSampleByLeafPrefix(t *testing.T, p *profile.Profile, leaf uint64) *profile.Sample {
	t.Helper()
	for _, s := range p.Sample {
		if len(s.Location) > 0 && s.Location[0].Address == leaf {
			return s
		}
	}
	t.Fatalf("no sample with leaf %#x", leaf)
	return nil
}

func TestProfileStrippedBinary(t *testing.T) {
	w := startProfileWorkload(t, "-no-pie", "-s")
	sym, err := NewSymbolizer(w.pid, "")
	if err != nil {
		t.Fatal(err)
	}
	if name, m := sym.Lookup(w.leaf + 4); name != "" || m == nil || m.Path != w.bin {
		t.Errorf("Lookup(leaf) = %q, %+v; want no name in the workload's mapping", name, m)
	}
	p, err := BuildProfile([]StackSample{{PID: uint32(w.pid), Stack: []uint64{w.leaf + 4, w.mid + 12}, Bytes: 4096, Pages: 1}}, sym, time.Now(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	q := roundTrip(t, p)
	s := findSample(t, q, fmt.Sprintf("%#x", w.leaf+4), fmt.Sprintf("%#x", w.mid+12))
	for _, l := range s.Location {
		if l.Mapping == nil || l.Mapping.File != w.bin || l.Mapping.HasFunctions {
			t.Errorf("location %#x mapping %+v, want the workload binary without functions", l.Address, l.Mapping)
		}
	}
}

func TestProfilePerfMapOfRealProcess(t *testing.T) {
	w := startProfileWorkload(t, "-fPIE", "-pie")
	path := fmt.Sprintf("/tmp/perf-%d.map", w.pid)
	content := fmt.Sprintf("%x 40 LazyCompile:*handler /srv/app.js:12\n%x 20 Builtin: CallFunction\n", w.jit, w.jit+0x40)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(path) })
	sym, err := NewSymbolizer(w.pid, "")
	if err != nil {
		t.Fatal(err)
	}
	p, err := BuildProfile([]StackSample{
		{PID: uint32(w.pid), Stack: []uint64{w.jit + 0x44, w.jit + 0x10, w.mid + 12}, Bytes: 1 << 20, Pages: 256},
	}, sym, time.Now(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	q := roundTrip(t, p)
	s := findSample(t, q, "Builtin: CallFunction", "LazyCompile:*handler /srv/app.js:12", "memdiag_alloc_mid")
	if m := s.Location[0].Mapping; m == nil || m.File != "" || m.Start > w.jit || w.jit >= m.Limit || !m.HasFunctions {
		t.Errorf("JIT mapping %+v, want the anonymous mapping at %#x with functions", m, w.jit)
	}
}

func TestProfileUnknownAddresses(t *testing.T) {
	root := t.TempDir()
	notELF := filepath.Join(root, "notelf.so")
	if err := os.WriteFile(notELF, []byte("not an ELF file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	maps := []procfs.Mapping{
		{Start: 0x400000, End: 0x401000, Perms: "r-xp", Offset: 0x1000, Inode: 7, Path: "/nonexistent/memdiag/libgone.so"},
		{Start: 0x500000, End: 0x501000, Perms: "r-xp", Inode: 8, Path: "/notelf.so"},
		{Start: 0x600000, End: 0x601000, Perms: "r-xp", Path: "/usr/bin/gone (deleted)"},
		{Start: 0x700000, End: 0x701000, Perms: "rw-p", Path: "[heap]"},
	}
	// A pid that names no process: no map_files to fall back on.
	sym := newSymbolizer(1<<30, root, maps)
	samples := []StackSample{
		{PID: 1, Stack: []uint64{0x400010, 0x500010, 0x600010, 0x700010, 0x10}, Bytes: 10, Pages: 1},
		{PID: 1, Stack: []uint64{0x10}, Bytes: 5, Pages: 1},
		{PID: 1, Bytes: 1, Pages: 1}, // no stack at all
	}
	p, err := BuildProfile(samples, sym, time.Now(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	q := roundTrip(t, p)
	s := findSample(t, q, "0x400010", "0x500010", "0x600010", "0x700010", "0x10")
	for i, wantFile := range []string{"/nonexistent/memdiag/libgone.so", "/notelf.so", "/usr/bin/gone (deleted)", "[heap]"} {
		m := s.Location[i].Mapping
		if m == nil || m.File != wantFile || m.HasFunctions {
			t.Errorf("location %#x mapping %+v, want %s without functions", s.Location[i].Address, m, wantFile)
		}
	}
	if m := s.Location[4].Mapping; m != nil {
		t.Errorf("address in no mapping has mapping %+v", m)
	}
	if m := q.Mapping[0]; m.Start != 0x400000 || m.Offset != 0x1000 || m.Limit != 0x401000 {
		t.Errorf("first mapping %+v, want the lowest one with its offset", m)
	}
	if len(q.Sample) != 3 {
		t.Errorf("%d samples, want 3", len(q.Sample))
	}

	// No symbolizer: bare addresses.
	p, err = BuildProfile(samples, nil, time.Now(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	q = roundTrip(t, p)
	findSample(t, q, "0x10")
	if len(q.Mapping) != 0 || len(q.Function) != 0 {
		t.Errorf("no symbolizer: %d mappings, %d functions", len(q.Mapping), len(q.Function))
	}
}

func TestProfilePerfMapLookup(t *testing.T) {
	root := t.TempDir()
	const pid = 1 << 30 // no such process: the map is named after pid itself
	if err := os.MkdirAll(filepath.Join(root, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	perf := "" +
		"7f0000001000 100 LazyCompile:~foo file:///app/a.js:1\n" +
		"0x7f0000001080 0x10 Stub:moved over foo\n" + // later, overlapping: wins inside it
		"7f0000002000 10 weird \xff\xfe name\n" +
		"deadline\n" +
		"7f0000003000 10 lost-in-space\n"
	if err := os.WriteFile(filepath.Join(root, "tmp", fmt.Sprintf("perf-%d.map", pid)), []byte(perf), 0o644); err != nil {
		t.Fatal(err)
	}
	sym := newSymbolizer(pid, root, []procfs.Mapping{
		{Start: 0x7f0000000000, End: 0x7f0000003000, Perms: "rwxp"},
	})
	for _, tc := range []struct {
		addr      uint64
		name      string
		inMapping bool
	}{
		{0x7f0000001000, "LazyCompile:~foo file:///app/a.js:1", true},
		{0x7f0000001088, "Stub:moved over foo", true},
		{0x7f0000001090, "LazyCompile:~foo file:///app/a.js:1", true},
		{0x7f0000001100, "", true},
		{0x7f0000002004, "weird \uFFFD name", true},
		{0x7f0000003004, "lost-in-space", false}, // unmapped since, still named
		{0x7f0000000010, "", true},
	} {
		name, m := sym.Lookup(tc.addr)
		if name != tc.name || (m != nil) != tc.inMapping {
			t.Errorf("Lookup(%#x) = %q, %v; want %q, in mapping %v", tc.addr, name, m, tc.name, tc.inMapping)
		}
	}
}

func TestProfileParsePerfMap(t *testing.T) {
	in := "" +
		"1000 10 a\n" +
		"  0x2000\t0X20 b with  spaces \r\n" +
		"3000 0 zero-size\n" +
		"zzzz 10 bad-start\n" +
		"4000 10\n" +
		"ffffffffffffff00 1000 top\n" +
		"5000 10 last-no-newline"
	m, err := parsePerfMap(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range m.entries {
		got = append(got, fmt.Sprintf("%x-%x %s", e.start, e.end, e.name))
	}
	want := []string{
		"1000-1010 a",
		"2000-2020 b with  spaces",
		"5000-5010 last-no-newline",
		"ffffffffffffff00-ffffffffffffffff top",
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("entries\n%q\nwant\n%q", got, want)
	}
	for addr, name := range map[uint64]string{0x1000: "a", 0x100f: "a", 0x1010: "", 0x201f: "b with  spaces", 0xffffffffffffff80: "top", 0xfff: ""} {
		if got, _ := m.lookup(addr); got != name {
			t.Errorf("lookup(%#x) = %q, want %q", addr, got, name)
		}
	}
}

func TestProfileParsePerfMapReadError(t *testing.T) {
	if _, err := parsePerfMap(io.MultiReader(strings.NewReader("1000 10 a\n"), errReader{})); err == nil {
		t.Error("a read error was not reported")
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, fmt.Errorf("disk on fire") }

func TestProfileSymtabCacheBound(t *testing.T) {
	c := newSymtabCache(2)
	loads := 0
	load := func() (*elfSymtab, error) { loads++; return &elfSymtab{}, nil }
	for _, k := range []string{"a", "b", "a", "c", "a", "b"} {
		c.get(symtabKey{path: k, inode: 1}, load)
	}
	// a, b, (a hit), c evicts b, (a hit), b evicts c.
	if loads != 4 || c.order.Len() != 2 {
		t.Errorf("%d loads, %d cached; want 4 loads, 2 cached", loads, c.order.Len())
	}
	c.get(symtabKey{path: "a", inode: 2}, load) // same path, another file
	if loads != 5 {
		t.Errorf("a new inode at the same path was not read again")
	}
}

func TestProfileGNUBuildID(t *testing.T) {
	le := func(v uint32) []byte { return []byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)} }
	var notes []byte
	// Another note first (name "ab\0" padded to 4, desc 2 bytes padded to 4).
	notes = append(notes, le(3)...)
	notes = append(notes, le(2)...)
	notes = append(notes, le(1)...)
	notes = append(notes, 'a', 'b', 0, 0, 9, 9, 0, 0)
	notes = append(notes, le(4)...)
	notes = append(notes, le(3)...)
	notes = append(notes, le(3)...)
	notes = append(notes, 'G', 'N', 'U', 0, 0xde, 0xad, 0xbe, 0)
	if got := gnuBuildID(notes, binary.LittleEndian); got != "deadbe" {
		t.Errorf("build id %q, want deadbe", got)
	}
	if got := gnuBuildID(notes[:len(notes)-6], binary.LittleEndian); got != "" {
		t.Errorf("truncated note gave %q", got)
	}
}

func FuzzProfilePerfMap(f *testing.F) {
	f.Add([]byte("1000 10 a\n0x1008 4 b\n"), uint64(0x1009))
	f.Add([]byte("ffffffffffffffff ffffffffffffffff x\n"), uint64(0))
	f.Fuzz(func(t *testing.T, data []byte, addr uint64) {
		m, err := parsePerfMap(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		name, ok := m.lookup(addr)
		if !ok {
			return
		}
		for _, e := range m.entries {
			if e.name == name && e.start <= addr && addr < e.end {
				return
			}
		}
		t.Errorf("lookup(%#x) = %q, which no entry covering it has", addr, name)
	})
}

func TestProfileDeletedBinary(t *testing.T) {
	w := startProfileWorkload(t, "-no-pie")
	if err := os.Remove(w.bin); err != nil {
		t.Fatal(err)
	}
	sym, err := NewSymbolizer(w.pid, "")
	if err != nil {
		t.Fatal(err)
	}
	name, m := sym.Lookup(w.leaf + 4)
	if m == nil || m.Path != w.bin+" (deleted)" {
		t.Fatalf("Lookup(leaf) mapping %+v, want %s (deleted)", m, w.bin)
	}
	// Only /proc/PID/map_files still holds the file, and only root (with
	// CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE) may open it.
	want := ""
	if os.Geteuid() == 0 {
		want = "memdiag_alloc_leaf"
	}
	if name != want {
		t.Errorf("Lookup(leaf) = %q, want %q (euid %d)", name, want, os.Geteuid())
	}
}
