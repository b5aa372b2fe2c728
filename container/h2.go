package container

// A unary gRPC call over HTTP/2 without TLS (h2c, prior knowledge), on a
// connection of its own: the client preface and SETTINGS, one HEADERS and
// one DATA frame out, then frames in until the stream ends, answering the
// server's SETTINGS and PINGs. That is all a CRI list call needs, so it is
// written here with hpack rather than with net/http, whose package
// initializers (crypto/tls, x509 and the rest) cost every memdiag process
// about 3 MiB of resident memory (BENCHMARKS.md).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"golang.org/x/net/http2/hpack"
)

// HTTP/2 frame types and flags (RFC 9113 section 6).
const (
	h2Data         = 0x0
	h2Headers      = 0x1
	h2RSTStream    = 0x3
	h2Settings     = 0x4
	h2PushPromise  = 0x5
	h2Ping         = 0x6
	h2GoAway       = 0x7
	h2Continuation = 0x9

	h2FlagEndStream  = 0x1
	h2FlagAck        = 0x1
	h2FlagEndHeaders = 0x4
	h2FlagPadded     = 0x8
	h2FlagPriority   = 0x20
)

// h2Preface opens every HTTP/2 connection a client makes.
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// h2MaxFrame is the largest frame payload accepted: HTTP/2's default
// SETTINGS_MAX_FRAME_SIZE, which the client does not raise.
const h2MaxFrame = 16384

// h2Window is the flow-control window the client grants, the largest
// HTTP/2 allows, so the server never waits for a WINDOW_UPDATE: answers
// are bounded by the caller's maximum instead.
const h2Window = 1<<31 - 1

// grpcAnswer is what a unary call returned: the response headers, the
// trailers, and the body (gRPC's framed message).
type grpcAnswer struct {
	header, trailer map[string]string
	body            []byte
}

// h2UnaryCall POSTs body to path on a new h2c connection to the unix
// socket and reads the answer, whose body may not exceed maxBody bytes.
func h2UnaryCall(ctx context.Context, socket, path string, body []byte, maxBody int) (grpcAnswer, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return grpcAnswer{}, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	a, err := h2Exchange(c, path, body, maxBody)
	if ctx.Err() != nil {
		return a, context.Cause(ctx)
	}
	return a, err
}

