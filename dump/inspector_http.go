package dump

// The inspector speaks HTTP/1.1 (its /json/list) and websockets (the
// DevTools protocol). memdiag needs one GET and one websocket client, so
// both are written here, on connections from netnsDialer, rather than
// with net/http and a websocket library: net/http's package initializers
// (crypto/tls, x509 and the rest) cost every memdiag process about 3 MiB
// of resident memory, dumping or not (BENCHMARKS.md).

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// maxResponseHead bounds the status line and headers of an answer.
const maxResponseHead = 64 << 10

// errWSClosed says the peer sent a websocket close frame.
var errWSClosed = errors.New("websocket closed by the peer")

// bindContext makes ctx's end interrupt c's reads and writes; the
// returned function undoes it, deadline included (a websocket outlives the
// context it was opened with).
func bindContext(ctx context.Context, c net.Conn) (unbind func()) {
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	return func() {
		if stop() {
			c.SetDeadline(time.Time{})
		}
	}
}

// ctxErr prefers ctx's error to err when ctx has ended: a read cut short
// by bindContext says "i/o timeout", not why.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return err
}

// responseHead is an answer's status and headers (names lower-cased).
type responseHead struct {
	code   int
	status string // "404 Not Found"
	header map[string]string
}

// maxChunkLine bounds a chunk-size line of a chunked body.
const maxChunkLine = 4 << 10

// errLineTooLong: a peer sent more than a line may hold without ending it.
var errLineTooLong = errors.New("line too long")

// readLine reads one line, its end ("\r\n" or "\n") cut off, and fails
// as soon as it passes max bytes: bufio's ReadString keeps whatever a peer
// sends until a newline, gigabytes from a socket that streams without one.
func readLine(r *bufio.Reader, max int) (string, error) {
	var line []byte
	for {
		frag, err := r.ReadSlice('\n')
		if len(line)+len(frag) > max {
			return "", errLineTooLong
		}
		line = append(line, frag...)
		if err == bufio.ErrBufferFull {
			continue
		}
		return strings.TrimRight(string(line), "\r\n"), err
	}
}

// readResponseHead reads the status line and headers of an HTTP/1.x
// answer, at most maxResponseHead bytes of them.
func readResponseHead(r *bufio.Reader) (responseHead, error) {
	var h responseHead
	n := 0
	line := func() (string, error) {
		s, err := readLine(r, maxResponseHead-n)
		n += len(s) + 2
		if errors.Is(err, errLineTooLong) {
			err = errors.New("answer's head too large")
		}
		return s, err
	}
	status, err := line()
	if err != nil {
		return h, err
	}
	proto, rest, _ := strings.Cut(status, " ")
	if !strings.HasPrefix(proto, "HTTP/1.") || len(rest) < 3 {
		return h, fmt.Errorf("not an HTTP/1 answer: %.60q", status)
	}
	if h.code, err = strconv.Atoi(rest[:3]); err != nil {
		return h, fmt.Errorf("not an HTTP/1 answer: %.60q", status)
	}
	h.status = rest
	h.header = map[string]string{}
	for {
		l, err := line()
		if err != nil {
			return h, err
		}
		if l == "" {
			return h, nil
		}
		name, value, ok := strings.Cut(l, ":")
		if !ok {
			return h, fmt.Errorf("bad header line %.60q", l)
		}
		h.header[strings.ToLower(strings.TrimSpace(name))] = strings.TrimSpace(value)
	}
}

