package record

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"time"

	"github.com/memdiag/memdiag/event"
)

// noTime encodes the zero time.Time (which has no Unix nanoseconds).
const noTime = math.MinInt64

// Field counts written for the extensible groups (doc.go: "counters",
// "stats"). A reader takes what it knows of a longer group and skips the
// rest.
const (
	countersFields = 16
	statsFields    = 13
)

// Address families of an encoded netip.AddrPort.
const (
	famNone byte = 0
	famIPv4 byte = 4
	famIPv6 byte = 6
)

// OpBegin, OpEnd and Exit flag bits.
const (
	beginHTTP      = 1 << 0
	beginTruncated = 1 << 1
	beginH2        = 1 << 2 // an HTTP/2 stream
	beginGRPC      = 1 << 3 // a gRPC call
	beginWS        = 1 << 4 // a WebSocket message
	endHasFinal    = 1 << 0
	endFinal       = 1 << 1 // Final's counters follow
	exitGroupDead  = 1 << 0
)

// Snapshot bucket modes.
const (
	bucketFull = 0 // counters follow
	bucketSame = 1 // counters as in the previous snapshot
)

// codecState is what event frames carry from one to the next, kept the same
// way by the writer and the reader: the clock event times are relative to,
// and the buckets of the previous snapshot.
type codecState struct {
	clock int64 // unix nanos of the last event time, 0 before the first
	prev  map[event.BucketKey]event.Counters
	next  map[event.BucketKey]event.Counters // being built for the current snapshot
}

func newCodecState() codecState {
	return codecState{prev: map[event.BucketKey]event.Counters{}, next: map[event.BucketKey]event.Counters{}}
}

// commitSnapshot makes the buckets of the snapshot just coded the
// reference for the next one.
func (s *codecState) commitSnapshot() {
	s.prev, s.next = s.next, s.prev
	clear(s.next)
}

// --- encoding ---------------------------------------------------------------

// encoder appends event payloads. On error the caller restores the state
// it saved (see Writer.Write), so a refused event leaves no trace.
type encoder struct {
	codecState
}

