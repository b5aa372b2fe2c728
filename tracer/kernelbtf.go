package tracer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// The kernel's BTF, read for what loading memdiag's tp_btf programs needs
// and no more: the IDs of their attach targets and the kernel types their
// CO-RE relocations are computed against. cilium/ebpf decodes all of it
// (an offset and an index entry per kernel type, 1.6 MB for this 6.18
// kernel's 125,646 types) and inflates each target with everything it
// reaches: the target of rss_stat takes an mm_struct, which reaches
// task_struct and most of the kernel, 2 MB of Go values. Both were live
// at once at memdiag's peak (BENCHMARKS.md, "second diet"). Here the
// kernel's BTF stays in a mapping the kernel backs (not memdiag's
// resident memory) and an offset per type is the only table built.

// rawBTF is one BTF blob: vmlinux's, or a module's split on top of it.
type rawBTF struct {
	types   []byte // the type section
	strs    []byte // the string section
	base    *rawBTF
	firstID btf.TypeID // the ID of the first type in types
	offsets []uint32   // each type's offset in types, from firstID on
}

// BTF kinds (include/uapi/linux/btf.h).
const (
	kindInt       = 1
	kindPointer   = 2
	kindArray     = 3
	kindStruct    = 4
	kindUnion     = 5
	kindEnum      = 6
	kindFwd       = 7
	kindTypedef   = 8
	kindVolatile  = 9
	kindConst     = 10
	kindRestrict  = 11
	kindFunc      = 12
	kindFuncProto = 13
	kindVar       = 14
	kindDatasec   = 15
	kindFloat     = 16
	kindDeclTag   = 17
	kindTypeTag   = 18
	kindEnum64    = 19
)

const btfTypeLen = 12 // struct btf_type: name_off, info, size or type

var errBTF = errors.New("malformed BTF")

// parseBTF indexes data, BTF in the host's byte order (the kernel's);
// base is vmlinux's when data is a module's.
func parseBTF(data []byte, base *rawBTF) (*rawBTF, error) {
	bo := binary.NativeEndian
	if len(data) < 24 || bo.Uint16(data) != 0xeb9f {
		return nil, fmt.Errorf("%w: no header", errBTF)
	}
	hdrLen, typeOff, typeLen := bo.Uint32(data[4:]), bo.Uint32(data[8:]), bo.Uint32(data[12:])
	strOff, strLen := bo.Uint32(data[16:]), bo.Uint32(data[20:])
	if uint64(hdrLen) > uint64(len(data)) {
		return nil, fmt.Errorf("%w: header", errBTF)
	}
	body := data[hdrLen:]
	if uint64(typeOff)+uint64(typeLen) > uint64(len(body)) || uint64(strOff)+uint64(strLen) > uint64(len(body)) {
		return nil, fmt.Errorf("%w: sections out of bounds", errBTF)
	}
	r := &rawBTF{types: body[typeOff : typeOff+typeLen], strs: body[strOff : strOff+strLen], base: base, firstID: 1}
	if base != nil {
		r.firstID = base.firstID + btf.TypeID(len(base.offsets))
	}
	// Counted first: appending to a growing table allocated 2.4 MB
	// for vmlinux's 0.5 MB.
	count := 0
	for off := 0; off < len(r.types); count++ {
		n, err := r.recordLen(off)
		if err != nil {
			return nil, err
		}
		off += n
	}
	r.offsets = make([]uint32, 0, count)
	for off := 0; off < len(r.types); {
		n, _ := r.recordLen(off)
		r.offsets = append(r.offsets, uint32(off))
		off += n
	}
	return r, nil
}

// recordLen is the length of the type record at off.
func (r *rawBTF) recordLen(off int) (int, error) {
	if off+btfTypeLen > len(r.types) {
		return 0, fmt.Errorf("%w: truncated type", errBTF)
	}
	info := binary.NativeEndian.Uint32(r.types[off+4:])
	vlen := int(info & 0xffff)
	n := btfTypeLen
	switch info >> 24 & 0x1f {
	case kindInt, kindVar, kindDeclTag:
		n += 4
	case kindArray:
		n += 12
	case kindStruct, kindUnion, kindDatasec, kindEnum64:
		n += 12 * vlen
	case kindEnum, kindFuncProto:
		n += 8 * vlen
	case kindPointer, kindFwd, kindTypedef, kindVolatile, kindConst, kindRestrict, kindFunc, kindFloat, kindTypeTag:
	default:
		return 0, fmt.Errorf("%w: unknown kind %d", errBTF, info>>24&0x1f)
	}
	if off+n > len(r.types) {
		return 0, fmt.Errorf("%w: truncated type", errBTF)
	}
	return n, nil
}