// h2Exchange makes the call on c.
func h2Exchange(c io.ReadWriter, path string, body []byte, maxBody int) (grpcAnswer, error) {
	var out bytes.Buffer
	out.WriteString(h2Preface)
	var settings []byte
	settings = binary.BigEndian.AppendUint16(settings, 0x2) // SETTINGS_ENABLE_PUSH
	settings = binary.BigEndian.AppendUint32(settings, 0)
	settings = binary.BigEndian.AppendUint16(settings, 0x4) // SETTINGS_INITIAL_WINDOW_SIZE
	settings = binary.BigEndian.AppendUint32(settings, h2Window)
	h2AppendFrame(&out, h2Settings, 0, 0, settings)
	h2AppendFrame(&out, 0x8, 0, 0, binary.BigEndian.AppendUint32(nil, h2Window-65535)) // WINDOW_UPDATE of the connection
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{
		{":method", "POST"}, {":scheme", "http"}, {":path", path}, {":authority", "localhost"},
		{"content-type", "application/grpc"}, {"te", "trailers"}, {"user-agent", "memdiag"},
	} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if block.Len() > h2MaxFrame || len(body) > h2MaxFrame {
		return grpcAnswer{}, errors.New("request too large for one frame")
	}
	h2AppendFrame(&out, h2Headers, h2FlagEndHeaders, 1, block.Bytes())
	h2AppendFrame(&out, h2Data, h2FlagEndStream, 1, body)
	if _, err := c.Write(out.Bytes()); err != nil {
		return grpcAnswer{}, err
	}

	r := bufio.NewReader(c)
	dec := hpack.NewDecoder(4096, nil)
	var (
		a         grpcAnswer
		headers   []byte // a header block being received
		inBlock   bool   // a HEADERS frame's block is being received (it may be empty so far)
		endStream bool   // of the HEADERS frame whose block is being received
		goAway    error
	)
	for {
		typ, flags, stream, payload, err := h2ReadFrame(r)
		if err != nil {
			if goAway != nil && errors.Is(err, io.EOF) {
				return a, goAway
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return a, err
		}
		if inBlock && typ != h2Continuation {
			return a, errors.New("HTTP/2 header block interrupted")
		}
		switch typ {
		case h2Settings:
			if flags&h2FlagAck == 0 && stream == 0 {
				var ack bytes.Buffer
				h2AppendFrame(&ack, h2Settings, h2FlagAck, 0, nil)
				if _, err := c.Write(ack.Bytes()); err != nil {
					return a, err
				}
			}
		case h2Ping:
			if flags&h2FlagAck == 0 {
				var pong bytes.Buffer
				h2AppendFrame(&pong, h2Ping, h2FlagAck, 0, payload)
				if _, err := c.Write(pong.Bytes()); err != nil {
					return a, err
				}
			}
		case h2GoAway:
			code := uint32(0)
			if len(payload) >= 8 {
				code = binary.BigEndian.Uint32(payload[4:])
			}
			goAway = fmt.Errorf("the server closed the connection (GOAWAY, code %d)", code)
			if len(payload) >= 4 && binary.BigEndian.Uint32(payload)&0x7fffffff < 1 {
				return a, goAway // our stream (1) will not be answered
			}
		case h2RSTStream:
			if stream == 1 {
				code := uint32(0)
				if len(payload) >= 4 {
					code = binary.BigEndian.Uint32(payload)
				}
				return a, fmt.Errorf("the server reset the call (RST_STREAM, code %d)", code)
			}
		case h2PushPromise:
			return a, errors.New("HTTP/2 push refused by SETTINGS, yet promised")
		case h2Data:
			if stream != 1 {
				continue
			}
			if payload, err = h2Unpad(flags, payload); err != nil {
				return a, err
			}
			if len(a.body)+len(payload) > maxBody {
				return a, fmt.Errorf("answer larger than %d bytes", maxBody)
			}
			a.body = append(a.body, payload...)
			if flags&h2FlagEndStream != 0 {
				return a, nil
			}
		case h2Headers, h2Continuation:
			if typ == h2Headers {
				if stream != 1 {
					return a, fmt.Errorf("HTTP/2 headers on stream %d", stream)
				}
				if payload, err = h2Unpad(flags, payload); err != nil {
					return a, err
				}
				if flags&h2FlagPriority != 0 {
					if len(payload) < 5 {
						return a, errors.New("short HTTP/2 HEADERS frame")
					}
					payload = payload[5:]
				}
				endStream = flags&h2FlagEndStream != 0
			} else if !inBlock || stream != 1 {
				return a, errors.New("HTTP/2 CONTINUATION out of place")
			}
			inBlock = true
			headers = append(headers, payload...)
			if len(headers) > 1<<20 {
				return a, errors.New("HTTP/2 header block too large")
			}
			if flags&h2FlagEndHeaders == 0 {
				continue
			}
			fields, err := dec.DecodeFull(headers)
			if err != nil {
				return a, fmt.Errorf("decoding HTTP/2 headers: %w", err)
			}
			headers, inBlock = nil, false
			m := map[string]string{}
			for _, f := range fields {
				m[f.Name] = f.Value
			}
			if a.header == nil {
				a.header = m
			} else {
				a.trailer = m
			}
			if endStream {
				return a, nil
			}
		}
	}
}

// h2AppendFrame appends a frame to b.
func h2AppendFrame(b *bytes.Buffer, typ, flags byte, stream uint32, payload []byte) {
	n := len(payload)
	b.Write([]byte{byte(n >> 16), byte(n >> 8), byte(n), typ, flags})
	b.Write(binary.BigEndian.AppendUint32(nil, stream&0x7fffffff))
	b.Write(payload)
}

// h2ReadFrame reads one frame.
func h2ReadFrame(r io.Reader) (typ, flags byte, stream uint32, payload []byte, err error) {
	var head [9]byte
	if _, err = io.ReadFull(r, head[:]); err != nil {
		return
	}
	if bytes.HasPrefix(head[:], []byte("HTTP/1.")) {
		err = errors.New("the socket answers HTTP/1, not HTTP/2 gRPC: give a CRI runtime's socket (containerd's or CRI-O's)")
		return
	}
	n := int(head[0])<<16 | int(head[1])<<8 | int(head[2])
	if n > h2MaxFrame {
		err = fmt.Errorf("HTTP/2 frame of %d bytes, more than the %d allowed", n, h2MaxFrame)
		return
	}
	typ, flags, stream = head[3], head[4], binary.BigEndian.Uint32(head[5:])&0x7fffffff
	payload = make([]byte, n)
	if _, err = io.ReadFull(r, payload); errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return
}

// h2Unpad strips the padding of a PADDED frame.
func h2Unpad(flags byte, payload []byte) ([]byte, error) {
	if flags&h2FlagPadded == 0 {
		return payload, nil
	}
	if len(payload) < 1 || int(payload[0]) >= len(payload) {
		return nil, errors.New("bad HTTP/2 padding")
	}
	return payload[1 : len(payload)-int(payload[0])], nil
}