// appendEvent appends ev's payload to b and returns its frame kind.
func (e *encoder) appendEvent(b []byte, ev event.Event) (byte, []byte, error) {
	var err error
	switch ev := ev.(type) {
	case *event.Fork:
		if b, err = e.appendHeader(b, ev.Header); err != nil {
			return 0, b, err
		}
		b = binary.AppendUvarint(b, uint64(ev.Child))
		return kindFork, appendString(b, ev.Comm), nil
	case *event.Exec:
		if b, err = e.appendHeader(b, ev.Header); err != nil {
			return 0, b, err
		}
		return kindExec, appendString(b, ev.Filename), nil
	case *event.Exit:
		if b, err = e.appendHeader(b, ev.Header); err != nil {
			return 0, b, err
		}
		b = binary.AppendVarint(b, int64(ev.ExitCode))
		var flags byte
		if ev.GroupDead {
			flags |= exitGroupDead
		}
		b = append(b, flags)
		return kindExit, appendString(b, ev.Comm), nil
	case *event.OpBegin:
		if b, err = e.appendHeader(b, ev.Header); err != nil {
			return 0, b, err
		}
		b = binary.AppendUvarint(b, ev.OpID)
		b = binary.AppendUvarint(b, uint64(ev.Kind))
		b = binary.AppendVarint(b, int64(ev.FD))
		b = appendAddrPort(b, ev.Dest)
		var flags byte
		if ev.HTTP {
			flags |= beginHTTP
		}
		if ev.Truncated {
			flags |= beginTruncated
		}
		switch ev.Proto {
		case "h2":
			flags |= beginH2
		case "ws":
			flags |= beginWS
		}
		if ev.GRPC {
			flags |= beginGRPC
		}
		b = append(b, flags)
		b = appendString(b, ev.Method)
		b = appendString(b, ev.Path)
		return kindOpBegin, appendString(b, ev.Query), nil
	case *event.OpEnd:
		if b, err = e.appendHeader(b, ev.Header); err != nil {
			return 0, b, err
		}
		b = binary.AppendUvarint(b, ev.OpID)
		b = binary.AppendVarint(b, int64(ev.FD))
		b = binary.AppendUvarint(b, uint64(ev.Reason))
		var flags byte
		if ev.HasFinal {
			flags |= endHasFinal
		}
		if ev.Final != (event.Counters{}) {
			flags |= endFinal
		}
		b = append(b, flags)
		if flags&endFinal != 0 {
			b = appendCounters(b, &ev.Final)
		}
		return kindOpEnd, b, nil
	case *event.TLSSeen:
		b, err = e.appendHeader(b, ev.Header)
		return kindTLSSeen, b, err
	case *event.Snapshot:
		b, err = e.appendSnapshot(b, ev)
		return kindSnapshot, b, err
	case *event.OOM:
		if b, err = e.appendHeader(b, ev.Header); err != nil {
			return 0, b, err
		}
		b = binary.AppendVarint(b, ev.AnonRSS)
		b = binary.AppendVarint(b, ev.FileRSS)
		return kindOOM, binary.AppendVarint(b, ev.ShmemRSS), nil
	case *event.Marker:
		if b, err = e.appendHeader(b, ev.Header); err != nil {
			return 0, b, err
		}
		b = appendString(b, ev.Kind)
		return kindMarker, appendString(b, ev.Label), nil
	case *event.HeapSample:
		if b, err = e.appendHeader(b, ev.Header); err != nil {
			return 0, b, err
		}
		b = binary.AppendUvarint(b, uint64(ev.Runtime))
		b = binary.AppendUvarint(b, ev.Ordinal)
		b = binary.AppendUvarint(b, ev.Addr)
		b = binary.AppendUvarint(b, ev.Size)
		return kindSample, appendKey(b, ev.Owner), nil
	case *event.HeapFree:
		if b, err = e.appendHeader(b, ev.Header); err != nil {
			return 0, b, err
		}
		b = binary.AppendUvarint(b, uint64(ev.Runtime))
		return kindFree, binary.AppendUvarint(b, ev.Addr), nil
	case *event.GCCycle:
		if b, err = e.appendHeader(b, ev.Header); err != nil {
			return 0, b, err
		}
		return kindGC, binary.AppendUvarint(b, uint64(ev.Runtime)), nil
	case *event.HeapLive:
		if b, err = e.appendHeader(b, ev.Header); err != nil {
			return 0, b, err
		}
		if len(ev.Samples) > MaxEntries {
			return 0, b, fmt.Errorf("recording a heap profile of %d samples: more than %d", len(ev.Samples), MaxEntries)
		}
		b = binary.AppendUvarint(b, uint64(ev.Runtime))
		b = binary.AppendUvarint(b, ev.UpTo)
		b = binary.AppendUvarint(b, uint64(len(ev.Samples)))
		var last uint64
		for _, smp := range ev.Samples {
			b = binary.AppendUvarint(b, smp.Ordinal-last) // ordinals ascend: deltas stay small
			b = binary.AppendVarint(b, smp.Bytes)
			last = smp.Ordinal
		}
		return kindLive, binary.AppendVarint(b, ev.HeapUsed), nil
	case *event.Sampling:
		if b, err = e.appendHeader(b, ev.Header); err != nil {
			return 0, b, err
		}
		b = binary.AppendUvarint(b, uint64(ev.Runtime))
		var active byte
		if ev.Active {
			active = 1
		}
		b = append(b, active)
		b = binary.AppendUvarint(b, ev.Interval)
		return kindSampling, appendString(b, ev.Reason), nil
	case nil:
		return 0, b, errors.New("recording a nil event")
	}
	return 0, b, fmt.Errorf("cannot record an event of type %T", ev)
}

func (e *encoder) appendHeader(b []byte, h event.Header) ([]byte, error) {
	b, err := e.appendTime(b, h.Time)
	if err != nil {
		return b, err
	}
	b = binary.AppendUvarint(b, uint64(h.PID))
	return binary.AppendUvarint(b, uint64(h.TID)), nil
}

