package main

import (
	"errors"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Another memdiag running on the machine (a developer's test, say) has its
// BPF programs on the same global tracepoints: every page fault of every
// process, the benchmark's "untraced" runs included, runs them. A pair run
// while one was loaded measures something else, so the benchmark looks for
// memdiag's programs before and after each run. It asks the kernel directly
// (bpf(2)), since a tracer may live in any process, a test binary included.

// bpf(2) commands, from enum bpf_cmd in linux/bpf.h.
const (
	bpfProgGetNextID   = 11
	bpfProgGetFDByID   = 13
	bpfObjGetInfoByFD  = 15
	progInfoNameOffset = 64 // offsetof(struct bpf_prog_info, name)
	progInfoLen        = progInfoNameOffset + unix.BPF_OBJ_NAME_LEN
)

// tracerProgName is the name of memdiag's program on kmem/rss_stat: one per
// memdiag loaded.
const tracerProgName = "on_rss_stat"

func bpf(cmd int, attr unsafe.Pointer, size uintptr) (uintptr, error) {
	r, _, errno := unix.Syscall(unix.SYS_BPF, uintptr(cmd), uintptr(attr), size)
	if errno != 0 {
		return 0, errno
	}
	return r, nil
}

// loadedTracers returns how many memdiag instances have their programs
// loaded in the kernel right now.
func loadedTracers() (int, error) {
	n := 0
	var id uint32
	for {
		next := struct{ start, next, flags uint32 }{start: id}
		if _, err := bpf(bpfProgGetNextID, unsafe.Pointer(&next), unsafe.Sizeof(next)); err != nil {
			if errors.Is(err, unix.ENOENT) {
				return n, nil
			}
			return 0, err
		}
		id = next.next
		name, err := progName(id)
		if errors.Is(err, unix.ENOENT) {
			continue // unloaded since
		}
		if err != nil {
			return 0, err
		}
		if name == tracerProgName {
			n++
		}
	}
}

// progName returns the name of the BPF program with the given id.
func progName(id uint32) (string, error) {
	byID := struct{ id, next, flags uint32 }{id: id}
	fd, err := bpf(bpfProgGetFDByID, unsafe.Pointer(&byID), unsafe.Sizeof(byID))
	if err != nil {
		return "", err
	}
	defer unix.Close(int(fd))
	var info [progInfoLen]byte
	get := struct {
		fd, infoLen uint32
		info        unsafe.Pointer // a __u64 address; a Go pointer, so stack moves update it
	}{fd: uint32(fd), infoLen: progInfoLen, info: unsafe.Pointer(&info)}
	if _, err := bpf(bpfObjGetInfoByFD, unsafe.Pointer(&get), unsafe.Sizeof(get)); err != nil {
		return "", err
	}
	return unix.ByteSliceToString(info[progInfoNameOffset:]), nil
}

// unloadGrace is how long a memdiag that exited may still have its
// programs listed: it exits as soon as its links are closed (raw
// tracepoints detach at once), and the kernel frees the programs after an
// RCU grace period.
const unloadGrace = 2 * time.Second

// awaitUnloaded waits, up to grace, until no memdiag program is listed,
// so the benchmark's own last memdiag is not taken for another's.
func awaitUnloaded(grace time.Duration) {
	for end := time.Now().Add(grace); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if n, err := loadedTracers(); err != nil || n == 0 {
			return
		}
	}
}