// httpGet sends GET path to addr through d on a connection of its own,
// and returns the answer's head and at most limit bytes of its body.
func (d *netnsDialer) httpGet(ctx context.Context, addr netip.AddrPort, path string, limit int64) (responseHead, []byte, error) {
	c, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return responseHead{}, nil, err
	}
	defer c.Close()
	defer bindContext(ctx, c)()
	req := "GET " + path + " HTTP/1.1\r\nHost: " + addr.String() + "\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		return responseHead{}, nil, ctxErr(ctx, err)
	}
	br := bufio.NewReader(c)
	h, err := readResponseHead(br)
	if err != nil {
		return h, nil, ctxErr(ctx, err)
	}
	var b []byte
	switch {
	case strings.EqualFold(h.header["transfer-encoding"], "chunked"):
		b, err = readChunked(br, limit)
	case h.header["content-length"] != "":
		cl := h.header["content-length"]
		n, perr := strconv.ParseInt(cl, 10, 64)
		if perr != nil || n < 0 || strings.Trim(cl, "0123456789") != "" {
			return h, nil, fmt.Errorf("bad Content-Length %q", cl)
		}
		b, err = io.ReadAll(io.LimitReader(br, min(n, limit)))
		if err == nil && int64(len(b)) < min(n, limit) {
			err = fmt.Errorf("the answer ended after %d of its %d bytes: %w", len(b), n, io.ErrUnexpectedEOF)
		}
	default: // to the end of the connection
		b, err = io.ReadAll(io.LimitReader(br, limit))
	}
	return h, b, ctxErr(ctx, err)
}

// readChunked reads a chunked HTTP/1.1 body, at most limit bytes of it
// (the rest is left unread).
func readChunked(r *bufio.Reader, limit int64) ([]byte, error) {
	var b []byte
	for {
		line, err := readLine(r, maxChunkLine)
		if errors.Is(err, errLineTooLong) {
			return b, errors.New("chunk size line too long")
		}
		if err != nil {
			return b, io.ErrUnexpectedEOF
		}
		size, _, _ := strings.Cut(strings.TrimSpace(line), ";")
		n, err := strconv.ParseInt(size, 16, 64)
		if err != nil || n < 0 {
			return b, fmt.Errorf("bad chunk size %.20q", line)
		}
		if n == 0 {
			return b, nil // trailers are not read: the connection closes
		}
		n = min(n, limit-int64(len(b)))
		start := len(b)
		b = append(b, make([]byte, n)...)
		if _, err := io.ReadFull(r, b[start:]); err != nil {
			return b[:start], io.ErrUnexpectedEOF
		}
		if int64(len(b)) == limit {
			return b, nil
		}
		if _, err := r.Discard(2); err != nil {
			return b, io.ErrUnexpectedEOF
		}
	}
}

// wsConn is the client side of a websocket (RFC 6455): text messages,
// no extensions. It is synchronous and has no goroutine: reading answers
// pings.
type wsConn struct {
	c         net.Conn
	r         *bufio.Reader
	readLimit int64 // the largest message accepted
}

// wsGUID is what a server appends to the client's key (RFC 6455 1.3).
const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// WebSocket opcodes.
const (
	wsContinuation = 0x0
	wsText         = 0x1
	wsBinary       = 0x2
	wsClose        = 0x8
	wsPing         = 0x9
	wsPong         = 0xa
)

// dialWebSocket opens a websocket at path on addr through d.
func dialWebSocket(ctx context.Context, d *netnsDialer, addr netip.AddrPort, path string, readLimit int64) (*wsConn, error) {
	c, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return nil, err
	}
	ws, err := handshake(ctx, c, addr, path)
	if err == nil && ctx.Err() != nil {
		// Ended between the handshake and its unbinding: the
		// connection may keep the past deadline bindContext set.
		err = context.Cause(ctx)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	ws.readLimit = readLimit
	return ws, nil
}

func handshake(ctx context.Context, c net.Conn, addr netip.AddrPort, path string) (*wsConn, error) {
	if strings.ContainsFunc(path, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return nil, fmt.Errorf("websocket path %.60q: spaces or control characters", path)
	}
	defer bindContext(ctx, c)()
	var nonce [16]byte
	rand.Read(nonce[:])
	key := base64.StdEncoding.EncodeToString(nonce[:])
	req := "GET " + path + " HTTP/1.1\r\nHost: " + addr.String() + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		return nil, ctxErr(ctx, err)
	}
	br := bufio.NewReader(c)
	h, err := readResponseHead(br)
	if err != nil {
		return nil, ctxErr(ctx, err)
	}
	if h.code != 101 {
		return nil, fmt.Errorf("the server answered %s, not 101 Switching Protocols", h.status)
	}
	sum := sha1.Sum([]byte(key + wsGUID))
	if !strings.EqualFold(h.header["upgrade"], "websocket") || h.header["sec-websocket-accept"] != base64.StdEncoding.EncodeToString(sum[:]) {
		return nil, errors.New("the server's answer is not a websocket handshake")
	}
	return &wsConn{c: c, r: br}, nil
}

