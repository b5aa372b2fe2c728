package httpreq

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/net/http2/hpack"
)

// Sentinel errors of H2Conn.
var (
	ErrFrame      = errors.New("not an HTTP/2 HEADERS frame")
	ErrHPACK      = errors.New("header block does not decode")
	ErrNoPath     = errors.New("header block has no :method or :path")
	ErrStateLost  = errors.New("header block refers to HPACK state memdiag did not see")
	errTruncated  = errors.New("header block truncated")
	errNotHeaders = errors.New("not a HEADERS or CONTINUATION frame")
)

// HTTP/2 frame types and flags (RFC 9113 §6).
const (
	h2FrameHeaders      = 0x1
	h2FrameContinuation = 0x9
	h2FlagEndHeaders    = 0x4
	h2FlagPadded        = 0x8
	h2FlagPriority      = 0x20
	h2HeaderLen         = 9
	h2DefaultTableSize  = 4096
	h2MaxTableSize      = 64 << 10 // the largest dynamic table accepted from a client
	h2MaxString         = 16 << 10 // the longest header string decoded
)

// H2Conn decodes the client side of one HTTP/2 connection: the header
// blocks the kernel hands over (each frame with its 9-byte header), in the
// order they were read, through one HPACK decoder whose dynamic table
// follows the client's encoder.
//
// The kernel hands over at most a few hundred bytes of a frame. A block
// cut short loses the table entries it would have added, so the decoder
// starts over after it with an empty table: entries added since are at the
// same place in the client's table (HPACK indexes from the newest), older
// ones are not known, and a block that names one gives ErrStateLost, never
// a wrong name.
type H2Conn struct {
	opts   Options
	dec    *hpack.Decoder
	fields map[string]string // pseudo-headers and content-type of the block being decoded
	last   uint32            // the highest stream id opened
	inCont bool              // a block continues in CONTINUATION frames
	lost   bool              // the block being decoded was cut: skip its CONTINUATIONs
}

// NewH2Conn returns the decoder of a new connection.
func NewH2Conn(opts Options) *H2Conn {
	c := &H2Conn{opts: opts, fields: map[string]string{}}
	c.reset()
	return c
}

func (c *H2Conn) reset() {
	c.dec = hpack.NewDecoder(h2DefaultTableSize, func(f hpack.HeaderField) {
		switch f.Name {
		case ":method", ":path", ":scheme", ":authority", "content-type":
			c.fields[f.Name] = f.Value
		}
	})
	c.dec.SetAllowedMaxDynamicTableSize(h2MaxTableSize)
	c.dec.SetMaxStringLength(h2MaxString)
}

// Stream decodes the HEADERS frame that opened a stream and names it:
// :method and :path (its query redacted as Parse does); GRPC is set for
// gRPC calls (content-type application/grpc), whose Path is
// /package.Service/Method. A stream id not above the last one seen means
// the fd now holds another connection: the decoder starts over.
func (c *H2Conn) Stream(frame []byte) (Request, error) {
	typ, flags, stream, frag, n, err := h2Frame(frame)
	if err != nil || typ != h2FrameHeaders {
		return Request{}, ErrFrame
	}
	if stream <= c.last {
		c.reset() // a new connection on a reused fd
	}
	c.last = stream
	clear(c.fields)
	c.inCont, c.lost = false, false
	frag, cut, err := headersPayload(flags, frag, n)
	if err != nil {
		c.reset()
		return Request{}, err
	}
	err = c.decode(flags, frag, cut)
	return c.name(err)
}

// Headers decodes a header block that opens no stream (trailers), or a
// CONTINUATION of the last one, to keep the dynamic table in step.
func (c *H2Conn) Headers(frame []byte) {
	typ, flags, _, frag, n, err := h2Frame(frame)
	if err != nil {
		return
	}
	cut := len(frag) < n
	switch typ {
	case h2FrameHeaders:
		clear(c.fields)
		c.inCont, c.lost = false, false
		if frag, cut, err = headersPayload(flags, frag, n); err != nil {
			c.reset()
			return
		}
	case h2FrameContinuation:
		if !c.inCont || c.lost {
			return
		}
	default:
		return
	}
	c.decode(flags, frag, cut)
}

// decode feeds one fragment to the decoder; at the end of a block (or a
// cut one) the decoder is ready for the next block.
func (c *H2Conn) decode(flags byte, frag []byte, cut bool) error {
	if _, err := c.dec.Write(frag); err != nil {
		c.reset()
		c.inCont = false
		if strings.Contains(err.Error(), "invalid indexed representation") {
			return ErrStateLost
		}
		return fmt.Errorf("%w: %v", ErrHPACK, err)
	}
	if cut {
		// The rest of the block is not here: its entries are lost.
		c.reset()
		c.inCont, c.lost = flags&h2FlagEndHeaders == 0, true
		return errTruncated
	}
	if flags&h2FlagEndHeaders == 0 {
		c.inCont = true
		return nil
	}
	c.inCont = false
	if err := c.dec.Close(); err != nil {
		c.reset()
		return fmt.Errorf("%w: %v", ErrHPACK, err)
	}
	return nil
}

// name makes a Request of the fields decoded so far; a cut block names
// its stream when the pseudo-headers came before the cut.
func (c *H2Conn) name(err error) (Request, error) {
	if err != nil && !errors.Is(err, errTruncated) {
		return Request{}, err
	}
	method, path := c.fields[":method"], c.fields[":path"]
	if method == "" || path == "" {
		if err != nil {
			return Request{}, err
		}
		return Request{}, ErrNoPath
	}
	r, perr := Parse([]byte(method+" "+path+" HTTP/1.1"), c.opts)
	if perr != nil {
		return Request{}, perr
	}
	r.Proto = "h2"
	if ct := c.fields["content-type"]; strings.HasPrefix(ct, "application/grpc") {
		r.GRPC = true
	}
	return r, nil
}

// h2Frame splits a frame as the kernel hands it over: the 9-byte header,
// then as much of the payload as it carried; n is the payload's length
// (more than len(payload) when the kernel cut it).
func h2Frame(b []byte) (typ, flags byte, stream uint32, payload []byte, n int, err error) {
	if len(b) < h2HeaderLen {
		return 0, 0, 0, nil, 0, ErrFrame
	}
	n = int(b[0])<<16 | int(b[1])<<8 | int(b[2])
	typ, flags = b[3], b[4]
	stream = binary.BigEndian.Uint32(b[5:9]) & 0x7fffffff
	if stream == 0 || (typ != h2FrameHeaders && typ != h2FrameContinuation) {
		return 0, 0, 0, nil, 0, errNotHeaders
	}
	payload = b[h2HeaderLen:]
	if len(payload) > n {
		payload = payload[:n]
	}
	return typ, flags, stream, payload, n, nil
}

// headersPayload returns the header block fragment of a HEADERS frame
// whose payload is n bytes long, p of them seen: without the pad length,
// priority fields and padding. cut says the fragment goes on past p.
func headersPayload(flags byte, p []byte, n int) (frag []byte, cut bool, err error) {
	skip, pad := 0, 0
	if flags&h2FlagPadded != 0 {
		if len(p) < 1 {
			return nil, false, ErrFrame
		}
		skip, pad = 1, int(p[0])
	}
	if flags&h2FlagPriority != 0 {
		skip += 5
	}
	blockLen := n - skip - pad
	if blockLen < 0 || len(p) < skip {
		return nil, false, ErrFrame
	}
	p = p[skip:]
	if len(p) > blockLen {
		p = p[:blockLen]
	}
	return p, len(p) < blockLen, nil
}
