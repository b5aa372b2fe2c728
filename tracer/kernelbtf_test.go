package tracer

import (
	"os"
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
