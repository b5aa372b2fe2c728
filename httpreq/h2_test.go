package httpreq

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/net/http2/hpack"
)

// frame lays out an HTTP/2 frame as the kernel hands it over, cut to at
// most limit bytes (the header included).
func frame(typ, flags byte, stream uint32, payload []byte, limit int) []byte {
	b := []byte{byte(len(payload) >> 16), byte(len(payload) >> 8), byte(len(payload)), typ, flags}
	b = binary.BigEndian.AppendUint32(b, stream)
	b = append(b, payload...)
	if len(b) > limit {
		b = b[:limit]
	}
	return b
}

// client is an HPACK encoder, as an HTTP/2 client keeps one per connection.
type client struct {
	buf bytes.Buffer
	enc *hpack.Encoder
}

func newClient() *client {
	c := &client{}
	c.enc = hpack.NewEncoder(&c.buf)
	return c
}

func (c *client) block(fields ...string) []byte {
	c.buf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		c.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return bytes.Clone(c.buf.Bytes())
}

const kernelLimit = 248 // bytes of a frame the kernel's OP_BEGIN carries

// TestH2Streams: streams named by :method and :path, through the dynamic
// table (the second call on a path is indexed), gRPC calls flagged.
func TestH2Streams(t *testing.T) {
	cl := newClient()
	conn := NewH2Conn(Options{})
	grpc := []string{":method", "POST", ":scheme", "http", ":path", "/helloworld.Greeter/SayHello",
		":authority", "127.0.0.1:5000", "content-type", "application/grpc", "te", "trailers"}
	for i := range 3 {
		r, err := conn.Stream(frame(1, 0x4|0x1, uint32(1+2*i), cl.block(grpc...), kernelLimit))
		if err != nil || !r.GRPC || r.Method != "POST" || r.Path != "/helloworld.Greeter/SayHello" || r.Proto != "h2" {
			t.Fatalf("call %d = %+v, %v", i, r, err)
		}
	}
	r, err := conn.Stream(frame(1, 0x4, 7, cl.block(":method", "GET", ":scheme", "http", ":path", "/api/x?token=secret", ":authority", "h"), kernelLimit))
	if err != nil || r.GRPC || r.Method != "GET" || r.Path != "/api/x" || r.Query != "token=…" {
		t.Fatalf("GET = %+v, %v", r, err)
	}
}

// TestH2Padded: padding and priority fields are not header bytes.
func TestH2Padded(t *testing.T) {
	cl := newClient()
	block := cl.block(":method", "GET", ":path", "/p")
	payload := append([]byte{3}, []byte{0, 0, 0, 1, 16}...) // pad length, priority
	payload = append(payload, block...)
	payload = append(payload, 0, 0, 0)
	r, err := NewH2Conn(Options{}).Stream(frame(1, 0x4|0x8|0x20, 1, payload, kernelLimit))
	if err != nil || r.Path != "/p" {
		t.Fatalf("padded = %+v, %v", r, err)
	}
}

// TestH2CutBlock: a block cut by the kernel still names its stream (the
// pseudo-headers come first); the entries it would have added are lost,
// and a later block that refers to them is not named rather than
// misnamed, while entries added after the cut are found.
func TestH2CutBlock(t *testing.T) {
	cl := newClient()
	conn := NewH2Conn(Options{})
	long := string(bytes.Repeat([]byte("c"), 400))
	r, err := conn.Stream(frame(1, 0x4, 1, cl.block(":method", "GET", ":path", "/first", "cookie", long, "x-a", "1"), kernelLimit))
	if err != nil || r.Path != "/first" {
		t.Fatalf("cut block = %+v, %v", r, err)
	}
	// x-a:1 was added to the client's table after the cut: referring to
	// it is referring to lost state.
	if r, err := conn.Stream(frame(1, 0x4, 3, cl.block(":method", "GET", ":path", "/second", "x-a", "1"), kernelLimit)); !errors.Is(err, ErrStateLost) {
		t.Fatalf("block naming lost entries = %+v, %v; want ErrStateLost", r, err)
	}
	// :path /third is added now, then indexed: both named.
	for i := range 2 {
		r, err := conn.Stream(frame(1, 0x4, uint32(5+2*i), cl.block(":method", "GET", ":path", "/third"), kernelLimit))
		if err != nil || r.Path != "/third" {
			t.Fatalf("after the cut, stream %d = %+v, %v", i, r, err)
		}
	}
}