// str is the string at off; a module's offsets go on from vmlinux's.
func (r *rawBTF) str(off uint32) ([]byte, error) {
	if r.base != nil {
		if off < uint32(len(r.base.strs)) {
			return r.base.str(off)
		}
		off -= uint32(len(r.base.strs))
	}
	if off >= uint32(len(r.strs)) {
		return nil, fmt.Errorf("%w: string offset %d", errBTF, off)
	}
	s := r.strs[off:]
	for i, c := range s {
		if c == 0 {
			return s[:i], nil
		}
	}
	return nil, fmt.Errorf("%w: unterminated string", errBTF)
}

// rawType is one type record, its kind's data in data.
type rawType struct {
	name     []byte
	kind     uint32
	vlen     int
	kindFlag bool
	sizeType uint32 // size or referenced type, by kind
	data     []byte
}

// u32 is the i-th 32-bit word of the kind's data.
func (r *rawType) u32(i int) uint32 { return binary.NativeEndian.Uint32(r.data[4*i:]) }

// typ is the record of id, vmlinux's when id is below a module's own.
func (r *rawBTF) typ(id btf.TypeID) (rawType, error) {
	if id < r.firstID {
		if r.base == nil {
			return rawType{}, fmt.Errorf("%w: type id %d", errBTF, id)
		}
		return r.base.typ(id)
	}
	idx := int(id - r.firstID)
	if idx >= len(r.offsets) {
		return rawType{}, fmt.Errorf("%w: type id %d", errBTF, id)
	}
	off := int(r.offsets[idx])
	n, err := r.recordLen(off)
	if err != nil {
		return rawType{}, err
	}
	rec := r.types[off : off+n]
	info := binary.NativeEndian.Uint32(rec[4:])
	name, err := r.str(binary.NativeEndian.Uint32(rec))
	if err != nil {
		return rawType{}, err
	}
	return rawType{
		name:     name,
		kind:     info >> 24 & 0x1f,
		vlen:     int(info & 0xffff),
		kindFlag: info>>31 == 1,
		sizeType: binary.NativeEndian.Uint32(rec[8:]),
		data:     rec[btfTypeLen:],
	}, nil
}

// essentialName is name without a CO-RE flavour (bpf_array___pcpu is a
// bpf_array), as cilium/ebpf and libbpf match them.
func essentialName(name string) string {
	if i := strings.LastIndex(name, "___"); i > 0 {
		return name[:i]
	}
	return name
}

// named calls fn with each of r's own types whose essential name is in
// names.
func (r *rawBTF) named(names map[string]bool, fn func(id btf.TypeID, t rawType) error) error {
	for i := range r.offsets {
		id := r.firstID + btf.TypeID(i)
		t, err := r.typ(id)
		if err != nil {
			return err
		}
		name := t.name
		if i := bytes.LastIndex(name, []byte("___")); i > 0 {
			name = name[:i] // essentialName, without a string per type
		}
		if len(name) > 0 && names[string(name)] {
			if err := fn(id, t); err != nil {
				return err
			}
		}
	}
	return nil
}

// kernelBTF is the running kernel's BTF: vmlinux's and each module's.
// close unmaps vmlinux's.
type kernelBTF struct {
	vmlinux *rawBTF
	modules []*rawBTF
	mapped  []byte
}

