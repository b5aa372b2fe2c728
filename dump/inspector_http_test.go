package dump

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// rawServer accepts one connection on loopback and hands it to serve.
func rawServer(t *testing.T, serve func(c net.Conn, r *bufio.Reader)) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		serve(c, bufio.NewReader(c))
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// readRequestHead reads a request's head and returns its headers.
func readRequestHead(r *bufio.Reader) map[string]string {
	h := map[string]string{}
	for l, _ := r.ReadString('\n'); l != "\r\n" && l != ""; l, _ = r.ReadString('\n') {
		if name, value, ok := strings.Cut(l, ": "); ok {
			h[name] = strings.TrimSpace(value)
		}
	}
	return h
}

// TestHTTPGetChunked: a chunked answer is read whole, a longer one cut at
// the limit.
func TestHTTPGetChunked(t *testing.T) {
	for _, limit := range []int64{1 << 20, 7} {
		addr := rawServer(t, func(c net.Conn, r *bufio.Reader) {
			readRequestHead(r)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\n[{\"a\"\r\n4\r\n:1}]\r\n0\r\n\r\n")
		})
		h, body, err := (&netnsDialer{}).httpGet(t.Context(), addr, "/json/list", limit)
		want := `[{"a":1}]`[:min(9, limit)]
		if err != nil || h.code != 200 || string(body) != want {
			t.Errorf("limit %d: %d %q %v, want %q", limit, h.code, body, err, want)
		}
	}
}

// TestWebSocketFrames: the client answers a ping, joins a fragmented
// message, and reports the server's close frame; the server sees the
// client's frames masked.
func TestWebSocketFrames(t *testing.T) {
	pong := make(chan string, 1)
	addr := rawServer(t, func(c net.Conn, r *bufio.Reader) {
		key := readRequestHead(r)["Sec-WebSocket-Key"]
		sum := sha1.Sum([]byte(key + wsGUID))
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+
			base64.StdEncoding.EncodeToString(sum[:])+"\r\n\r\n")
		c.Write([]byte{0x89, 2, 'h', 'i'})             // ping "hi"
		c.Write([]byte{0x01, 3, 'a', 'b', 'c'})        // text, not final
		c.Write([]byte{0x80, 126, 0, 2, 'd', 'e'})     // continuation, final, 16-bit length
		c.Write([]byte{0x88, 4, 0x03, 0xe8, 'o', 'k'}) // close 1000
		// The pong: final, opcode 10, masked, 2 bytes.
		var f [8]byte
		if _, err := io.ReadFull(r, f[:]); err == nil && f[0] == 0x8a && f[1] == 0x82 {
			pong <- string([]byte{f[6] ^ f[2], f[7] ^ f[3]})
		}
		close(pong)
		r.ReadByte() // until the client closes
	})
	ws, err := dialWebSocket(t.Context(), &netnsDialer{}, addr, "/x", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	msg, err := ws.Read(ctx)
	if err != nil || string(msg) != "abcde" {
		t.Errorf("first message %q, %v; want abcde", msg, err)
	}
	if got := <-pong; got != "hi" {
		t.Errorf("pong %q, want hi", got)
	}
	if _, err := ws.Read(ctx); !errors.Is(err, errWSClosed) || !strings.Contains(err.Error(), "1000") {
		t.Errorf("after the close frame: %v", err)
	}
}

// FuzzReadResponseHead: any answer head parses or fails, never panics.
func FuzzReadResponseHead(f *testing.F) {
	f.Add("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
	f.Add("HTTP/1.0 404\n\n")
	f.Fuzz(func(t *testing.T, head string) {
		h, err := readResponseHead(bufio.NewReader(strings.NewReader(head)))
		if err == nil && (h.code < 0 || h.header == nil) {
			t.Errorf("%q: %+v", head, h)
		}
	})
}

// TestWebSocketOutlivesDialContext: a websocket opened under a context
// with a deadline still reads after that deadline.
func TestWebSocketOutlivesDialContext(t *testing.T) {
	expired := make(chan struct{})
	addr := rawServer(t, func(c net.Conn, r *bufio.Reader) {
		key := readRequestHead(r)["Sec-WebSocket-Key"]
		sum := sha1.Sum([]byte(key + wsGUID))
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+
			base64.StdEncoding.EncodeToString(sum[:])+"\r\n\r\n")
		<-expired
		c.Write([]byte{0x81, 2, 'o', 'k'})
		r.ReadByte() // until the client closes
	})
	dctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	ws, err := dialWebSocket(dctx, &netnsDialer{}, addr, "/x", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	<-dctx.Done() // the dial context's deadline has passed
	close(expired)
	defer ws.Close()
	if msg, err := ws.Read(t.Context()); err != nil || string(msg) != "ok" {
		t.Errorf("read after the dial context's deadline: %q, %v", msg, err)
	}
}

// endless is a peer that streams a byte forever and never a newline.
type endless byte

func (e endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(e)
	}
	return len(p), nil
}

// TestEndlessLinesAreCut: a peer that never ends a line (any service that
// streams, probed for an inspector) is cut off at the bound, not buffered
// until memdiag runs out of memory.
func TestEndlessLinesAreCut(t *testing.T) {
	head := bufio.NewReader(io.MultiReader(strings.NewReader("HTTP/1.1 200 OK\r\nX: "), endless('a')))
	if _, err := readResponseHead(head); err == nil || !strings.Contains(err.Error(), "too large") {
		t.Errorf("an endless header line: %v, want the head too large", err)
	}
	status := bufio.NewReader(endless('b'))
	if _, err := readResponseHead(status); err == nil || !strings.Contains(err.Error(), "too large") {
		t.Errorf("an endless status line: %v, want the head too large", err)
	}
	chunks := bufio.NewReader(io.MultiReader(strings.NewReader("5\r\nhello\r\n"), endless('1')))
	b, err := readChunked(chunks, 1<<20)
	if err == nil || !strings.Contains(err.Error(), "too long") || string(b) != "hello" {
		t.Errorf("an endless chunk-size line: %q, %v; want hello and the line too long", b, err)
	}
}

// TestContentLengthShortAnswer: an answer that ends before its
// Content-Length says so, and a Content-Length with a sign is refused.
func TestContentLengthShortAnswer(t *testing.T) {
	for _, tc := range []struct{ answer, want string }{
		{"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "ended after 5 of its 10 bytes"},
		{"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello", "bad Content-Length"},
	} {
		answer := tc.answer
		addr := rawServer(t, func(c net.Conn, r *bufio.Reader) {
			readRequestHead(r)
			io.WriteString(c, answer)
		})
		_, _, err := (&netnsDialer{}).httpGet(t.Context(), addr, "/json/list", 1<<20)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("answer %q: %v, want %q", tc.answer, err, tc.want)
		}
	}
}
