package tracer

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/memdiag/memdiag/event"
	"github.com/memdiag/memdiag/httpreq"
)

// C layout sizes of the records TestLayoutSizes does not cover, by hand
// from bpf/memdiag.h.
const (
	cOpBeginSize = cHdrSize + 8 + 4 + 4 + 2 + 2 + 4 + 16 + 256  // hdr, op_id, op_kind, fd, family, port, data_len, addr, data = 320
	cOpEndSize   = cHdrSize + 8 + 4 + 4 + 4 + 4 + cCountersSize // hdr, op_id, fd, reason, has_final, _pad, final = 192
	cOOMSize     = cHdrSize + 4*8                               // hdr, anon_rss, file_rss, shmem_rss, total_vm = 56
	cTLSSize     = cHdrSize                                     // the header alone
)

// kernelOpID is the kernel's id of the op userspace knows as seq: seq
// and a slot (opSeq takes the slot off).
func kernelOpID(seq uint64) uint64 { return seq<<opSlotBits | seq%64 }

// opBeginBytes lays out an op_begin_event: the socket's first bytes in
// data, the destination in family/port/addr.
func opBeginBytes(ktime uint64, pid, tid uint32, opID uint64, kind uint32, fd int32, family, port uint16, addr [16]byte, data string) []byte {
	b := hdrBytes(kindOpBegin, cOpBeginSize, ktime, pid, tid)
	b = binary.LittleEndian.AppendUint64(b, kernelOpID(opID))
	b = binary.LittleEndian.AppendUint32(b, kind)
	b = binary.LittleEndian.AppendUint32(b, uint32(fd))
	b = binary.LittleEndian.AppendUint16(b, family)
	b = binary.LittleEndian.AppendUint16(b, port)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(data)))
	b = append(b, addr[:]...)
	return append(b, cChars(data, 256)...)
}

// countersBytes lays out a struct counters with every field set from seed.
func countersBytes(seed int64, comm string) []byte {
	var b []byte
	for i := range 4 {
		b = binary.LittleEndian.AppendUint64(b, uint64(seed*int64(i+1)-3*seed)) // some negative
	}
	for i := range 13 {
		b = binary.LittleEndian.AppendUint64(b, uint64(seed+int64(i)))
	}
	return append(b, cChars(comm, 16)...)
}

// opEndBytes lays out an op_end_event.
func opEndBytes(ktime uint64, pid, tid uint32, opID uint64, fd int32, reason uint32, final []byte) []byte {
	b := hdrBytes(kindOpEnd, cOpEndSize, ktime, pid, tid)
	b = binary.LittleEndian.AppendUint64(b, kernelOpID(opID))
	b = binary.LittleEndian.AppendUint32(b, uint32(fd))
	b = binary.LittleEndian.AppendUint32(b, reason)
	hasFinal := uint32(0)
	if final != nil {
		hasFinal = 1
	} else {
		final = make([]byte, cCountersSize)
	}
	b = binary.LittleEndian.AppendUint32(b, hasFinal)
	b = binary.LittleEndian.AppendUint32(b, 0) // _pad
	return append(b, final...)
}

