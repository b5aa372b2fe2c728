package tracer

import (
	"testing"
	"unsafe"
)

// TestProgLoadAttrLayout: progLoadAttr lays out union bpf_attr's
// BPF_PROG_LOAD fields at the kernel's offsets (include/uapi/linux/bpf.h),
// through core_relo_cnt, with no padding the kernel would read.
func TestProgLoadAttrLayout(t *testing.T) {
	var a progLoadAttr
	for name, got := range map[string][2]uintptr{
		"prog_flags":           {unsafe.Offsetof(a.progFlags), 44},
		"prog_name":            {unsafe.Offsetof(a.progName), 48},
		"expected_attach_type": {unsafe.Offsetof(a.expectedAttachType), 68},
		"prog_btf_fd":          {unsafe.Offsetof(a.progBTFFd), 72},
		"func_info":            {unsafe.Offsetof(a.funcInfo), 80},
		"line_info":            {unsafe.Offsetof(a.lineInfo), 96},
		"attach_btf_id":        {unsafe.Offsetof(a.attachBTFID), 108},
		"size":                 {unsafe.Sizeof(a), 120},
	} {
		if got[0] != got[1] {
			t.Errorf("%s at %d, the kernel's at %d", name, got[0], got[1])
		}
	}
}
