package tracer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/memdiag/memdiag/event"
	"github.com/memdiag/memdiag/httpreq"
)

// Sentinel errors of Decode.
var (
	ErrShort       = errors.New("record shorter than its layout")
	ErrUnknownKind = errors.New("unknown record kind")
	ErrBadSize     = errors.New("record size field disagrees with its length")
)

// Record kinds: the kernel's enum event_kind, as bpf2go generates it.
const (
	kindFork    = uint32(memdiagEventKindEV_FORK)
	kindExec    = uint32(memdiagEventKindEV_EXEC)
	kindExit    = uint32(memdiagEventKindEV_EXIT)
	kindOpBegin = uint32(memdiagEventKindEV_OP_BEGIN)
	kindOpEnd   = uint32(memdiagEventKindEV_OP_END)
	kindTLSSeen = uint32(memdiagEventKindEV_TLS_SEEN)
	kindOOM     = uint32(memdiagEventKindEV_OOM)
	kindSample  = uint32(memdiagEventKindEV_HEAP_SAMPLE)
	kindFree    = uint32(memdiagEventKindEV_HEAP_FREE)
	kindGC      = uint32(memdiagEventKindEV_GC_CYCLE)
	kindOpData  = uint32(memdiagEventKindEV_OP_DATA)
	kindOpPair  = uint32(memdiagEventKindEV_OP_PAIR)
)

// Op kinds of the kernel beyond event.OpKind's: served requests all.
const (
	opPipelined = uint32(memdiagOpKindOP_HTTP_PIPELINED)
	opH2Stream  = uint32(memdiagOpKindOP_H2STREAM)
	opWSMessage = uint32(memdiagOpKindOP_WS_MESSAGE)
)

// Sizes of the kernel's records, from their Go mirrors.
var (
	hdrSize   = binary.Size(memdiagEventHdr{})
	forkSize  = binary.Size(memdiagForkEvent{})
	execSize  = binary.Size(memdiagExecEvent{})
	exitSize  = binary.Size(memdiagExitEvent{})
	beginSize = binary.Size(memdiagOpBeginEvent{})
	endSize   = binary.Size(memdiagOpEndEvent{})
	oomSize   = binary.Size(memdiagOomEvent{})
	smplSize  = binary.Size(memdiagHeapSampleEvent{})
	noteSize  = binary.Size(memdiagHeapNoteEvent{})
	dataSize  = binary.Size(memdiagOpDataEvent{})
)

// Clock turns the kernel's CLOCK_MONOTONIC nanoseconds into wall time.
type Clock struct {
	offset int64 // unix ns - monotonic ns
}

// NewClock returns a Clock anchored at now.
func NewClock(monoNow time.Duration, wallNow time.Time) Clock {
	return Clock{offset: wallNow.UnixNano() - int64(monoNow)}
}

// Wall returns the wall time of a monotonic timestamp.
func (c Clock) Wall(ktimeNs uint64) time.Time {
	return time.Unix(0, int64(ktimeNs)+c.offset)
}

// Decode turns one ring buffer record into an event, redacting query
// values; op begins and ends come from event's pools (event.Recycle). Ops
// that need a connection's earlier bytes to be named (pipelined requests,
// HTTP/2 streams) are named by the tracer, which keeps that state; alone,
// Decode leaves them unnamed. A record that only feeds that state
// (EV_OP_DATA) decodes to nil. An EV_OP_PAIR record is two: the tracer
// splits it (pairParts) before decoding.
func Decode(raw []byte, clock Clock) (event.Event, error) {
	return decode(raw, clock, httpreq.Options{}, nil, nil)
}

