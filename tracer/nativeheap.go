package tracer

// The native heap mode (--native-heap): uprobes on the allocator of the
// libc a target maps. See "Native heap" in bpf/uprobes.bpf.h: allocations
// of 4 KiB and more are all followed, smaller ones sampled.

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/memdiag/memdiag/procfs"
)

// AttachNativeHeap attaches the native heap uprobes (entry of malloc,
// calloc, realloc and free, return of the first three) to the C library
// process pid maps, for that process only. libc is the library's path as
// seen from memdiag; "" finds it in /proc/PID/maps (attach: the process
// runs).
func (t *Tracer) AttachNativeHeap(pid int, libc string) error {
	if libc == "" {
		var err error
		if libc, err = MappedLibc(pid); err != nil {
			return fmt.Errorf("--native-heap: %w", err)
		}
	}
	ex, err := link.OpenExecutable(libc)
	if err != nil {
		return fmt.Errorf("--native-heap: opening %s: %w", libc, err)
	}
	opts := &link.UprobeMultiOptions{PID: uint32(pid)}
	for _, p := range []struct {
		syms []string
		ret  bool
		prog *ebpf.Program
	}{
		{[]string{"malloc"}, false, t.objs.OnMalloc},
		{[]string{"calloc"}, false, t.objs.OnCalloc},
		{[]string{"realloc"}, false, t.objs.OnRealloc},
		{[]string{"free"}, false, t.objs.OnFree},
		{[]string{"malloc", "calloc", "realloc"}, true, t.objs.OnAbAllocateRet},
	} {
		var l link.Link
		if p.ret {
			l, err = ex.UretprobeMulti(p.syms, p.prog, opts)
		} else {
			l, err = ex.UprobeMulti(p.syms, p.prog, opts)
		}
		if err != nil {
			if errors.Is(err, link.ErrNoSymbol) {
				return fmt.Errorf("--native-heap: %s does not export %s: it works with the C library's malloc (glibc, musl); run without --native-heap", libc, strings.Join(p.syms, ", "))
			}
			return fmt.Errorf("--native-heap: attaching to %s: %w", libc, err)
		}
		t.links = append(t.links, l)
	}
	return nil
}

// MappedLibc is the C library process pid maps (procfs.IsLibc: glibc's
// libc.so.6 or musl's ld-musl), as a path memdiag can open: through
// /proc/PID/root, so a container's own library is the one probed.
func MappedLibc(pid int) (string, error) {
	maps, err := procfs.ReadMaps(pid)
	if err != nil {
		return "", err
	}
	for _, m := range maps {
		if strings.HasPrefix(m.Path, "/") && procfs.IsLibc(m.Path) {
			return fmt.Sprintf("/proc/%d/root%s", pid, m.Path), nil
		}
	}
	return "", fmt.Errorf("process %d maps no C library (a static binary, or its own allocator): the native heap mode probes libc's malloc", pid)
}