// Close closes the connection at once, with no closing handshake.
func (w *wsConn) Close() error { return w.c.Close() }

// writeFrame sends one final frame, masked as a client must.
func (w *wsConn) writeFrame(opcode byte, payload []byte) error {
	b := make([]byte, 0, 14+len(payload))
	b = append(b, 0x80|opcode)
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	var mask [4]byte
	rand.Read(mask[:])
	b = append(b, mask[:]...)
	for i, c := range payload {
		b = append(b, c^mask[i&3])
	}
	_, err := w.c.Write(b)
	return err
}

// WriteText sends msg as one text message; ctx's end closes the
// connection.
func (w *wsConn) WriteText(ctx context.Context, msg []byte) error {
	stop := context.AfterFunc(ctx, func() { w.c.Close() })
	defer stop()
	return ctxErr(ctx, w.writeFrame(wsText, msg))
}

// Read returns the next data message, answering pings on the way; ctx's
// end closes the connection. A close frame gives errWSClosed.
func (w *wsConn) Read(ctx context.Context) ([]byte, error) {
	stop := context.AfterFunc(ctx, func() { w.c.Close() })
	defer stop()
	msg, err := w.read()
	return msg, ctxErr(ctx, err)
}

func (w *wsConn) read() ([]byte, error) {
	var msg []byte
	started := false
	for {
		var head [2]byte
		if _, err := io.ReadFull(w.r, head[:]); err != nil {
			return nil, err
		}
		fin, opcode := head[0]&0x80 != 0, head[0]&0x0f
		if head[0]&0x70 != 0 {
			return nil, errors.New("websocket frame with reserved bits set (no extension was agreed)")
		}
		n := int64(head[1] & 0x7f)
		switch n {
		case 126:
			var b [2]byte
			if _, err := io.ReadFull(w.r, b[:]); err != nil {
				return nil, err
			}
			n = int64(binary.BigEndian.Uint16(b[:]))
		case 127:
			var b [8]byte
			if _, err := io.ReadFull(w.r, b[:]); err != nil {
				return nil, err
			}
			if v := binary.BigEndian.Uint64(b[:]); v > 1<<62 {
				return nil, errors.New("websocket frame too large")
			} else {
				n = int64(v)
			}
		}
		var mask [4]byte
		masked := head[1]&0x80 != 0
		if masked {
			if _, err := io.ReadFull(w.r, mask[:]); err != nil {
				return nil, err
			}
		}
		if opcode >= wsClose && (n > 125 || !fin) {
			return nil, errors.New("websocket control frame too large or fragmented")
		}
		if opcode < wsClose && int64(len(msg))+n > w.readLimit {
			return nil, fmt.Errorf("websocket message larger than %d bytes", w.readLimit)
		}
		start := len(msg)
		msg = append(msg, make([]byte, n)...)
		if _, err := io.ReadFull(w.r, msg[start:]); err != nil {
			return nil, err
		}
		payload := msg[start:]
		if masked {
			for i := range payload {
				payload[i] ^= mask[i&3]
			}
		}
		switch opcode {
		case wsClose:
			code := "no status"
			if len(payload) >= 2 {
				code = strconv.Itoa(int(binary.BigEndian.Uint16(payload)))
			}
			return nil, fmt.Errorf("%w (status %s)", errWSClosed, code)
		case wsPing:
			if err := w.writeFrame(wsPong, payload); err != nil {
				return nil, err
			}
			msg = msg[:start]
			continue
		case wsPong:
			msg = msg[:start]
			continue
		case wsText, wsBinary:
			if started {
				return nil, errors.New("websocket message started inside another")
			}
			started = true
		case wsContinuation:
			if !started {
				return nil, errors.New("websocket continuation without a message")
			}
		default:
			return nil, fmt.Errorf("websocket frame of unknown opcode %d", opcode)
		}
		if fin {
			return msg, nil
		}
	}
}