func openKernelBTF() (_ *kernelBTF, err error) {
	k := &kernelBTF{}
	defer func() {
		if err != nil {
			k.close()
		}
	}()
	data, err := k.mapVmlinux()
	if err != nil {
		return nil, err
	}
	if k.vmlinux, err = parseBTF(data, nil); err != nil {
		return nil, fmt.Errorf("vmlinux: %w", err)
	}
	// Modules' BTF is small; cilium/ebpf relocates against it too.
	paths, err := filepath.Glob("/sys/kernel/btf/*")
	if err != nil {
		return nil, err
	}
	for _, p := range paths {
		if filepath.Base(p) == "vmlinux" {
			continue
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		m, err := parseBTF(data, k.vmlinux)
		if err != nil {
			return nil, fmt.Errorf("module %s: %w", filepath.Base(p), err)
		}
		k.modules = append(k.modules, m)
	}
	return k, nil
}

// mapVmlinux maps vmlinux's BTF: the kernel backs the mapping, so it is
// not memdiag's resident memory. Kernels before 6.16 cannot map it; it is
// read then (5-6 MB of heap for a while, as cilium/ebpf reads it too).
func (k *kernelBTF) mapVmlinux() ([]byte, error) {
	f, err := os.Open("/sys/kernel/btf/vmlinux")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	k.mapped, err = unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_PRIVATE)
	if err == nil {
		return k.mapped, nil
	}
	return io.ReadAll(f)
}

func (k *kernelBTF) close() {
	if k.mapped != nil {
		_ = unix.Munmap(k.mapped)
		k.mapped = nil
	}
}