// TestH2Trailers: a HEADERS frame that opens no stream (trailers) still
// feeds the dynamic table.
func TestH2Trailers(t *testing.T) {
	cl := newClient()
	conn := NewH2Conn(Options{})
	conn.Stream(frame(1, 0x4, 1, cl.block(":method", "POST", ":path", "/a"), kernelLimit))
	conn.Headers(frame(1, 0x4|0x1, 1, cl.block("x-trailer", "v"), kernelLimit))
	r, err := conn.Stream(frame(1, 0x4, 3, cl.block(":method", "POST", ":path", "/b", "x-trailer", "v"), kernelLimit))
	if err != nil || r.Path != "/b" {
		t.Fatalf("after trailers = %+v, %v", r, err)
	}
}

// TestH2Continuation: a block split over CONTINUATION frames.
func TestH2Continuation(t *testing.T) {
	cl := newClient()
	conn := NewH2Conn(Options{})
	// One block, :method and :path in the HEADERS frame, the rest after.
	first, rest := cl.block(":method", "GET", ":path", "/c"), cl.block("x-b", "2")
	if r, err := conn.Stream(frame(1, 0, 1, first, kernelLimit)); err != nil || r.Path != "/c" {
		t.Fatalf("first fragment = %+v, %v", r, err)
	}
	conn.Headers(frame(9, 0x4, 1, rest, kernelLimit))
	r, err := conn.Stream(frame(1, 0x4, 3, cl.block(":method", "GET", ":path", "/c", "x-b", "2"), kernelLimit))
	if err != nil || r.Path != "/c" {
		t.Fatalf("after continuation = %+v, %v", r, err)
	}
}

// TestH2Garbage: bytes that are not a header block are no name.
func TestH2Garbage(t *testing.T) {
	conn := NewH2Conn(Options{})
	for _, b := range [][]byte{nil, {1, 2}, frame(0, 1, 1, []byte("data"), 100), frame(1, 4, 1, []byte{0xff, 0xff, 0xff, 0xff}, 100), frame(1, 4, 3, []byte{0x82}, 100)} {
		if r, err := conn.Stream(b); err == nil {
			t.Errorf("%x named %+v", b, r)
		}
	}
}

// FuzzH2: frames of any bytes, in any order, through one connection's
// decoder: never a panic, and a name is always a parsed request line.
func FuzzH2(f *testing.F) {
	cl := newClient()
	f.Add(frame(1, 4, 1, cl.block(":method", "GET", ":path", "/a"), kernelLimit), frame(1, 4, 3, cl.block(":method", "GET", ":path", "/a"), kernelLimit), byte(0))
	f.Add(frame(1, 0, 1, cl.block(":method", "POST", ":path", "/s/M", "content-type", "application/grpc"), 12), frame(9, 4, 1, []byte{0x40, 1, 'a', 1, 'b'}, 100), byte(1))
	f.Fuzz(func(t *testing.T, a, b []byte, mode byte) {
		conn := NewH2Conn(Options{})
		for i, fr := range [][]byte{a, b, a} {
			if (mode>>i)&1 == 1 {
				conn.Headers(fr)
				continue
			}
			r, err := conn.Stream(fr)
			if err != nil {
				continue
			}
			if !methods[r.Method] || r.Path == "" || r.Proto != "h2" {
				t.Fatalf("bad name %+v", r)
			}
		}
	})
}
