package tracer

import (
	"bytes"
	"encoding/binary"
	"testing"

	"golang.org/x/net/http2/hpack"

	"github.com/memdiag/memdiag/event"
	"github.com/memdiag/memdiag/httpreq"
)

// cOpDataSize is struct op_data_event: hdr, op_id, fd, what, data_len, pad, data.
const cOpDataSize = cHdrSize + 8 + 4 + 4 + 4 + 4 + 2048

// opDataBytes lays out an op_data_event.
func opDataBytes(pid uint32, opID uint64, fd int32, what uint32, data []byte) []byte {
	b := hdrBytes(kindOpData, cOpDataSize, 1, pid, pid)
	b = binary.LittleEndian.AppendUint64(b, opID)
	b = binary.LittleEndian.AppendUint32(b, uint32(fd))
	b = binary.LittleEndian.AppendUint32(b, what)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(data)))
	b = binary.LittleEndian.AppendUint32(b, 0)
	return append(b, cChars(string(data), 2048)...)
}

func TestOpDataLayout(t *testing.T) {
	if dataSize != cOpDataSize {
		t.Errorf("op_data_event is %d bytes in Go, %d in C", dataSize, cOpDataSize)
	}
}

// TestDecodeConns: the records of one connection, decoded in order with
// the tracer's naming state: pipelined requests named in order across an
// OP_BEGIN and the rest of its read, HTTP/2 streams through HPACK, a
// WebSocket message by its upgrade; a close forgets the connection.
func TestDecodeConns(t *testing.T) {
	conns := httpreq.NewConns(httpreq.Options{})
	name := func(raw []byte) string {
		t.Helper()
		ev, err := decode(raw, testClock, httpreq.Options{}, conns, nil)
		if err != nil {
			t.Fatal(err)
		}
		if ev == nil {
			return "<nil>"
		}
		ob := ev.(*event.OpBegin)
		if ob.Kind != event.OpHTTPServer {
			t.Errorf("op kind %d, want a served request", ob.Kind)
		}
		if !ob.HTTP {
			return "unknown"
		}
		return ob.Proto + " " + ob.Method + " " + ob.Path
	}
	var read bytes.Buffer
	for _, p := range []string{"/a", "/b", "/c", "/d", "/e", "/f"} {
		read.WriteString("GET " + p + " HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: x\r\n\r\n")
	}
	r := read.Bytes()
	pipelined := uint32(memdiagOpKindOP_HTTP_PIPELINED)
	if got := name(opBeginBytes(1, 7, 7, 1, uint32(event.OpHTTPServer), 5, 0, 0, [16]byte{}, string(r[:248]))); got != " GET /a" {
		t.Errorf("first = %q", got)
	}
	if got := name(opDataBytes(7, 1, 5, uint32(memdiagOpDataWhatDATA_REST), r[248:])); got != "<nil>" {
		t.Errorf("data record = %q", got)
	}
	for i, want := range []string{" GET /b", " GET /c", " GET /d", " GET /e", " GET /f", "unknown"} {
		if got := name(opBeginBytes(1, 7, 7, uint64(2+i), pipelined, 5, 0, 0, [16]byte{}, "")); got != want {
			t.Errorf("pipelined %d = %q, want %q", i, got, want)
		}
	}

	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	stream := func(id uint32, path string) []byte {
		block.Reset()
		for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", path}, {"content-type", "application/grpc"}} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		fr := []byte{0, 0, byte(block.Len()), 1, 4}
		fr = binary.BigEndian.AppendUint32(fr, id)
		return append(fr, block.Bytes()...)
	}
	h2 := uint32(memdiagOpKindOP_H2STREAM)
	for i := range 3 {
		if got := name(opBeginBytes(1, 7, 7, uint64(10+i), h2, 6, 0, 0, [16]byte{}, string(stream(uint32(1+2*i), "/pkg.Svc/Get")))); got != "h2 POST /pkg.Svc/Get" {
			t.Errorf("stream %d = %q", i, got)
		}
	}

	ws := uint32(memdiagOpKindOP_WS_MESSAGE)
	name(opBeginBytes(1, 7, 7, 20, uint32(event.OpHTTPServer), 8, 0, 0, [16]byte{}, "GET /chat?room=1 HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"))
	if got := name(opBeginBytes(1, 7, 7, 21, ws, 8, 0, 0, [16]byte{}, "\x81\x85abcdhello")); got != "ws GET /chat" {
		t.Errorf("message = %q", got)
	}
	if _, err := decode(opEndBytes(1, 7, 7, 21, 8, uint32(event.EndClose), nil), testClock, httpreq.Options{}, conns, nil); err != nil {
		t.Fatal(err)
	}
	if got := name(opBeginBytes(1, 7, 7, 22, ws, 8, 0, 0, [16]byte{}, "\x81\x85abcdhello")); got != "unknown" {
		t.Errorf("message on a closed connection = %q", got)
	}
}
