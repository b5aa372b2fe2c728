package tracer

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf/btf"
)

// The kernel's BTF, read for what loading memdiag's tp_btf programs needs
// and no more: the IDs of their attach targets and the kernel types their
// CO-RE relocations are computed against. cilium/ebpf decodes all of it
// (an offset and an index entry per kernel type, 1.6 MB for this 6.18
// kernel's 125,646 types) and inflates each target with everything it
// reaches: the target of rss_stat takes an mm_struct, which reaches
// task_struct and most of the kernel, 2 MB of Go values. Both were live
// at once at memdiag's peak (BENCHMARKS.md, "second diet"). Here the BTF
// file is streamed once for the names wanted, then read at the few
// hundred types those embed; an offset per type (4 bytes) is the only
// table built.

// btfFile is one BTF blob: vmlinux's, or a module's split on top of it.
type btfFile struct {
	types   *io.SectionReader // the type section
	strs    *io.SectionReader // the string section
	base    *btfFile
	firstID btf.TypeID          // the ID of the first type in types
	offsets [][]uint32          // each type's offset in types, from firstID on, in chunks
	wanted  map[uint32]btfMatch // offsets of the names asked for: the match's name and exact
	matches []btfMatch          // the types with those names, in ID order
	scratch [64]byte            // for str
}

// btfMatch is a type whose name was asked for.
type btfMatch struct {
	id    btf.TypeID
	kind  uint32
	name  string // its essential name, or its name when exact
	exact bool   // asked for by exact name
}

// offsetChunk entries at most per chunk of btfFile.offsets: vmlinux's
// 125,646 offsets appended to one slice allocated 2.4 MB for its final
// 0.5 MB.
const offsetChunk = 4096

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

// btfNames are the names a btfFile looks for: types whose essential name
// is in essential, and types named exactly as in exact.
type btfNames struct {
	essential map[string]bool
	exact     map[string]bool
}

// openBTF indexes the BTF of r (size bytes, in the host's byte order,
// which is the kernel's) and finds the types named as in want; base is
// vmlinux's when r is a module's.
func openBTF(r io.ReaderAt, size int64, base *btfFile, want btfNames) (*btfFile, error) {
	bo := binary.NativeEndian
	var hdr [24]byte
	if err := readFull(r, hdr[:], 0); err != nil {
		return nil, fmt.Errorf("%w: no header: %w", errBTF, err)
	}
	if bo.Uint16(hdr[:]) != 0xeb9f {
		return nil, fmt.Errorf("%w: not BTF of this byte order", errBTF)
	}
	hdrLen := int64(bo.Uint32(hdr[4:]))
	typeOff, typeLen := hdrLen+int64(bo.Uint32(hdr[8:])), int64(bo.Uint32(hdr[12:]))
	strOff, strLen := hdrLen+int64(bo.Uint32(hdr[16:])), int64(bo.Uint32(hdr[20:]))
	if typeOff+typeLen > size || strOff+strLen > size {
		return nil, fmt.Errorf("%w: sections out of bounds", errBTF)
	}
	f := &btfFile{
		types:   io.NewSectionReader(r, typeOff, typeLen),
		strs:    io.NewSectionReader(r, strOff, strLen),
		base:    base,
		firstID: 1,
	}
	if base != nil {
		f.firstID = base.firstID + btf.TypeID(base.count())
	}
	var err error
	if f.wanted, err = f.wantedNames(want); err != nil {
		return nil, err
	}
	return f, f.index()
}

func (f *btfFile) count() int {
	if len(f.offsets) == 0 {
		return 0
	}
	return (len(f.offsets)-1)*offsetChunk + len(f.offsets[len(f.offsets)-1])
}

// wantedNames streams f's strings for the names in want: each one's
// offset, with the name types are matched by (essential or exact). A
// module's names go on from vmlinux's offsets.
func (f *btfFile) wantedNames(want btfNames) (map[uint32]btfMatch, error) {
	names := make(map[uint32]btfMatch)
	var start uint32
	if f.base != nil {
		start = uint32(f.base.strs.Size())
	}
	br := bufio.NewReaderSize(io.NewSectionReader(f.strs, 0, f.strs.Size()), 32<<10)
	for off := start; ; {
		s, err := br.ReadSlice(0)
		if err == io.EOF && len(s) == 0 {
			return names, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%w: strings: %w", errBTF, err)
		}
		name := s[:len(s)-1]
		ess := name
		if i := bytes.LastIndex(name, []byte("___")); i > 0 {
			ess = name[:i] // as essentialName, without a string per name
		}
		switch {
		case want.exact[string(name)]:
			names[off] = btfMatch{name: string(name), exact: true}
		case want.essential[string(ess)]:
			names[off] = btfMatch{name: string(ess)}
		}
		off += uint32(len(s))
	}
}