// oomBytes lays out an oom_event (kilobytes, as mark_victim gives them).
func oomBytes(ktime uint64, pid uint32, anonKB, fileKB, shmemKB, totalVMKB uint64) []byte {
	b := hdrBytes(kindOOM, cOOMSize, ktime, pid, pid)
	for _, v := range []uint64{anonKB, fileKB, shmemKB, totalVMKB} {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	return b
}

func v4(a, b, c, d byte) [16]byte { return [16]byte{a, b, c, d} }

// TestDecodeEveryKind decodes hand-built bytes of each record kind the
// kernel sends, the op records with their socket bytes and counters.
func TestDecodeEveryKind(t *testing.T) {
	var wantFinal event.Counters
	wantFinal.RSS = [4]int64{-2 * 1000, -1 * 1000, 0, 1000}
	for i, p := range []*uint64{&wantFinal.Faults, &wantFinal.Mapped, &wantFinal.Unmapped, &wantFinal.MadeWritable, &wantFinal.AdvisedFree} {
		*p = uint64(1000 + i)
	}
	wantFinal.External, wantFinal.Retained, wantFinal.RetainedNative, wantFinal.RetainedHeap = 1005, 1006, 1007, 1008
	wantFinal.ABAlloc, wantFinal.ABFreed, wantFinal.Created = 1009, 1010, 1011
	wantFinal.Comm = "worker"
	v6 := netip.MustParseAddr("2001:db8::7").As16()
	mapped := netip.MustParseAddr("::ffff:10.0.0.5").As16()

	tests := []struct {
		name string
		raw  []byte
		want event.Event
	}{
		{"fork", forkBytes(1e9, 100, 101, 102, "worker"),
			&event.Fork{Header: hdr(1e9, 100, 101), Child: 102, Comm: "worker"}},
		{"exec", execBytes(2e9, 100, 100, "/usr/bin/node"),
			&event.Exec{Header: hdr(2e9, 100, 100), Filename: "/usr/bin/node"}},
		{"exit", exitBytes(3e9, 100, 100, 9, 1, "node"),
			&event.Exit{Header: hdr(3e9, 100, 100), ExitCode: 9, GroupDead: true, Comm: "node"}},
		{"op begin, served HTTP request (query redacted)",
			opBeginBytes(4e9, 100, 100, 7, uint32(event.OpHTTPServer), 23, 0, 0, [16]byte{}, "GET /api/records/42?limit=5&token=s3cret HTTP/1.1\r\nHost: x\r\n"),
			&event.OpBegin{Header: hdr(4e9, 100, 100), OpID: 7, Kind: event.OpHTTPServer, FD: 23, HTTP: true, Request: event.Request{Method: "GET", Path: "/api/records/42", Query: "limit=…&token=…"}}},
		{"op begin, outbound IPv4 HTTP call",
			opBeginBytes(5e9, 100, 101, 8, uint32(event.OpOutbound), 24, afInet, 9200, v4(10, 0, 0, 5), "POST /_search HTTP/1.1\r\n"),
			&event.OpBegin{Header: hdr(5e9, 100, 101), OpID: 8, Kind: event.OpOutbound, FD: 24, Dest: netip.MustParseAddrPort("10.0.0.5:9200"), HTTP: true, Request: event.Request{Method: "POST", Path: "/_search"}}},
		{"op begin, outbound IPv6, not HTTP",
			opBeginBytes(6e9, 100, 101, 9, uint32(event.OpOutbound), 25, afInet6, 5432, v6, "\x00\x00\x00\x08\x04\xd2\x16\x2f"),
			&event.OpBegin{Header: hdr(6e9, 100, 101), OpID: 9, Kind: event.OpOutbound, FD: 25, Dest: netip.AddrPortFrom(netip.AddrFrom16(v6), 5432)}},
		{"op begin, outbound v4-mapped IPv6 unmapped",
			opBeginBytes(6e9, 100, 101, 10, uint32(event.OpOutbound), 26, afInet6, 8765, mapped, ""),
			&event.OpBegin{Header: hdr(6e9, 100, 101), OpID: 10, Kind: event.OpOutbound, FD: 26, Dest: netip.MustParseAddrPort("10.0.0.5:8765")}},
		{"op begin, request line cut at the buffer",
			opBeginBytes(7e9, 100, 100, 11, uint32(event.OpHTTPServer), 27, 0, 0, [16]byte{}, "GET /media/"+strings.Repeat("a", 300)),
			nil}, // checked below: truncated
		{"op end with the op's counters",
			opEndBytes(8e9, 100, 100, 7, 23, uint32(event.EndNext), countersBytes(1000, "worker")),
			&event.OpEnd{Header: hdr(8e9, 100, 100), OpID: 7, FD: 23, Reason: event.EndNext, HasFinal: true, Final: wantFinal}},
		{"op end after its bucket was gone",
			opEndBytes(9e9, 100, 100, 8, 24, uint32(event.EndClose), nil),
			&event.OpEnd{Header: hdr(9e9, 100, 100), OpID: 8, FD: 24, Reason: event.EndClose}},
		{"TLS seen", hdrBytes(kindTLSSeen, cTLSSize, 10e9, 100, 102),
			&event.TLSSeen{Header: hdr(10e9, 100, 102)}},
		{"OOM kill", oomBytes(11e9, 100, 2048, 512, 4, 1<<20),
			&event.OOM{Header: hdr(11e9, 100, 100), AnonRSS: 2 << 20, FileRSS: 512 << 10, ShmemRSS: 4 << 10}},
	}
	seen := map[uint32]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seen[binary.LittleEndian.Uint32(tt.raw)] = true
			ev, err := Decode(tt.raw, testClock)
			if err != nil {
				t.Fatal(err)
			}
			if tt.want == nil {
				ob, ok := ev.(*event.OpBegin)
				if !ok || !ob.HTTP || !ob.Truncated || ob.Method != "GET" {
					t.Fatalf("got %#v, want a truncated GET", ev)
				}
				return
			}
			if !reflect.DeepEqual(ev, tt.want) {
				t.Errorf("Decode =\n%#v\nwant\n%#v", ev, tt.want)
			}
			// Every kind refuses a record one byte short of its layout.
			if len(tt.raw) > cHdrSize {
				short := append([]byte(nil), tt.raw[:len(tt.raw)-1]...)
				binary.LittleEndian.PutUint32(short[4:], uint32(len(short)))
				if _, err := Decode(short, testClock); !errors.Is(err, ErrShort) {
					t.Errorf("one byte short: err = %v, want ErrShort", err)
				}
			}
		})
	}
	for _, k := range []uint32{kindFork, kindExec, kindExit, kindOpBegin, kindOpEnd, kindTLSSeen, kindOOM} {
		if !seen[k] {
			t.Errorf("record kind %d has no decode test", k)
		}
	}
}