// decode is Decode with conns, the naming state of served connections
// (nil: none kept), taking op begins and ends from the spares of the batch
// the event goes in (nil: from event's pools).
func decode(raw []byte, clock Clock, opts httpreq.Options, conns *httpreq.Conns, into *event.Batch) (event.Event, error) {
	if len(raw) < hdrSize {
		return nil, fmt.Errorf("decoding header of %d bytes: %w", len(raw), ErrShort)
	}
	var h memdiagEventHdr
	if err := decodeFixed(raw, &h, "header"); err != nil {
		return nil, err
	}
	if int(h.Size) > len(raw) || int(h.Size) < hdrSize {
		return nil, fmt.Errorf("record says %d bytes, has %d: %w", h.Size, len(raw), ErrBadSize)
	}
	raw = raw[:h.Size]
	hdr := event.Header{Time: clock.Wall(h.KtimeNs), PID: h.Pid, TID: h.Tid}
	switch h.Kind {
	case kindFork:
		var e memdiagForkEvent
		if err := decodeFixed(raw, &e, "fork"); err != nil {
			return nil, err
		}
		return &event.Fork{Header: hdr, Child: e.ChildPid, Comm: cString(e.Comm[:])}, nil
	case kindExec:
		var e memdiagExecEvent
		if err := decodeFixed(raw, &e, "exec"); err != nil {
			return nil, err
		}
		return &event.Exec{Header: hdr, Filename: cString(e.Filename[:])}, nil
	case kindExit:
		var e memdiagExitEvent
		if err := decodeFixed(raw, &e, "exit"); err != nil {
			return nil, err
		}
		if e.GroupDead != 0 && conns != nil {
			conns.Exit(h.Pid)
		}
		return &event.Exit{Header: hdr, ExitCode: e.ExitCode, GroupDead: e.GroupDead != 0, Comm: cString(e.Comm[:])}, nil
	case kindOpBegin:
		var e memdiagOpBeginEvent
		if err := decodeFixed(raw, &e, "op begin"); err != nil {
			return nil, err
		}
		return opBegin(into.NewOpBegin(), hdr, &e, recordData(raw, unsafe.Offsetof(e.Data), e.DataLen, len(e.Data)), opts, conns), nil
	case kindOpEnd:
		var e memdiagOpEndEvent
		if err := decodeFixed(raw, &e, "op end"); err != nil {
			return nil, err
		}
		end := into.NewOpEnd()
		*end = event.OpEnd{Header: hdr, OpID: opSeq(e.OpId), FD: e.Fd, Reason: event.OpEndReason(e.Reason)}
		if end.Reason == event.EndClose && conns != nil {
			conns.Close(httpreq.ConnKey{PID: h.Pid, FD: e.Fd})
		}
		if e.HasFinal != 0 {
			end.HasFinal, end.Final = true, counters(&e.Final)
		}
		return end, nil
	case kindOpData:
		var e memdiagOpDataEvent
		if err := decodeFixed(raw, &e, "op data"); err != nil {
			return nil, err
		}
		if conns != nil {
			opData(h.Pid, &e, recordData(raw, unsafe.Offsetof(e.Data), e.DataLen, len(e.Data)), conns)
		}
		return nil, nil
	case kindTLSSeen:
		return &event.TLSSeen{Header: hdr}, nil
	case kindOOM:
		var e memdiagOomEvent
		if err := decodeFixed(raw, &e, "oom"); err != nil {
			return nil, err
		}
		const kB = 1024 // mark_victim reports kilobytes
		return &event.OOM{Header: hdr, AnonRSS: int64(e.AnonRss) * kB, FileRSS: int64(e.FileRss) * kB, ShmemRSS: int64(e.ShmemRss) * kB}, nil
	case kindSample:
		var e memdiagHeapSampleEvent
		if err := decodeFixed(raw, &e, "heap sample"); err != nil {
			return nil, err
		}
		return &event.HeapSample{Header: hdr, Runtime: event.Runtime(e.Runtime), Ordinal: e.Ordinal, Addr: e.Addr, Size: e.Size,
			Owner: bucketKey(e.Owner.Tgid, e.Owner.Kind, e.Owner.Id)}, nil
	case kindFree, kindGC:
		var e memdiagHeapNoteEvent
		if err := decodeFixed(raw, &e, "heap note"); err != nil {
			return nil, err
		}
		if h.Kind == kindGC {
			return &event.GCCycle{Header: hdr, Runtime: event.Runtime(e.Runtime)}, nil
		}
		return &event.HeapFree{Header: hdr, Runtime: event.Runtime(e.Runtime), Addr: e.Addr}, nil
	}
	return nil, fmt.Errorf("record kind %d: %w", h.Kind, ErrUnknownKind)
}

// pairParts returns the two records an EV_OP_PAIR record carries (an op's
// end, then the begin of the op that ended it; begin is nil when that op
// could not start), and ok false for a record of any other kind. The parts
// are whole records, each decoded on its own.
func pairParts(raw []byte) (end, begin []byte, ok bool) {
	if len(raw) < hdrSize || binary.LittleEndian.Uint32(raw) != kindOpPair {
		return nil, nil, false
	}
	var p memdiagOpPairEvent
	endAt, beginAt := int(unsafe.Offsetof(p.End)), int(unsafe.Offsetof(p.Begin))
	end = raw[min(endAt, len(raw)):min(beginAt, len(raw))]
	if beginAt+hdrSize <= len(raw) && binary.LittleEndian.Uint32(raw[beginAt:]) != 0 {
		begin = raw[beginAt:]
	}
	return end, begin, true
}

// Address families of the kernel's sockaddr.
const (
	afInet  = 2
	afInet6 = 10
)

// recordData returns a record's data bytes, in place in raw: the first
// dataLen (at most capacity) of those at off. A copy in the decoded record
// would do, but handing it to the naming state (which copies what it keeps)
// moved every decoded op begin, 320 bytes, to the heap.
func recordData(raw []byte, off uintptr, dataLen uint32, capacity int) []byte {
	return raw[off : int(off)+min(int(dataLen), capacity)]
}

