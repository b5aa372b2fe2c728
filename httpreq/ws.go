package httpreq

import (
	"encoding/binary"
	"errors"
)

// ErrNotWSMessage says bytes do not start with a client's WebSocket text or
// binary frame.
var ErrNotWSMessage = errors.New("not a WebSocket message frame from a client")

// WebSocket opcodes (RFC 6455 §5.2).
const (
	wsText   = 0x1
	wsBinary = 0x2
)

// WSFrame is the header of a WebSocket frame.
type WSFrame struct {
	Fin    bool
	Opcode byte
	Masked bool
	Len    uint64 // payload bytes
	Header int    // header bytes (2 to 14)
}

// ParseWSFrame parses the WebSocket frame header at the start of b.
func ParseWSFrame(b []byte) (WSFrame, error) {
	if len(b) < 2 {
		return WSFrame{}, ErrNotWSMessage
	}
	f := WSFrame{Fin: b[0]&0x80 != 0, Opcode: b[0] & 0x0f, Masked: b[1]&0x80 != 0, Len: uint64(b[1] & 0x7f), Header: 2}
	switch f.Len {
	case 126:
		if len(b) < 4 {
			return WSFrame{}, ErrNotWSMessage
		}
		f.Len, f.Header = uint64(binary.BigEndian.Uint16(b[2:4])), 4
	case 127:
		if len(b) < 10 {
			return WSFrame{}, ErrNotWSMessage
		}
		f.Len, f.Header = binary.BigEndian.Uint64(b[2:10]), 10
		if f.Len>>63 != 0 {
			return WSFrame{}, ErrNotWSMessage // the most significant bit must be 0
		}
	}
	if f.Masked {
		f.Header += 4
	}
	if (f.Opcode > 0x2 && f.Opcode < 0x8) || f.Opcode > 0xa {
		return WSFrame{}, ErrNotWSMessage // reserved opcodes
	}
	return f, nil
}

// Message names a client's WebSocket message after the request that
// upgraded its connection (upgrade: Method and Path as read): the same
// route, Proto "ws". Bytes that are not a client's text or binary frame
// (masked, as RFC 6455 requires of clients) give ErrNotWSMessage.
func Message(upgrade Request, frame []byte) (Request, error) {
	f, err := ParseWSFrame(frame)
	if err != nil || !f.Masked || (f.Opcode != wsText && f.Opcode != wsBinary) || upgrade.Method != "GET" {
		return Request{}, ErrNotWSMessage
	}
	r := upgrade
	r.Proto, r.GRPC = "ws", false
	return r, nil
}