// typedefIDs gives the vmlinux ID of each named typedef (the tp_btf
// target of tracepoint X is the typedef btf_trace_X): an error when one is
// missing from vmlinux or defined more than once, as cilium/ebpf (which
// would then look in modules, or refuse an ambiguous target).
func (k *kernelBTF) typedefIDs(names []string) (map[string]btf.TypeID, error) {
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	ids := make(map[string]btf.TypeID, len(names))
	err := k.vmlinux.named(want, func(id btf.TypeID, t rawType) error {
		name := string(t.name)
		if t.kind != kindTypedef || !want[name] {
			return nil
		}
		if _, dup := ids[name]; dup {
			return fmt.Errorf("typedef %s is defined more than once", name)
		}
		ids[name] = id
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		if _, ok := ids[n]; !ok {
			return nil, fmt.Errorf("typedef %s is not in vmlinux", n)
		}
	}
	return ids, nil
}

// coreSpec holds every kernel type (of vmlinux and the modules) whose
// essential name is in names, each with the types it embeds, so CO-RE
// relocations of the field and enum kinds give what they give against
// the whole kernel: they find their candidates by name and walk members,
// arrays, typedefs and qualifiers, never through a pointer. A pointer's
// target is left out (void): a field relocation only checks that the
// kernel's member is a pointer. Relocations by type ID or type shape
// would not see the kernel's types, and must not use this spec.
func (k *kernelBTF) coreSpec(names map[string]bool) (*btf.Spec, error) {
	var roots []btf.Type
	vmlinux := &btfConverter{raw: k.vmlinux, done: map[btf.TypeID]btf.Type{}}
	convs := []*btfConverter{vmlinux}
	for _, m := range k.modules {
		convs = append(convs, &btfConverter{raw: m, base: vmlinux, done: map[btf.TypeID]btf.Type{}})
	}
	for _, c := range convs {
		err := c.raw.named(names, func(id btf.TypeID, t rawType) error {
			switch t.kind {
			case kindFunc, kindVar, kindDatasec, kindDeclTag:
				// Never a struct, union or enum, even under a
				// typedef: every field or enum relocation against
				// one is impossible, and a candidate whose
				// relocations are all impossible changes nothing
				// (cilium/ebpf's coreCalculateFixups).
				return nil
			}
			typ, err := c.convert(id)
			roots = append(roots, typ)
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	b, err := btf.NewBuilder(roots, nil)
	if err != nil {
		return nil, err
	}
	return b.Spec()
}

// btfConverter makes btf.Types of one blob's raw types; a module's asks
// vmlinux's for the IDs below its own.
type btfConverter struct {
	raw  *rawBTF
	base *btfConverter
	done map[btf.TypeID]btf.Type
}

// opaquePointer stands for every pointer (see coreSpec).
var opaquePointer = &btf.Pointer{Target: &btf.Void{}}

func (c *btfConverter) convert(id btf.TypeID) (btf.Type, error) {
	if id == 0 {
		return &btf.Void{}, nil
	}
	if c.base != nil && id < c.raw.firstID {
		return c.base.convert(id)
	}
	if typ, ok := c.done[id]; ok {
		return typ, nil
	}
	t, err := c.raw.typ(id)
	if err != nil {
		return nil, err
	}
	name := string(t.name)
	// ref converts a referenced type into *dst.
	ref := func(id uint32, dst *btf.Type) error {
		typ, err := c.convert(btf.TypeID(id))
		*dst = typ
		return err
	}
	switch t.kind {
	case kindInt:
		typ := &btf.Int{Name: name, Size: t.sizeType, Encoding: btf.IntEncoding(t.u32(0) >> 24 & 0xf)}
		c.done[id] = typ
		return typ, nil
	case kindPointer:
		return opaquePointer, nil
	case kindArray:
		typ := &btf.Array{Nelems: t.u32(2)}
		c.done[id] = typ
		if err := ref(t.u32(0), &typ.Type); err != nil {
			return nil, err
		}
		return typ, ref(t.u32(1), &typ.Index)
	case kindStruct, kindUnion:
		members := make([]btf.Member, t.vlen)
		var typ btf.Type = &btf.Struct{Name: name, Size: t.sizeType, Members: members}
		if t.kind == kindUnion {
			typ = &btf.Union{Name: name, Size: t.sizeType, Members: members}
		}
		c.done[id] = typ
		for i := range members {
			mname, err := c.raw.str(t.u32(3 * i))
			if err != nil {
				return nil, err
			}
			m := &members[i]
			m.Name = string(mname)
			off := t.u32(3*i + 2)
			if err := ref(t.u32(3*i+1), &m.Type); err != nil {
				return nil, err
			}
			if t.kindFlag {
				m.Offset, m.BitfieldSize = btf.Bits(off&0xffffff), btf.Bits(off>>24)
				continue
			}
			m.Offset = btf.Bits(off)
			// A bitfield of old BTF: its int says where its bits are,
			// as cilium/ebpf's decoder reads it.
			it, err := c.raw.typ(btf.TypeID(t.u32(3*i + 1)))
			if err != nil {
				return nil, err
			}
			if it.kind == kindInt {
				enc := it.u32(0)
				bitOff, bits := btf.Bits(enc>>16&0xff), btf.Bits(enc&0xff)
				if bitOff > 0 || bits.Bytes() != it.sizeType {
					m.Offset += bitOff
					m.BitfieldSize = bits
				}
			}
		}
		return typ, nil
	case kindEnum, kindEnum64:
		typ := &btf.Enum{Name: name, Size: t.sizeType, Signed: t.kindFlag}
		c.done[id] = typ
		stride := 2
		if t.kind == kindEnum64 {
			stride = 3
		}
		for i := range t.vlen {
			vname, err := c.raw.str(t.u32(stride * i))
			if err != nil {
				return nil, err
			}
			v := uint64(t.u32(stride*i + 1))
			switch {
			case t.kind == kindEnum64:
				v |= uint64(t.u32(stride*i+2)) << 32
			case typ.Signed:
				v = uint64(int32(v))
			}
			typ.Values = append(typ.Values, btf.EnumValue{Name: string(vname), Value: v})
		}
		return typ, nil
	case kindFwd:
		kind := btf.FwdStruct
		if t.kindFlag {
			kind = btf.FwdUnion
		}
		typ := &btf.Fwd{Name: name, Kind: kind}
		c.done[id] = typ
		return typ, nil
	case kindTypedef:
		typ := &btf.Typedef{Name: name}
		c.done[id] = typ
		return typ, ref(t.sizeType, &typ.Type)
	case kindVolatile:
		typ := &btf.Volatile{}
		c.done[id] = typ
		return typ, ref(t.sizeType, &typ.Type)
	case kindConst:
		typ := &btf.Const{}
		c.done[id] = typ
		return typ, ref(t.sizeType, &typ.Type)
	case kindRestrict:
		typ := &btf.Restrict{}
		c.done[id] = typ
		return typ, ref(t.sizeType, &typ.Type)
	case kindTypeTag:
		typ := &btf.TypeTag{Value: name}
		c.done[id] = typ
		return typ, ref(t.sizeType, &typ.Type)
	case kindFloat:
		typ := &btf.Float{Name: name, Size: t.sizeType}
		c.done[id] = typ
		return typ, nil
	}
	return nil, fmt.Errorf("type %d (%s): a kind of BTF type not converted (%d)", id, name, t.kind)
}