// index streams f's types: each one's offset, and the types with the
// names asked for.
func (f *btfFile) index() error {
	br := bufio.NewReaderSize(io.NewSectionReader(f.types, 0, f.types.Size()), 32<<10)
	var hdr [btfTypeLen]byte
	id := f.firstID
	for off := int64(0); off < f.types.Size(); id++ {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return fmt.Errorf("%w: type %d: %w", errBTF, id, err)
		}
		info := binary.NativeEndian.Uint32(hdr[4:])
		n, err := dataLen(info)
		if err != nil {
			return err
		}
		if _, err := br.Discard(n); err != nil {
			return fmt.Errorf("%w: type %d: %w", errBTF, id, err)
		}
		if last := len(f.offsets) - 1; last < 0 || len(f.offsets[last]) == cap(f.offsets[last]) {
			// No more than the types left can hold (12 bytes at
			// least each): a module's few take little.
			f.offsets = append(f.offsets, make([]uint32, 0, min(offsetChunk, (f.types.Size()-off)/btfTypeLen)))
		}
		f.offsets[len(f.offsets)-1] = append(f.offsets[len(f.offsets)-1], uint32(off))
		nameOff := binary.NativeEndian.Uint32(hdr[:])
		m, ok := f.wanted[nameOff]
		if !ok && f.base != nil {
			m, ok = f.base.wanted[nameOff]
		}
		if ok {
			m.id, m.kind = id, info>>24&0x1f
			f.matches = append(f.matches, m)
		}
		off += btfTypeLen + int64(n)
	}
	return nil
}

// dataLen is the length of the data after a type record of info.
func dataLen(info uint32) (int, error) {
	vlen := int(info & 0xffff)
	switch info >> 24 & 0x1f {
	case kindInt, kindVar, kindDeclTag:
		return 4, nil
	case kindArray:
		return 12, nil
	case kindStruct, kindUnion, kindDatasec, kindEnum64:
		return 12 * vlen, nil
	case kindEnum, kindFuncProto:
		return 8 * vlen, nil
	case kindPointer, kindFwd, kindTypedef, kindVolatile, kindConst, kindRestrict, kindFunc, kindFloat, kindTypeTag:
		return 0, nil
	}
	return 0, fmt.Errorf("%w: unknown kind %d", errBTF, info>>24&0x1f)
}

// str is the string at off; a module's offsets go on from vmlinux's.
func (f *btfFile) str(off uint32) (string, error) {
	if f.base != nil {
		if base := uint32(f.base.strs.Size()); off < base {
			return f.base.str(off)
		} else {
			off -= base
		}
	}
	// Names are short: most fit in scratch; a longer one is read whole.
	buf := f.scratch[:]
	for {
		n, err := f.strs.ReadAt(buf, int64(off))
		if i := bytes.IndexByte(buf[:n], 0); i >= 0 {
			return string(buf[:i]), nil
		}
		if err != nil {
			return "", fmt.Errorf("%w: string at %d: %w", errBTF, off, err)
		}
		buf = make([]byte, 2*len(buf))
	}
}

// rawType is one type record, its kind's data in data.
type rawType struct {
	name     string
	kind     uint32
	vlen     int
	kindFlag bool
	sizeType uint32 // size or referenced type, by kind
	data     []byte
}

// u32 is the i-th 32-bit word of the kind's data.
func (r *rawType) u32(i int) uint32 { return binary.NativeEndian.Uint32(r.data[4*i:]) }

// typ is the record of id, vmlinux's when id is below a module's own.
func (f *btfFile) typ(id btf.TypeID) (rawType, error) {
	if id < f.firstID {
		if f.base == nil {
			return rawType{}, fmt.Errorf("%w: type id %d", errBTF, id)
		}
		return f.base.typ(id)
	}
	idx := int(id - f.firstID)
	if idx >= f.count() {
		return rawType{}, fmt.Errorf("%w: type id %d", errBTF, id)
	}
	off := int64(f.offsets[idx/offsetChunk][idx%offsetChunk])
	var hdr [btfTypeLen]byte
	if err := readFull(f.types, hdr[:], off); err != nil {
		return rawType{}, fmt.Errorf("%w: type %d: %w", errBTF, id, err)
	}
	info := binary.NativeEndian.Uint32(hdr[4:])
	n, err := dataLen(info)
	if err != nil {
		return rawType{}, err
	}
	t := rawType{
		kind:     info >> 24 & 0x1f,
		vlen:     int(info & 0xffff),
		kindFlag: info>>31 == 1,
		sizeType: binary.NativeEndian.Uint32(hdr[8:]),
		data:     make([]byte, n),
	}
	if err := readFull(f.types, t.data, off+btfTypeLen); err != nil {
		return rawType{}, fmt.Errorf("%w: type %d: %w", errBTF, id, err)
	}
	if t.name, err = f.str(binary.NativeEndian.Uint32(hdr[:])); err != nil {
		return rawType{}, err
	}
	return t, nil
}

