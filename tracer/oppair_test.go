package tracer

import (
	"encoding/binary"
	"runtime/debug"
	"testing"
	"time"
	"unsafe"

	"github.com/memdiag/memdiag/attribution"
	"github.com/memdiag/memdiag/event"
	"github.com/memdiag/memdiag/httpreq"
)

// BenchmarkOpPair follows one served keep-alive request from the ring
// buffer's records to the account, as memdiag does ~100k times a second
// for a plain Node.js server under wrk (issue #15): the previous op's end
// on the connection with its final counters, the next op's begin with its
// request line and a few headers, each decoded against the connections'
// naming state, applied to an account and recycled. One op is one
// iteration; 16 connections take turns, four request lines come round, op
// ids and times grow as the kernel's do, and a snapshot comes every
// 100,000 ops (a second of such load). The GC runs as memdiag's main sets
// it: GOGC 25, a 32 MiB limit.
func BenchmarkOpPair(b *testing.B) {
	defer debug.SetGCPercent(debug.SetGCPercent(25))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(32 << 20))
	const (
		conns   = 16
		perSnap = 100_000
		pid     = 42
	)
	paths := []string{"/", "/api/users/42", "/api/orders?limit=5&page=2", "/static/app.js"}
	var begins [][]byte
	for _, p := range paths {
		req := "GET " + p + " HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
		begins = append(begins, opBeginBytes(0, pid, pid, 0, uint32(event.OpHTTPServer), 0, 0, 0, [16]byte{}, req))
	}
	end := opEndBytes(0, pid, pid, 0, 0, uint32(event.EndNext), countersBytes(1, ""))
	naming := httpreq.NewConns(httpreq.Options{})
	acct := attribution.New(pid, testClock.Wall(0))
	acct.SetOptions(attribution.Options{Categorizer: attribution.NewCategorizer(nil), KeepOps: 100})
	apply := func(raw []byte) {
		ev, err := decode(raw, testClock, httpreq.Options{}, naming, nil)
		if err != nil {
			b.Fatal(err)
		}
		acct.Apply(ev)
		event.Recycle(ev) // as the session does
	}
	b.ReportAllocs()
	var op uint64
	for b.Loop() {
		op++
		ktime := op * uint64(10*time.Microsecond)
		fd := int32(10 + op%conns)
		if op > conns {
			stamp(end, ktime, op-conns, unsafe.Offsetof(memdiagOpEndEvent{}.Fd), fd)
			apply(end)
		}
		begin := begins[op%uint64(len(begins))]
		stamp(begin, ktime, op, unsafe.Offsetof(memdiagOpBeginEvent{}.Fd), fd)
		apply(begin)
		if op%perSnap == 0 {
			acct.Apply(&event.Snapshot{Time: testClock.Wall(ktime)})
		}
	}
}

// stamp sets an op record's time, op id and fd (at fdAt) in place.
func stamp(rec []byte, ktime, opID uint64, fdAt uintptr, fd int32) {
	binary.LittleEndian.PutUint64(rec[unsafe.Offsetof(memdiagEventHdr{}.KtimeNs):], ktime)
	binary.LittleEndian.PutUint64(rec[unsafe.Offsetof(memdiagOpEndEvent{}.OpId):], kernelOpID(opID))
	binary.LittleEndian.PutUint32(rec[fdAt:], uint32(fd))
}