// opBegin converts an op begin record into ob (a zero one), parsing its
// request line (HTTP/1.x), its HEADERS frame (HTTP/2) or taking the next
// pipelined request of its connection from data, the record's bytes; the
// raw bytes go no further.
func opBegin(ob *event.OpBegin, hdr event.Header, e *memdiagOpBeginEvent, data []byte, opts httpreq.Options, conns *httpreq.Conns) *event.OpBegin {
	*ob = event.OpBegin{Header: hdr, OpID: opSeq(e.OpId), Kind: event.OpKind(e.OpKind), FD: e.Fd}
	key := httpreq.ConnKey{PID: hdr.PID, FD: e.Fd}
	var (
		r   httpreq.Request
		err error
	)
	switch {
	case e.OpKind == opPipelined:
		ob.Kind = event.OpHTTPServer
		if conns == nil {
			return ob
		}
		var ok bool
		if r, ok = conns.Pipelined(key); !ok {
			return ob // a response memdiag knows no request for: unknown
		}
	case e.OpKind == opH2Stream:
		ob.Kind = event.OpHTTPServer
		if conns == nil {
			return ob
		}
		if r, err = conns.Stream(key, data); err != nil {
			return ob
		}
	case e.OpKind == opWSMessage:
		ob.Kind = event.OpHTTPServer
		if conns == nil {
			return ob
		}
		if r, err = conns.Message(key, data); err != nil {
			return ob
		}
	case e.OpKind == uint32(event.OpHTTPServer) && conns != nil:
		if r, err = conns.Begin(key, data); err != nil {
			return ob
		}
	case conns != nil:
		if r, err = conns.Parse(data); err != nil {
			r = httpreq.Request{}
		}
	default:
		if r, err = httpreq.Parse(data, opts); err != nil {
			r = httpreq.Request{}
		}
	}
	if r.Method != "" {
		ob.HTTP, ob.Request = true, r
	}
	switch e.Family {
	case afInet:
		ob.Dest = netip.AddrPortFrom(netip.AddrFrom4([4]byte(e.Addr[:4])), e.Port)
	case afInet6:
		ob.Dest = netip.AddrPortFrom(netip.AddrFrom16(e.Addr).Unmap(), e.Port)
	}
	return ob
}

// opData feeds an EV_OP_DATA record's bytes, data, to its connection's
// naming state.
func opData(pid uint32, e *memdiagOpDataEvent, data []byte, conns *httpreq.Conns) {
	key := httpreq.ConnKey{PID: pid, FD: e.Fd}
	switch e.What {
	case uint32(memdiagOpDataWhatDATA_REST):
		conns.More(key, data)
	case uint32(memdiagOpDataWhatDATA_REQUESTS):
		conns.Requests(key, data)
	case uint32(memdiagOpDataWhatDATA_H2HEADERS):
		conns.Headers(key, data)
	}
}

// decodeFixed copies the first bytes of raw into out, a record layout,
// after checking raw holds them. The layouts are bpf2go's mirrors of the C
// structs (structs.HostLayout, padding spelled out as fields, no pointers),
// and the BPF object is little-endian like the only host it loads on
// (amd64, arch.go), so the record's bytes are out's bytes: a copy. It was
// encoding/binary.Decode, which walks out by reflection and made each
// record escape to the heap: a third of memdiag's CPU at 100k records/s
// (BENCHMARKS.md, "Record storms"). TestRecordLayoutsCopyable checks every
// layout's size against binary.Size.
func decodeFixed[T any](raw []byte, out *T, what string) error {
	size := int(unsafe.Sizeof(*out))
	if len(raw) < size {
		return fmt.Errorf("decoding %s record of %d bytes, want %d: %w", what, len(raw), size, ErrShort)
	}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(out)), size), raw[:size])
	return nil
}

// cString returns the NUL-terminated prefix of a C char array: one
// allocation (none when empty), invalid UTF-8 replaced by '?'.
func cString[T int8 | uint8](b []T) string {
	n := 0
	for n < len(b) && b[n] != 0 {
		n++
	}
	if n == 0 {
		return ""
	}
	s := unsafe.Slice((*byte)(unsafe.Pointer(&b[0])), n)
	if utf8.Valid(s) {
		return string(s)
	}
	return string(bytes.ToValidUTF8(s, []byte("?")))
}

// counters converts the kernel's counters to event.Counters.
func counters(c *memdiagCounters) event.Counters {
	return event.Counters{
		RSS:            c.Rss,
		Faults:         c.Faults,
		Mapped:         c.Mapped,
		Unmapped:       c.Unmapped,
		MadeWritable:   c.MadeWritable,
		AdvisedFree:    c.AdvisedFree,
		External:       c.External,
		Retained:       c.Retained,
		RetainedNative: c.RetainedNative,
		RetainedHeap:   c.RetainedHeap,
		ABAlloc:        c.AbAlloc,
		ABFreed:        c.AbFreed,
		Created:        c.FirstNs,
		Comm:           cString(c.Comm[:]),
	}
}

// execCgroup reads the cgroup id of an exec record that decoded.
func execCgroup(raw []byte) uint64 {
	off := int(unsafe.Offsetof(memdiagExecEvent{}.CgroupId))
	if len(raw) < off+8 {
		return 0
	}
	return binary.LittleEndian.Uint64(raw[off:])
}