// appendTime appends t as the difference in nanoseconds from the clock, and
// moves the clock to t.
func (e *encoder) appendTime(b []byte, t time.Time) ([]byte, error) {
	if t.IsZero() {
		return binary.AppendVarint(b, noTime), nil
	}
	ns := t.UnixNano()
	if !time.Unix(0, ns).Equal(t) {
		return b, fmt.Errorf("event time %s cannot be recorded: outside the years 1678 to 2262", t)
	}
	d := int64(uint64(ns) - uint64(e.clock))
	if d == noTime {
		return b, fmt.Errorf("event time %s cannot be recorded: 292 years from the previous event", t)
	}
	e.clock = ns
	return binary.AppendVarint(b, d), nil
}

func (e *encoder) appendSnapshot(b []byte, s *event.Snapshot) ([]byte, error) {
	if n := max(len(s.Buckets), len(s.Freed), len(s.Processes)); n > MaxEntries {
		return b, fmt.Errorf("snapshot of %d buckets, %d freed and %d processes exceeds the limit of recordings (%d each)", len(s.Buckets), len(s.Freed), len(s.Processes), MaxEntries)
	}
	b, err := e.appendTime(b, s.Time)
	if err != nil {
		return b, err
	}
	clear(e.next)
	b = binary.AppendUvarint(b, uint64(len(s.Buckets)))
	for i := range s.Buckets {
		bk := &s.Buckets[i]
		b = appendKey(b, bk.Key)
		if prev, ok := e.prev[bk.Key]; ok && prev == bk.Counters {
			b = append(b, bucketSame)
		} else {
			b = append(b, bucketFull)
			b = appendCounters(b, &bk.Counters)
		}
		e.next[bk.Key] = bk.Counters
	}
	b = binary.AppendUvarint(b, uint64(len(s.Freed)))
	for i := range s.Freed {
		b = appendKey(b, s.Freed[i].Key)
		b = appendCounters(b, &s.Freed[i].Counters)
	}
	b = binary.AppendUvarint(b, uint64(len(s.Processes)))
	for _, p := range s.Processes {
		b = binary.AppendUvarint(b, uint64(p.PID))
		b = binary.AppendVarint(b, p.Current)
		b = binary.AppendVarint(b, p.Peak)
		b = binary.AppendVarint(b, p.ArrayBuffers)
	}
	b = binary.AppendVarint(b, s.Total)
	b = binary.AppendVarint(b, s.Peak)
	st := &s.Stats
	b = binary.AppendUvarint(b, statsFields)
	for _, v := range [statsFields]uint64{
		st.LostEvents, st.DecodeErrors, st.BucketOverflow, st.MMOverflow, st.TargetOverflow,
		st.PendingOverflow, st.SocketOverflow, st.ThreadOverflow, st.RegionOverflow,
		st.OutstandingOverflow, st.UnmapSplit, st.FramesLost, st.Records,
	} {
		b = binary.AppendUvarint(b, v)
	}
	return b, nil
}

func appendKey(b []byte, k event.BucketKey) []byte {
	b = binary.AppendUvarint(b, uint64(k.PID))
	b = binary.AppendUvarint(b, uint64(k.Kind))
	return binary.AppendUvarint(b, k.ID)
}

