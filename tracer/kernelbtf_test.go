package tracer

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// kernelSpecs gives memdiag's program and the running kernel's BTF as
// cilium/ebpf decodes it, skipping where the kernel has none.
func kernelSpecs(t *testing.T) (*ebpf.CollectionSpec, *btf.Spec) {
	t.Helper()
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		t.Skip("the kernel has no BTF:", err)
	}
	spec, err := newSpec(Config{}, false)
	if err != nil {
		t.Fatal(err)
	}
	kernel, err := btf.LoadKernelSpec()
	if err != nil {
		t.Fatal(err)
	}
	return spec, kernel
}

// The tp_btf programs' CO-RE relocations give against kernelBTF's small
// spec exactly what they give against the whole kernel's types.
func TestCoreSpecGivesTheKernelsFixups(t *testing.T) {
	spec, kernel := kernelSpecs(t)
	tracing := make(map[string]*ebpf.ProgramSpec)
	for name, p := range spec.Programs {
		if p.Type == ebpf.Tracing {
			tracing[name] = p
		}
	}
	small, _, err := tracingKernelTypes(spec, tracing, nil)
	if err != nil {
		t.Fatal(err)
	}
	relocated := 0
	for name, p := range tracing {
		var relos []*btf.CORERelocation
		for i := range p.Instructions {
			if r := btf.CORERelocationMetadata(&p.Instructions[i]); r != nil {
				relos = append(relos, r)
			}
		}
		if len(relos) == 0 {
			continue
		}
		var b1, b2 btf.Builder
		want, err := btf.CORERelocate(relos, []*btf.Spec{kernel}, p.ByteOrder, b1.Add)
		if err != nil {
			t.Fatalf("%s against the kernel: %v", name, err)
		}
		got, err := btf.CORERelocate(relos, []*btf.Spec{small}, p.ByteOrder, b2.Add)
		if err != nil {
			t.Fatalf("%s against the small spec: %v", name, err)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("%s: %s: got %s, want %s", name, relos[i], &got[i], &want[i])
			}
		}
		relocated += len(relos)
	}
	if relocated == 0 {
		t.Fatal("no CO-RE relocation in the tp_btf programs: the test tests nothing")
	}
}

// The attach targets' IDs are the ones cilium/ebpf finds.
func TestTypedefIDsAreTheKernels(t *testing.T) {
	_, kernel := kernelSpecs(t)
	var names []string
	for _, a := range attachments {
		names = append(names, "btf_trace_"+a.Name)
	}
	names = append(names, "btf_trace_no_such_tracepoint")
	want := btfNames{exact: make(map[string]bool)}
	for _, n := range names {
		want.exact[n] = true
	}
	k, err := openKernelBTF(want)
	if err != nil {
		t.Fatal(err)
	}
	defer k.close()
	ids, err := k.typedefIDs(names[:len(names)-1])
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names[:len(names)-1] {
		var td *btf.Typedef
		if err := kernel.TypeByName(n, &td); err != nil {
			t.Fatal(err)
		}
		want, err := kernel.TypeID(td)
		if err != nil {
			t.Fatal(err)
		}
		if ids[n] != want {
			t.Errorf("%s: id %d, want %d", n, ids[n], want)
		}
	}
	if _, err := k.typedefIDs([]string{"btf_trace_no_such_tracepoint"}); err == nil {
		t.Error("a missing typedef gave no error")
	}
}

// rawBTFBlob assembles BTF: a header, the type records (words of 32 bits)
// and the string section.
func rawBTFBlob(types []uint32, strs string) []byte {
	bo := binary.NativeEndian
	b := bo.AppendUint16(nil, 0xeb9f)
	b = append(b, 1, 0)
	for _, v := range []uint32{24, 0, uint32(4 * len(types)), uint32(4 * len(types)), uint32(len(strs))} {
		b = bo.AppendUint32(b, v)
	}
	for _, w := range types {
		b = bo.AppendUint32(b, w)
	}
	return append(b, strs...)
}

// A module's BTF is split BTF: its type IDs and string offsets go on from
// vmlinux's, and its types refer to vmlinux's. Its candidates join
// vmlinux's, as cilium/ebpf relocates against both.
func TestModuleBTF(t *testing.T) {
	const (
		intInfo    = kindInt << 24
		structInfo = kindStruct << 24
		ptrInfo    = kindPointer << 24
		tdInfo     = kindTypedef << 24
	)
	// vmlinux: [1] int, [2] struct task_struct { int pid; }, [3] typedef
	// btf_trace_x = struct task_struct.
	baseStrs := "\x00int\x00task_struct\x00pid\x00btf_trace_x\x00"
	base := rawBTFBlob([]uint32{
		1, intInfo, 4, 1<<24 | 32,
		5, structInfo | 1, 8, 17, 1, 0,
		21, tdInfo, 2,
	}, baseStrs)
	// The module: [4] struct task_struct___mod { int pid; struct
	// task_struct *next; }, [5] a pointer to vmlinux's task_struct.
	n := uint32(len(baseStrs))
	modStrs := "\x00task_struct___mod\x00next\x00"
	mod := rawBTFBlob([]uint32{
		n + 1, structInfo | 2, 16, 17, 1, 0, n + 19, 5, 64,
		0, ptrInfo, 2,
	}, modStrs)

	want := btfNames{essential: map[string]bool{"task_struct": true}, exact: map[string]bool{"btf_trace_x": true}}
	vmlinux, err := openBTF(bytes.NewReader(base), int64(len(base)), nil, want)
	if err != nil {
		t.Fatal(err)
	}
	m, err := openBTF(bytes.NewReader(mod), int64(len(mod)), vmlinux, want)
	if err != nil {
		t.Fatal(err)
	}
	if m.firstID != 4 {
		t.Errorf("the module's first type ID is %d, want 4", m.firstID)
	}
	k := &kernelBTF{vmlinux: vmlinux, modules: []*btfFile{m}}
	ids, err := k.typedefIDs([]string{"btf_trace_x"})
	if err != nil || ids["btf_trace_x"] != 3 {
		t.Errorf("typedef IDs %v, %v; want btf_trace_x 3", ids, err)
	}
	spec, err := k.coreSpec()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for typ, err := range spec.All() {
		if err != nil {
			t.Fatal(err)
		}
		if s, ok := typ.(*btf.Struct); ok {
			desc := fmt.Sprintf("%s/%d:", s.Name, s.Size)
			for _, mb := range s.Members {
				desc += fmt.Sprintf(" %s@%d %T", mb.Name, mb.Offset, mb.Type)
			}
			got = append(got, desc)
		}
	}
	slices.Sort(got)
	want2 := []string{
		"task_struct/8: pid@0 *btf.Int",
		"task_struct___mod/16: pid@0 *btf.Int next@64 *btf.Pointer",
	}
	if !slices.Equal(got, want2) {
		t.Errorf("the spec's structs are\n%q\nwant\n%q", got, want2)
	}
}
