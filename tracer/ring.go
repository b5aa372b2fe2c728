package tracer

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// ring reads the events ring buffer in place, for the reader goroutine.
// cilium/ebpf's ringbuf.Reader copies each record out under a mutex and
// publishes the consumer position after each (a cache line the kernel's
// producer reads on every reservation): 10% of memdiag's CPU in a record
// storm. This one hands the records in place to its caller and publishes
// the position once for all it read. The mapping is the kernel's
// (kernel/bpf/ringbuf.c): the consumer page (the position, read-write),
// then the producer page (its position) and the data pages. The kernel
// offers the data twice in a row, so that a record that wraps around the
// end reads whole; this maps it once (a second mapping of the same pages
// was 1 MiB more of memdiag's resident memory with the default ring) and
// joins the rare record that wraps in a buffer of its own.
//
// The reader waits for the kernel's wakeup in Go's network poller, not in
// an epoll_wait of its own: a goroutine parked there holds no thread, so
// the session's loop runs on the same one, where a blocking wait made the
// runtime hand the processor to another thread and back at every wakeup.
type ring struct {
	cons []byte // the consumer page
	prod []byte // the producer page and the data pages
	data []byte // prod past its first page
	mask uint64 // the data's size - 1
	wrap []byte // a record that wraps around the data's end, joined

	file *os.File        // a duplicate of the map's fd, in the poller
	conn syscall.RawConn // file's

	mu       sync.Mutex // the deadline, and:
	flushing bool       // Flush was called
	closing  bool       // Interrupt was called
}

// Bits of a record's length word, struct bpf_ringbuf_hdr in
// include/uapi/linux/bpf.h (BPF_RINGBUF_BUSY_BIT, BPF_RINGBUF_DISCARD_BIT).
const (
	ringBusy    = 1 << 31 // reserved, not submitted yet
	ringDiscard = 1 << 30 // discarded: skipped
	ringHdrSize = 8
)

// errRingCorrupt says the positions and a record's length disagree.
var errRingCorrupt = errors.New("a ring buffer record runs past the producer position")

// newRing maps m, a BPF_MAP_TYPE_RINGBUF map.
func newRing(m *ebpf.Map) (_ *ring, err error) {
	size := int(m.MaxEntries())
	page := os.Getpagesize()
	r := &ring{mask: uint64(size - 1)}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	if r.cons, err = unix.Mmap(m.FD(), 0, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		return nil, fmt.Errorf("mapping the ring buffer's consumer page: %w", err)
	}
	if r.prod, err = unix.Mmap(m.FD(), int64(page), page+size, unix.PROT_READ, unix.MAP_SHARED); err != nil {
		return nil, fmt.Errorf("mapping the ring buffer's data: %w", err)
	}
	r.data = r.prod[page:]
	// A non-blocking fd: os.NewFile puts it in the poller.
	fd, err := unix.FcntlInt(uintptr(m.FD()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("duplicating the ring buffer's fd: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("setting the ring buffer's fd non-blocking: %w", err)
	}
	r.file = os.NewFile(uintptr(fd), "ringbuf")
	if r.conn, err = r.file.SyscallConn(); err != nil {
		return nil, fmt.Errorf("polling the ring buffer: %w", err)
	}
	// A deadline fails on a file the poller did not take.
	if err := r.file.SetReadDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("polling the ring buffer: %w", err)
	}
	return r, nil
}

func (r *ring) consPos() *uint64 { return (*uint64)(unsafe.Pointer(&r.cons[0])) }
func (r *ring) prodPos() *uint64 { return (*uint64)(unsafe.Pointer(&r.prod[0])) }

// read hands f each submitted record from the consumer position on, in
// order and in place (the bytes are the kernel's again once read returns),
// at most max of them, then publishes the new position. It stops at a
// record reserved but not submitted yet (busy: read again soon). On a
// corrupt ring it drops everything written and says so.
func (r *ring) read(max int, f func([]byte)) (n int, busy bool, err error) {
	start := atomic.LoadUint64(r.consPos())
	prod := atomic.LoadUint64(r.prodPos())
	cons := start
	for cons < prod && n < max {
		// The length word is the kernel's xchg: loaded atomically, the
		// record's bytes it covers are visible once it is not busy.
		word := atomic.LoadUint32((*uint32)(unsafe.Pointer(&r.data[cons&r.mask])))
		if word&ringBusy != 0 {
			busy = true
			break
		}
		size := uint64(word &^ (ringBusy | ringDiscard))
		next := cons + ringHdrSize + (size+7)&^7
		if next > prod || size > r.mask {
			atomic.StoreUint64(r.consPos(), prod)
			return n, false, errRingCorrupt
		}
		if word&ringDiscard == 0 {
			f(r.record(cons&r.mask+ringHdrSize, size))
			n++
		}
		cons = next
	}
	if cons != start {
		atomic.StoreUint64(r.consPos(), cons)
	}
	return n, busy, nil
}

// record returns the size bytes at offset at of the data (past the data's
// end, continued from its start): in place, or joined in r.wrap when they
// wrap around. (A header never wraps: records are 8-byte aligned.)
func (r *ring) record(at, size uint64) []byte {
	at &= r.mask // a header in the data's last 8 bytes: the record starts at 0
	if at+size <= uint64(len(r.data)) {
		return r.data[at : at+size : at+size]
	}
	if uint64(cap(r.wrap)) < size {
		r.wrap = make([]byte, size)
	}
	w := r.wrap[:size:size]
	n := copy(w, r.data[at:])
	copy(w[n:], r.data)
	return w
}

// wait blocks until the kernel wakes the reader (records), timeout passes
// (none: timedOut), Flush was called (flushed) or Interrupt (closed).
func (r *ring) wait(timeout time.Duration) (timedOut, flushed, closed bool, err error) {
	r.mu.Lock()
	flushed, closed = r.flushing, r.closing
	if !flushed && !closed {
		err = r.file.SetReadDeadline(time.Now().Add(timeout))
	}
	r.mu.Unlock()
	if flushed || closed || err != nil {
		return false, flushed, closed, err
	}
	err = r.conn.Read(func(uintptr) bool {
		return atomic.LoadUint64(r.prodPos()) != atomic.LoadUint64(r.consPos())
	})
	r.mu.Lock()
	flushed, closed = r.flushing, r.closing
	r.mu.Unlock()
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return !flushed && !closed, flushed, closed, nil
	}
	if err != nil {
		return false, flushed, closed, fmt.Errorf("waiting for the ring buffer: %w", err)
	}
	return false, flushed, closed, nil
}

// stop sets what *flag says and ends the reader's wait.
func (r *ring) stop(flag *bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	*flag = true
	return r.file.SetReadDeadline(time.Unix(1, 0))
}

// Flush makes the reader read what is left and stop.
func (r *ring) Flush() error { return r.stop(&r.flushing) }

// Interrupt makes the reader stop at once.
func (r *ring) Interrupt() error { return r.stop(&r.closing) }

// close unmaps the ring and closes its fds, once the reader has stopped.
func (r *ring) close() error {
	var errs []error
	for _, m := range [][]byte{r.prod, r.cons} {
		if m != nil {
			errs = append(errs, unix.Munmap(m))
		}
	}
	r.prod, r.cons, r.data = nil, nil, nil
	if r.file != nil {
		errs = append(errs, r.file.Close())
		r.file = nil
	}
	return errors.Join(errs...)
}