// readFull reads len(b) bytes at off: a ReaderAt may say io.EOF with all
// of them when they end its input.
func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// essentialName is name without a CO-RE flavour (bpf_array___pcpu is a
// bpf_array), as cilium/ebpf and libbpf match them.
func essentialName(name string) string {
	if i := strings.LastIndex(name, "___"); i > 0 {
		return name[:i]
	}
	return name
}

// kernelBTF is the running kernel's BTF: vmlinux's and each module's,
// open until close.
type kernelBTF struct {
	vmlinux *btfFile
	modules []*btfFile
	files   []*os.File
}

// openKernelBTF finds the types named as in want in the kernel's BTF.
func openKernelBTF(want btfNames) (_ *kernelBTF, err error) {
	k := &kernelBTF{}
	defer func() {
		if err != nil {
			k.close()
		}
	}()
	// Read from the file, not mapped (kernels before 6.16 cannot map it):
	// 10 ms here either way, all of it streaming and the few hundred
	// types read at their offsets.
	f, size, err := openSized("/sys/kernel/btf/vmlinux")
	if err != nil {
		return nil, err
	}
	k.files = append(k.files, f)
	if k.vmlinux, err = openBTF(f, size, nil, want); err != nil {
		return nil, fmt.Errorf("vmlinux: %w", err)
	}
	// cilium/ebpf relocates against modules' BTF too; those without a
	// type of the names wanted are done with.
	paths, err := filepath.Glob("/sys/kernel/btf/*")
	if err != nil {
		return nil, err
	}
	for _, p := range paths {
		if filepath.Base(p) == "vmlinux" {
			continue
		}
		f, size, err := openSized(p)
		if err != nil {
			return nil, err
		}
		m, err := openBTF(f, size, k.vmlinux, want)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("module %s: %w", filepath.Base(p), err)
		}
		if len(m.matches) == 0 {
			f.Close()
			continue
		}
		k.files = append(k.files, f)
		k.modules = append(k.modules, m)
	}
	return k, nil
}

func openSized(path string) (*os.File, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, st.Size(), nil
}

func (k *kernelBTF) close() {
	for _, f := range k.files {
		f.Close()
	}
	k.files = nil
}

// typedefIDs gives the vmlinux ID of each typedef asked for exactly (the
// tp_btf target of tracepoint X is the typedef btf_trace_X): an error
// when one is missing from vmlinux or defined more than once, as
// cilium/ebpf (which would then look in modules, or refuse an ambiguous
// target).
func (k *kernelBTF) typedefIDs(names []string) (map[string]btf.TypeID, error) {
	ids := make(map[string]btf.TypeID, len(names))
	for _, m := range k.vmlinux.matches {
		if !m.exact || m.kind != kindTypedef {
			continue
		}
		if _, dup := ids[m.name]; dup {
			return nil, fmt.Errorf("typedef %s is defined more than once", m.name)
		}
		ids[m.name] = m.id
	}
	for _, n := range names {
		if _, ok := ids[n]; !ok {
			return nil, fmt.Errorf("typedef %s is not in vmlinux", n)
		}
	}
	return ids, nil
}

// coreSpec holds every kernel type (of vmlinux and the modules) whose
// essential name was asked for, each with the types it embeds, so CO-RE
// relocations of the field and enum kinds give what they give against
// the whole kernel: they find their candidates by name and walk members,
// arrays, typedefs and qualifiers, never through a pointer. A pointer's
// target is left out (void): a field relocation only checks that the
// kernel's member is a pointer. Relocations by type ID or type shape
// would not see the kernel's types, and must not use this spec.
func (k *kernelBTF) coreSpec() (*btf.Spec, error) {
	var roots []btf.Type
	vmlinux := &btfConverter{raw: k.vmlinux, done: map[btf.TypeID]btf.Type{}}
	convs := []*btfConverter{vmlinux}
	for _, m := range k.modules {
		convs = append(convs, &btfConverter{raw: m, base: vmlinux, done: map[btf.TypeID]btf.Type{}})
	}
	for _, c := range convs {
		for _, m := range c.raw.matches {
			switch {
			case m.exact:
				continue
			case m.kind == kindFunc, m.kind == kindVar, m.kind == kindDatasec, m.kind == kindDeclTag:
				// Never a struct, union or enum, even under a
				// typedef: every field or enum relocation against
				// one is impossible, and a candidate whose
				// relocations are all impossible changes nothing
				// (cilium/ebpf's coreCalculateFixups).
				continue
			}
			typ, err := c.convert(m.id)
			if err != nil {
				return nil, err
			}
			roots = append(roots, typ)
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
	raw  *btfFile
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
	name := t.name
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
			m.Name = mname
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
			typ.Values = append(typ.Values, btf.EnumValue{Name: vname, Value: v})
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