// TestDecodeKeepQueryValues: with --keep-query-values the op begin keeps
// the values it redacts by default.
func TestDecodeKeepQueryValues(t *testing.T) {
	raw := opBeginBytes(1, 100, 100, 1, uint32(event.OpHTTPServer), 3, 0, 0, [16]byte{}, "GET /a?b=c HTTP/1.1\r\n")
	ev, err := decode(raw, testClock, httpreq.Options{KeepQueryValues: true}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ob := ev.(*event.OpBegin); ob.Query != "b=c" {
		t.Errorf("query = %q, want the value kept", ob.Query)
	}
}

// TestOpLayouts: the op and OOM records' Go mirrors have the C sizes.
func TestOpLayouts(t *testing.T) {
	for name, got := range map[string][2]int{
		"op_begin_event": {beginSize, cOpBeginSize},
		"op_end_event":   {endSize, cOpEndSize},
		"oom_event":      {oomSize, cOOMSize},
	} {
		if got[0] != got[1] {
			t.Errorf("%s: Go mirror %d bytes, C layout %d", name, got[0], got[1])
		}
	}
}

// TestPairParts: an EV_OP_PAIR record carries an op's end and the next
// op's begin, each decoded whole; a begin of kind 0 (the new op could not
// start) is the end alone; other kinds are no pair.
func TestPairParts(t *testing.T) {
	end := opEndBytes(7, 100, 101, 41, 5, uint32(event.EndNext), countersBytes(4096, ""))
	begin := opBeginBytes(7, 100, 101, 42, uint32(event.OpHTTPServer), 5, 0, 0, [16]byte{}, "GET /next HTTP/1.1\r\n")
	if got := binary.Size(memdiagOpPairEvent{}); got != cHdrSize+cOpEndSize+cOpBeginSize {
		t.Fatalf("op_pair_event: Go mirror %d bytes, C layout %d", got, cHdrSize+cOpEndSize+cOpBeginSize)
	}
	pair := append(append(hdrBytes(kindOpPair, cHdrSize+cOpEndSize+cOpBeginSize, 7, 100, 101), end...), begin...)
	e, b, ok := pairParts(pair)
	if !ok {
		t.Fatal("a pair record not taken for one")
	}
	endEv, err := Decode(e, testClock)
	if err != nil {
		t.Fatal(err)
	}
	if oe, isEnd := endEv.(*event.OpEnd); !isEnd || oe.OpID != 41 || !oe.HasFinal || oe.Final.RSS[0] != -8192 {
		t.Errorf("first part = %#v, want op 41's end with its counters", endEv)
	}
	beginEv, err := Decode(b, testClock)
	if err != nil {
		t.Fatal(err)
	}
	if ob, isBegin := beginEv.(*event.OpBegin); !isBegin || ob.OpID != 42 || ob.Path != "/next" {
		t.Errorf("second part = %#v, want op 42's begin of /next", beginEv)
	}
	copy(pair[cHdrSize+cOpEndSize:], make([]byte, cHdrSize)) // begin.hdr.kind = 0
	if _, b, ok := pairParts(pair); !ok || b != nil {
		t.Errorf("a pair whose begin has kind 0: begin = %d bytes, want none", len(b))
	}
	if _, _, ok := pairParts(end); ok {
		t.Error("an op end record taken for a pair")
	}
}

// hdr is the event header Decode makes of a record at ktime ns.
func hdr(ktime uint64, pid, tid uint32) event.Header {
	return event.Header{Time: testClock.Wall(ktime), PID: pid, TID: tid}
}

// FuzzDecodeEveryKind seeds the decoder with one record of every kind, so
// the fuzzer starts from each layout (FuzzDecode's checks apply).
func FuzzDecodeEveryKind(f *testing.F) {
	f.Add(forkBytes(1, 100, 101, 102, "worker"))
	f.Add(execBytes(2, 100, 100, "/usr/bin/memwork"))
	f.Add(exitBytes(3, 100, 100, 256, 1, "main"))
	f.Add(opBeginBytes(4, 100, 100, 7, uint32(event.OpHTTPServer), 23, 0, 0, [16]byte{}, "GET /api/records?limit=5 HTTP/1.1\r\n"))
	f.Add(opBeginBytes(5, 100, 101, 8, uint32(event.OpOutbound), 24, afInet, 9200, v4(10, 0, 0, 5), "POST /_search HTTP/1.1\r\n"))
	f.Add(opBeginBytes(6, 100, 101, 9, uint32(event.OpOutbound), 25, afInet6, 5432, netip.MustParseAddr("::1").As16(), "\x16\x03\x01"))
	f.Add(opEndBytes(7, 100, 100, 7, 23, uint32(event.EndNext), countersBytes(4096, "worker")))
	f.Add(opEndBytes(8, 100, 100, 8, 24, uint32(event.EndClose), nil))
	f.Add(hdrBytes(kindTLSSeen, cTLSSize, 9, 100, 100))
	f.Add(oomBytes(10, 100, 2048, 512, 4, 1<<20))
	f.Fuzz(func(t *testing.T, raw []byte) {
		ev, err := Decode(raw, testClock)
		if err != nil {
			if ev != nil || !errors.Is(err, ErrShort) && !errors.Is(err, ErrBadSize) && !errors.Is(err, ErrUnknownKind) {
				t.Fatalf("Decode = %#v, %v: want nil and a sentinel", ev, err)
			}
			return
		}
		kind := binary.LittleEndian.Uint32(raw[0:])
		size := int(binary.LittleEndian.Uint32(raw[4:]))
		layout := map[uint32]int{kindFork: cForkSize, kindExec: cExecSize, kindExit: cExitSize,
			kindOpBegin: cOpBeginSize, kindOpEnd: cOpEndSize, kindTLSSeen: cTLSSize, kindOOM: cOOMSize}[kind]
		if size < layout || size > len(raw) {
			t.Fatalf("decoded a %d-byte record of kind %d from %d bytes, layout %d", size, kind, len(raw), layout)
		}
		if ob, ok := ev.(*event.OpBegin); ok && ob.HTTP && (ob.Method == "" || ob.Path == "") {
			t.Fatalf("an HTTP op begin without method or path: %#v", ob)
		}
	})
}

// BenchmarkDecodeRequest decodes what one served keep-alive request makes:
// an op begin (its request line parsed against the connection's naming
// state) and the previous op's end with its final counters. The reader
// does this 50,000 times a second at 100k records/s (BENCHMARKS.md,
// "Record storms").
func BenchmarkDecodeRequest(b *testing.B) {
	begin := opBeginBytes(1000, 42, 42, 7, uint32(event.OpHTTPServer), 5, 0, 0, [16]byte{}, "GET /storm HTTP/1.1\r\nHost: storm\r\n\r\n")
	end := opEndBytes(2000, 42, 42, 7, 5, uint32(event.EndNext), countersBytes(1, ""))
	conns := httpreq.NewConns(httpreq.Options{})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decode(begin, testClock, httpreq.Options{}, conns, nil); err != nil {
			b.Fatal(err)
		}
		if _, err := decode(end, testClock, httpreq.Options{}, conns, nil); err != nil {
			b.Fatal(err)
		}
	}
}