func appendCounters(b []byte, c *event.Counters) []byte {
	b = binary.AppendUvarint(b, countersFields)
	for _, v := range c.RSS {
		b = binary.AppendVarint(b, v)
	}
	for _, v := range [...]uint64{c.Faults, c.Mapped, c.Unmapped, c.MadeWritable, c.AdvisedFree} {
		b = binary.AppendUvarint(b, v)
	}
	for _, v := range [...]int64{c.External, c.Retained, c.RetainedNative} {
		b = binary.AppendVarint(b, v)
	}
	b = binary.AppendUvarint(b, c.ABAlloc)
	b = binary.AppendUvarint(b, c.ABFreed)
	b = binary.AppendUvarint(b, c.Created)
	b = binary.AppendVarint(b, c.RetainedHeap)
	return appendString(b, c.Comm)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendAddrPort appends a family byte, 16 address bytes (IPv4 as
// ::ffff:a.b.c.d, zeros for none), the port big-endian, and for IPv6 the
// zone.
func appendAddrPort(b []byte, ap netip.AddrPort) []byte {
	addr := ap.Addr()
	fam := famNone
	switch {
	case addr.Is4():
		fam = famIPv4
	case addr.Is6():
		fam = famIPv6
	}
	b = append(b, fam)
	var a16 [16]byte
	if fam != famNone {
		a16 = addr.As16()
	}
	b = append(b, a16[:]...)
	b = binary.BigEndian.AppendUint16(b, ap.Port())
	if fam == famIPv6 {
		b = appendString(b, addr.Zone())
	}
	return b
}

// --- decoding ---------------------------------------------------------------

// decoder reads one payload. The first error sticks: later reads return
// zero values, and err says what was wrong.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// u32 reads a uvarint that must fit 32 bits.
func (d *decoder) u32(what string) uint32 {
	v := d.uvarint()
	if v > math.MaxUint32 {
		d.fail("%s %d does not fit 32 bits", what, v)
		return 0
	}
	return uint32(v)
}

// i32 reads a varint that must fit 32 bits.
func (d *decoder) i32(what string) int32 {
	v := d.varint()
	if v < math.MinInt32 || v > math.MaxInt32 {
		d.fail("%s %d does not fit 32 bits", what, v)
		return 0
	}
	return int32(v)
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail("payload ends early")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) bytes(n int) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b) < n {
		d.fail("payload ends early")
		return nil
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) string() string {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail("string of %d bytes in the %d left", n, len(d.b))
		return ""
	}
	return string(d.bytes(int(n)))
}

// count reads a slice length whose elements take at least min bytes each,
// so a damaged count can never ask for more than the payload holds.
func (d *decoder) count(min int) int {
	n := d.uvarint()
	if n > uint64(len(d.b)/min) {
		d.fail("%d elements cannot fit the %d bytes left", n, len(d.b))
		return 0
	}
	return int(n)
}

// entries reads the length of a snapshot's slice: at most MaxEntries.
func (d *decoder) entries(min int) int {
	n := d.count(min)
	if n > MaxEntries {
		d.fail("%d entries exceed the limit of %d", n, MaxEntries)
		return 0
	}
	return n
}

// eventDecoder turns payloads back into events, keeping the codec state.
type eventDecoder struct {
	codecState
}

