package httpreq

import (
	"encoding/binary"
	"testing"
)

// clientFrame lays out a masked client frame header for a payload of n
// bytes (the payload itself does not matter to the parser).
func clientFrame(opcode byte, n int) []byte {
	b := []byte{0x80 | opcode}
	switch {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n < 1<<16:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, 1, 2, 3, 4, 'x')
}

func TestParseWSFrame(t *testing.T) {
	for _, c := range []struct {
		n, header int
	}{{5, 6}, {300, 8}, {70000, 14}} {
		f, err := ParseWSFrame(clientFrame(1, c.n))
		if err != nil || f.Len != uint64(c.n) || f.Header != c.header || !f.Masked || !f.Fin || f.Opcode != 1 {
			t.Errorf("frame of %d bytes = %+v, %v", c.n, f, err)
		}
	}
	for _, b := range [][]byte{nil, {0x81}, {0x81, 126, 1}, {0x81, 127, 0, 0}, {0x83, 0x80}, {0x8f, 0x80}, {0x81, 127, 0x80, 0, 0, 0, 0, 0, 0, 1}} {
		if f, err := ParseWSFrame(b); err == nil {
			t.Errorf("%x parsed as %+v", b, f)
		}
	}
}

func TestMessage(t *testing.T) {
	up := Request{Method: "GET", Path: "/ws/chat", Query: "room=…"}
	r, err := Message(up, clientFrame(2, 10))
	if err != nil || r.Proto != "ws" || r.Path != "/ws/chat" || r.Method != "GET" || r.Query != "room=…" {
		t.Errorf("message = %+v, %v", r, err)
	}
	for _, b := range [][]byte{clientFrame(9, 0), clientFrame(0, 3), {0x81, 0x05, 'h', 'e', 'l', 'l', 'o'}} {
		if r, err := Message(up, b); err == nil {
			t.Errorf("%x named %+v: a ping, a continuation or an unmasked frame is no client message", b, r)
		}
	}
	if _, err := Message(Request{Method: "POST", Path: "/"}, clientFrame(1, 1)); err == nil {
		t.Error("a message named after a POST: only GET upgrades")
	}
}

// FuzzWSFrame: any bytes: never a panic; a frame's header never claims
// more than 14 bytes or a length with its top bit set.
func FuzzWSFrame(f *testing.F) {
	f.Add(clientFrame(1, 5))
	f.Add(clientFrame(2, 70000))
	f.Add([]byte{0x88, 0x80, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := ParseWSFrame(b)
		if err != nil {
			return
		}
		if fr.Header < 2 || fr.Header > 14 || fr.Len>>63 != 0 {
			t.Fatalf("%x: %+v", b, fr)
		}
		if r, err := Message(Request{Method: "GET", Path: "/ws"}, b); err == nil && (r.Proto != "ws" || r.Path != "/ws") {
			t.Fatalf("%x named %+v", b, r)
		}
	})
}
