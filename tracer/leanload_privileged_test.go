//go:build privileged

package tracer

import (
	"os"
	"reflect"
	"testing"

	"github.com/cilium/ebpf"
)

// loadLean hands the kernel the programs cilium/ebpf would: each
// program's kernel tag (a hash of its instructions, map references left
// out) is the same either way.
func TestLeanLoadIsCiliumsLoad(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads the BPF program")
	}
	spec, err := newSpec(Config{}, false)
	if err != nil {
		t.Fatal(err)
	}
	var lean, cilium memdiagObjects
	if err := loadLean(spec, &lean); err != nil {
		t.Fatal(err)
	}
	defer lean.Close()
	if err := spec.LoadAndAssign(&cilium, nil); err != nil {
		t.Fatal(err)
	}
	defer cilium.Close()

	l, c := reflect.ValueOf(lean.memdiagPrograms), reflect.ValueOf(cilium.memdiagPrograms)
	for i := range l.NumField() {
		name := l.Type().Field(i).Name
		lp, cp := l.Field(i).Interface().(*ebpf.Program), c.Field(i).Interface().(*ebpf.Program)
		li, err := lp.Info()
		if err != nil {
			t.Fatal(err)
		}
		ci, err := cp.Info()
		if err != nil {
			t.Fatal(err)
		}
		if li.Tag != ci.Tag || li.Type != ci.Type || li.Name != ci.Name {
			t.Errorf("%s: %s %s tag %s, cilium/ebpf's %s %s tag %s", name, li.Type, li.Name, li.Tag, ci.Type, ci.Name, ci.Tag)
		}
	}
	m := reflect.ValueOf(lean.memdiagMaps)
	for i := range m.NumField() {
		if m.Field(i).IsNil() {
			t.Errorf("map %s not loaded", m.Type().Field(i).Name)
		}
	}
}

// What loadLean does not cover goes to cilium/ebpf's loader: here a
// kconfig map, which only cilium/ebpf fills.
func TestLoadObjectsFallsBack(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads the BPF program")
	}
	spec, err := newSpec(Config{}, false)
	if err != nil {
		t.Fatal(err)
	}
	spec.Maps[".kconfig"] = &ebpf.MapSpec{Name: ".kconfig", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1}
	var objs memdiagObjects
	if err := loadLean(spec, &objs); err == nil {
		objs.Close()
		t.Fatal("loadLean loaded a program with a kconfig map")
	}
	if err := loadObjects(spec, &objs); err != nil {
		t.Fatal(err)
	}
	defer objs.Close()
	if objs.OnRssStat == nil || objs.OnMalloc == nil || objs.Events == nil {
		t.Error("not every object loaded")
	}
}
