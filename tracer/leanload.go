package tracer

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// loadObjects loads spec into objs. The tp_btf programs are loaded with
// the kernel's BTF read by kernelBTF (loadLean); when that path cannot
// answer (no /sys/kernel/btf/vmlinux, a target only a module defines, a
// relocation kind it does not compute, a kernel that refuses the
// program), cilium/ebpf loads everything, as it always did, and reports
// its own errors (a verifier's refusal among them).
func loadObjects(spec *ebpf.CollectionSpec, objs *memdiagObjects) error {
	if err := loadLeanSafely(spec, objs); err == nil {
		return nil
	}
	return spec.LoadAndAssign(objs, nil)
}

// loadLeanSafely is loadLean with a panic (a BTF it misreads) turned into
// an error, so that cilium/ebpf's loader still runs.
func loadLeanSafely(spec *ebpf.CollectionSpec, objs *memdiagObjects) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("lean load: %v", r)
		}
	}()
	return loadLean(spec, objs)
}

// loadLean loads spec's maps and non-tp_btf programs with cilium/ebpf,
// which needs no kernel types for them, and its tp_btf programs with
// loadTracing: the same bytes reach the kernel as cilium/ebpf's, found
// without decoding the kernel's BTF (kernelbtf.go).
func loadLean(spec *ebpf.CollectionSpec, objs *memdiagObjects) error {
	if spec.Types == nil {
		return errors.New("the program has no BTF")
	}
	// Extern kernel symbols and kconfig values are resolved by
	// cilium/ebpf's loader only.
	var ds *btf.Datasec
	if spec.Types.TypeByName(".ksyms", &ds) == nil || spec.Maps[".kconfig"] != nil {
		return errors.New("the program has kernel symbols or kconfig values")
	}
	rest := *spec
	rest.Programs = make(map[string]*ebpf.ProgramSpec, len(spec.Programs))
	tracing := make(map[string]*ebpf.ProgramSpec)
	var targets []string
	for name, p := range spec.Programs {
		if p.Type == ebpf.Tracing && p.AttachType == ebpf.AttachTraceRawTp {
			tracing[name] = p
			targets = append(targets, "btf_trace_"+p.AttachTo)
		} else {
			rest.Programs[name] = p
		}
	}
	kernel, ids, err := tracingKernelTypes(spec, tracing, targets)
	if err != nil {
		return err
	}

	coll, err := ebpf.NewCollectionWithOptions(&rest, ebpf.CollectionOptions{})
	if err != nil {
		return err
	}
	defer coll.Close() // what objs does not take
	for name, p := range tracing {
		prog, err := loadTracing(p, coll.Maps, kernel, ids["btf_trace_"+p.AttachTo])
		if err != nil {
			return fmt.Errorf("program %s: %w", name, err)
		}
		coll.Programs[name] = prog
	}
	return coll.Assign(objs)
}

// coreKinds are the CO-RE relocation kinds a spec of kernelBTF.coreSpec
// answers as the whole kernel's types would. cilium/ebpf exports no
// accessor for a relocation's kind, only its String; a String that does
// not parse names no kind here, and the program goes to cilium/ebpf.
var coreKinds = map[string]bool{
	"byte_off": true, "byte_sz": true, "field_exists": true, "signed": true,
	"lshift_u64": true, "rshift_u64": true, "local_type_id": true,
	"enumval_exists": true, "enumval_value": true,
}

func coreKind(r *btf.CORERelocation) string {
	kind, _, _ := strings.Cut(strings.TrimPrefix(r.String(), "CORERelocation("), ",")
	return kind
}

// tracingKernelTypes reads the kernel's BTF for the tracing programs: a
// spec for their CO-RE relocations and the IDs of their targets.
func tracingKernelTypes(spec *ebpf.CollectionSpec, tracing map[string]*ebpf.ProgramSpec, targets []string) (*btf.Spec, map[string]btf.TypeID, error) {
	for name, p := range tracing {
		for i := range p.Instructions {
			if r := btf.CORERelocationMetadata(&p.Instructions[i]); r != nil && !coreKinds[coreKind(r)] {
				return nil, nil, fmt.Errorf("program %s: CO-RE relocation %s", name, r)
			}
		}
	}
	// A relocation's candidates are the kernel types named as its
	// (local) struct, union or enum: every such name of the program.
	want := btfNames{essential: make(map[string]bool), exact: make(map[string]bool)}
	for typ, err := range spec.Types.All() {
		if err != nil {
			return nil, nil, err
		}
		switch typ.(type) {
		case *btf.Struct, *btf.Union, *btf.Enum:
			if n := typ.TypeName(); n != "" {
				want.essential[essentialName(n)] = true
			}
		}
	}
	for _, t := range targets {
		want.exact[t] = true
	}
	k, err := openKernelBTF(want)
	if err != nil {
		return nil, nil, err
	}
	defer k.close()
	ids, err := k.typedefIDs(targets)
	if err != nil {
		return nil, nil, err
	}
	kernel, err := k.coreSpec()
	if err != nil {
		return nil, nil, err
	}
	return kernel, ids, nil
}