// decode decodes the payload of an event frame of kind.
func (e *eventDecoder) decode(kind byte, payload []byte) (event.Event, error) {
	d := &decoder{b: payload}
	var ev event.Event
	switch kind {
	case kindFork:
		f := &event.Fork{Header: e.header(d)}
		f.Child = d.u32("child")
		f.Comm = d.string()
		ev = f
	case kindExec:
		x := &event.Exec{Header: e.header(d)}
		x.Filename = d.string()
		ev = x
	case kindExit:
		x := &event.Exit{Header: e.header(d)}
		x.ExitCode = d.i32("exit code")
		x.GroupDead = d.byte()&exitGroupDead != 0
		x.Comm = d.string()
		ev = x
	case kindOpBegin:
		o := &event.OpBegin{Header: e.header(d)}
		o.OpID = d.uvarint()
		o.Kind = event.OpKind(d.u32("op kind"))
		o.FD = d.i32("fd")
		o.Dest = addrPort(d)
		flags := d.byte()
		o.HTTP, o.Truncated, o.GRPC = flags&beginHTTP != 0, flags&beginTruncated != 0, flags&beginGRPC != 0
		switch {
		case flags&beginH2 != 0:
			o.Proto = "h2"
		case flags&beginWS != 0:
			o.Proto = "ws"
		}
		o.Method = d.string()
		o.Path = d.string()
		o.Query = d.string()
		ev = o
	case kindOpEnd:
		o := &event.OpEnd{Header: e.header(d)}
		o.OpID = d.uvarint()
		o.FD = d.i32("fd")
		o.Reason = event.OpEndReason(d.u32("reason"))
		flags := d.byte()
		o.HasFinal = flags&endHasFinal != 0
		if flags&endFinal != 0 {
			counters(d, &o.Final)
		}
		ev = o
	case kindTLSSeen:
		ev = &event.TLSSeen{Header: e.header(d)}
	case kindSnapshot:
		ev = e.snapshot(d)
	case kindOOM:
		o := &event.OOM{Header: e.header(d)}
		o.AnonRSS, o.FileRSS, o.ShmemRSS = d.varint(), d.varint(), d.varint()
		ev = o
	case kindMarker:
		m := &event.Marker{Header: e.header(d)}
		m.Kind, m.Label = d.string(), d.string()
		ev = m
	case kindSample:
		x := &event.HeapSample{Header: e.header(d)}
		x.Runtime = event.Runtime(d.u32("runtime"))
		x.Ordinal, x.Addr, x.Size = d.uvarint(), d.uvarint(), d.uvarint()
		x.Owner = key(d)
		ev = x
	case kindFree:
		x := &event.HeapFree{Header: e.header(d)}
		x.Runtime = event.Runtime(d.u32("runtime"))
		x.Addr = d.uvarint()
		ev = x
	case kindGC:
		ev = &event.GCCycle{Header: e.header(d), Runtime: event.Runtime(d.u32("runtime"))}
	case kindLive:
		x := &event.HeapLive{Header: e.header(d)}
		x.Runtime = event.Runtime(d.u32("runtime"))
		x.UpTo = d.uvarint()
		// A sample takes at least 2 bytes: two one-byte varints.
		if n := d.entries(2); n > 0 {
			x.Samples = make([]event.LiveSample, n)
			var last uint64
			for i := range x.Samples {
				last += d.uvarint()
				x.Samples[i] = event.LiveSample{Ordinal: last, Bytes: d.varint()}
			}
		}
		x.HeapUsed = d.varint()
		ev = x
	case kindSampling:
		x := &event.Sampling{Header: e.header(d)}
		x.Runtime = event.Runtime(d.u32("runtime"))
		x.Active = d.byte() != 0
		x.Interval = d.uvarint()
		x.Reason = d.string()
		ev = x
	default:
		return nil, fmt.Errorf("frame kind %#x is not an event", kind)
	}
	if d.err != nil {
		return nil, fmt.Errorf("%s frame: %w", kindName(kind), d.err)
	}
	if kind == kindSnapshot {
		e.commitSnapshot()
	}
	return ev, nil
}

func (e *eventDecoder) header(d *decoder) event.Header {
	return event.Header{Time: e.time(d), PID: d.u32("pid"), TID: d.u32("tid")}
}

func (e *eventDecoder) time(d *decoder) time.Time {
	v := d.varint()
	if d.err != nil || v == noTime {
		return time.Time{}
	}
	e.clock = int64(uint64(e.clock) + uint64(v))
	return time.Unix(0, e.clock).UTC()
}