// progLoadAttr is union bpf_attr's part for BPF_PROG_LOAD, up to
// attach_btf_obj_fd (include/uapi/linux/bpf.h); the kernel takes the
// fields after it as zero, and so are the blank ones (no verifier log,
// the target in vmlinux).
type progLoadAttr struct {
	progType           uint32
	insnCnt            uint32
	insns              uint64
	license            uint64
	_                  uint32 // log_level
	_                  uint32 // log_size
	_                  uint64 // log_buf
	_                  uint32 // kern_version
	progFlags          uint32
	progName           [unix.BPF_OBJ_NAME_LEN]byte
	_                  uint32 // prog_ifindex
	expectedAttachType uint32
	progBTFFd          uint32
	funcInfoRecSize    uint32
	funcInfo           uint64
	funcInfoCnt        uint32
	lineInfoRecSize    uint32
	lineInfo           uint64
	lineInfoCnt        uint32
	attachBTFID        uint32
	_                  uint32 // attach_btf_obj_fd
	_                  uint32 // core_relo_cnt: spelled out, not left to padding (the kernel reads it)
}

// loadTracing loads a tp_btf program as cilium/ebpf's
// newProgramWithOptions does, given what it would look up: its maps, the
// kernel types of its CO-RE relocations and the vmlinux ID of its
// target. It sends no verifier log: on an error the caller loads with
// cilium/ebpf, which reports the verifier's.
func loadTracing(p *ebpf.ProgramSpec, maps map[string]*ebpf.Map, kernel *btf.Spec, target btf.TypeID) (*ebpf.Program, error) {
	if len(p.Instructions) == 0 || p.ByteOrder == nil || p.AttachTarget != nil || target == 0 {
		return nil, errors.New("no instructions, byte order or vmlinux target")
	}
	insns := make(asm.Instructions, len(p.Instructions))
	copy(insns, p.Instructions)
	var relos []*btf.CORERelocation
	var reloInsns []*asm.Instruction
	for i := range insns {
		ins := &insns[i]
		if r := btf.CORERelocationMetadata(ins); r != nil {
			relos = append(relos, r)
			reloInsns = append(reloInsns, ins)
		}
		switch {
		case ins.IsKfuncCall():
			return nil, errors.New("kfunc calls are resolved by cilium/ebpf only")
		case ins.IsLoadFromMap() && ins.Reference() != "":
			// Map fds set by hand stay (as cilium/ebpf keeps them).
			if int32(ins.Constant) > 0 {
				continue
			}
			m := maps[ins.Reference()]
			if m == nil {
				return nil, fmt.Errorf("no map %s", ins.Reference())
			}
			if err := ins.AssociateMap(m); err != nil {
				return nil, err
			}
		case ins.Reference() != "" && !ins.IsFunctionReference():
			return nil, fmt.Errorf("reference to %s", ins.Reference())
		}
	}
	// cilium/ebpf also swaps bpf_probe_read_kernel for bpf_probe_read on
	// kernels without it: older than 5.5, which have no tp_btf either.
	var b btf.Builder
	if len(relos) > 0 {
		fixups, err := btf.CORERelocate(relos, []*btf.Spec{kernel}, p.ByteOrder, b.Add)
		if err != nil {
			return nil, fmt.Errorf("CO-RE relocations: %w", err)
		}
		for i, f := range fixups {
			if err := f.Apply(reloInsns[i]); err != nil {
				return nil, fmt.Errorf("CO-RE fixup %s: %w", &f, err)
			}
		}
	}
	funcInfos, lineInfos, err := btf.MarshalExtInfos(insns, &b)
	if err != nil {
		return nil, err
	}
	var progBTF uint32
	if !b.Empty() {
		h, err := btf.NewHandle(&b)
		if err != nil {
			return nil, fmt.Errorf("loading the program's BTF: %w", err)
		}
		defer h.Close() // the program holds it once loaded
		progBTF = uint32(h.FD())
	}
	code := bytes.NewBuffer(make([]byte, 0, insns.Size()))
	if err := insns.Marshal(code, p.ByteOrder); err != nil {
		return nil, err
	}
	license := append([]byte(p.License), 0)
	attr := progLoadAttr{
		progType:           unix.BPF_PROG_TYPE_TRACING,
		insnCnt:            uint32(code.Len() / asm.InstructionSize),
		insns:              uint64(uintptr(unsafe.Pointer(&code.Bytes()[0]))),
		license:            uint64(uintptr(unsafe.Pointer(&license[0]))),
		progFlags:          p.Flags,
		expectedAttachType: unix.BPF_TRACE_RAW_TP,
		progBTFFd:          progBTF,
		funcInfoRecSize:    btf.FuncInfoSize,
		funcInfoCnt:        uint32(len(funcInfos)) / btf.FuncInfoSize,
		lineInfoRecSize:    btf.LineInfoSize,
		lineInfoCnt:        uint32(len(lineInfos)) / btf.LineInfoSize,
		attachBTFID:        uint32(target),
	}
	if len(funcInfos) > 0 {
		attr.funcInfo = uint64(uintptr(unsafe.Pointer(&funcInfos[0])))
	}
	if len(lineInfos) > 0 {
		attr.lineInfo = uint64(uintptr(unsafe.Pointer(&lineInfos[0])))
	}
	// The kernel's name rules, as cilium/ebpf applies them.
	name := strings.Map(func(c rune) rune {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' {
			return c
		}
		return -1
	}, p.Name)
	copy(attr.progName[:unix.BPF_OBJ_NAME_LEN-1], name)
	// EAGAIN: a signal interrupted the verifier; cilium/ebpf retries too.
	var (
		fd    uintptr
		errno unix.Errno
	)
	for range 5 {
		if fd, _, errno = unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_LOAD, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr)); errno != unix.EAGAIN {
			break
		}
	}
	runtime.KeepAlive(code)
	runtime.KeepAlive(license)
	runtime.KeepAlive(funcInfos)
	runtime.KeepAlive(lineInfos)
	if errno != 0 {
		return nil, fmt.Errorf("loading: %w", errno)
	}
	return ebpf.NewProgramFromFD(int(fd))
}