func (e *eventDecoder) snapshot(d *decoder) *event.Snapshot {
	s := &event.Snapshot{Time: e.time(d)}
	clear(e.next)
	// A bucket takes at least 4 bytes: a key of 3 one-byte varints and its mode.
	if n := d.entries(4); n > 0 {
		s.Buckets = make([]event.Bucket, n)
		for i := range s.Buckets {
			bk := &s.Buckets[i]
			bk.Key = key(d)
			switch mode := d.byte(); mode {
			case bucketFull:
				counters(d, &bk.Counters)
			case bucketSame:
				prev, ok := e.prev[bk.Key]
				if !ok && d.err == nil {
					d.fail("bucket %d/%d/%d refers to a previous snapshot that lacks it", bk.Key.PID, bk.Key.Kind, bk.Key.ID)
				}
				bk.Counters = prev
			default:
				d.fail("unknown bucket mode %d", mode)
			}
			if d.err != nil {
				return nil
			}
			e.next[bk.Key] = bk.Counters
		}
	}
	// A freed bucket takes at least 5 bytes: a key and empty counters.
	if n := d.entries(5); n > 0 {
		s.Freed = make([]event.Bucket, n)
		for i := range s.Freed {
			s.Freed[i].Key = key(d)
			counters(d, &s.Freed[i].Counters)
		}
	}
	if n := d.entries(4); n > 0 {
		s.Processes = make([]event.ProcessMemory, n)
		for i := range s.Processes {
			p := &s.Processes[i]
			p.PID = d.u32("pid")
			p.Current = d.varint()
			p.Peak = d.varint()
			p.ArrayBuffers = d.varint()
		}
	}
	s.Total = d.varint()
	s.Peak = d.varint()
	st := &s.Stats
	dst := [statsFields]*uint64{
		&st.LostEvents, &st.DecodeErrors, &st.BucketOverflow, &st.MMOverflow, &st.TargetOverflow,
		&st.PendingOverflow, &st.SocketOverflow, &st.ThreadOverflow, &st.RegionOverflow,
		&st.OutstandingOverflow, &st.UnmapSplit, &st.FramesLost, &st.Records,
	}
	n := d.count(1)
	for i := range n {
		v := d.uvarint()
		if i < statsFields {
			*dst[i] = v
		}
	}
	return s
}

func key(d *decoder) event.BucketKey {
	return event.BucketKey{PID: d.u32("pid"), Kind: event.BucketKind(d.u32("bucket kind")), ID: d.uvarint()}
}

func counters(d *decoder, c *event.Counters) {
	signed := [...]*int64{0: &c.RSS[0], 1: &c.RSS[1], 2: &c.RSS[2], 3: &c.RSS[3], 9: &c.External, 10: &c.Retained, 11: &c.RetainedNative, 15: &c.RetainedHeap}
	unsigned := [...]*uint64{4: &c.Faults, 5: &c.Mapped, 6: &c.Unmapped, 7: &c.MadeWritable, 8: &c.AdvisedFree, 12: &c.ABAlloc, 13: &c.ABFreed, 14: &c.Created}
	n := d.count(1)
	for i := range n {
		switch {
		case i < len(signed) && signed[i] != nil:
			*signed[i] = d.varint()
		case i < len(unsigned) && unsigned[i] != nil:
			*unsigned[i] = d.uvarint()
		default:
			d.uvarint() // a field added after this reader: skipped
		}
	}
	c.Comm = d.string()
}

func addrPort(d *decoder) netip.AddrPort {
	fam := d.byte()
	a := d.bytes(16)
	var port uint16
	if p := d.bytes(2); p != nil {
		port = binary.BigEndian.Uint16(p)
	}
	if d.err != nil {
		return netip.AddrPort{}
	}
	var addr netip.Addr
	switch fam {
	case famNone:
	case famIPv4:
		addr = netip.AddrFrom4([4]byte(a[12:16]))
	case famIPv6:
		addr = netip.AddrFrom16([16]byte(a))
		if zone := d.string(); zone != "" {
			addr = addr.WithZone(zone)
		}
	default:
		d.fail("unknown address family %d", fam)
	}
	return netip.AddrPortFrom(addr, port)
}

// kindName names a frame kind in errors.
func kindName(kind byte) string {
	switch kind {
	case kindHeader:
		return "header"
	case kindTrailer:
		return "trailer"
	case kindFork:
		return "fork"
	case kindExec:
		return "exec"
	case kindExit:
		return "exit"
	case kindOpBegin:
		return "op-begin"
	case kindOpEnd:
		return "op-end"
	case kindTLSSeen:
		return "tls-seen"
	case kindSnapshot:
		return "snapshot"
	case kindOOM:
		return "oom"
	case kindMarker:
		return "marker"
	case kindSample:
		return "heap-sample"
	case kindFree:
		return "heap-free"
	case kindGC:
		return "gc-cycle"
	case kindLive:
		return "heap-live"
	case kindSampling:
		return "sampling"
	}
	return fmt.Sprintf("kind %#x", kind)
}
