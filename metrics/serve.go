package metrics

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// This file is the metrics endpoint: a small HTTP/1.1 server that answers
// GET (and HEAD) of /metrics and /, one request per connection. It is
// written here rather than with net/http, whose package initializers
// (crypto/tls, x509 and the rest) cost every memdiag process about 3 MiB of
// resident memory, serving metrics or not (BENCHMARKS.md).

// Bounds on one scrape: the request's head must arrive within
// headerTimeout and fit in maxHeader bytes; the answer must be taken within
// writeTimeout.
const (
	headerTimeout = 10 * time.Second
	writeTimeout  = 30 * time.Second
	maxHeader     = 64 << 10
)

// serve answers on ln until ctx ends (ServeListener), with what write
// writes at /metrics. Then it closes ln and waits for the scrapes in
// flight, at most shutdownTimeout.
func serve(ctx context.Context, ln net.Listener, write func(io.Writer)) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
	)
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var serveErr error
	for delay := time.Duration(0); ; {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if errors.Is(err, net.ErrClosed) {
				serveErr = fmt.Errorf("serving metrics on %s: %w", ln.Addr(), err)
				break
			}
			// Out of file descriptors and the like: wait and retry, as
			// net/http's server does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			time.Sleep(delay)
			continue
		}
		delay = 0
		mu.Lock()
		conns[c] = true
		mu.Unlock()
		wg.Go(func() {
			answer(c, write)
			c.Close()
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		})
	}
	ln.Close()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return serveErr
	case <-time.After(shutdownTimeout):
	}
	mu.Lock()
	for c := range conns {
		c.Close()
	}
	mu.Unlock()
	<-done
	return errors.Join(serveErr, fmt.Errorf("shutting down the metrics server: scrapes still in flight after %s", shutdownTimeout))
}

// answer reads one request from c and writes its answer.
func answer(c net.Conn, write func(io.Writer)) {
	c.SetReadDeadline(time.Now().Add(headerTimeout))
	method, path, status := readRequest(bufio.NewReaderSize(io.LimitReader(c, maxHeader), 4096))
	c.SetWriteDeadline(time.Now().Add(writeTimeout))
	var body bytes.Buffer
	ctype := "text/plain; charset=utf-8"
	header := ""
	switch {
	case status != 200:
		body.WriteString(statusText(status) + "\n")
	case method != "GET" && method != "HEAD":
		status, header = 405, "Allow: GET, HEAD\r\n"
		body.WriteString("method not allowed\n")
	case path == "/metrics":
		write(&body)
		ctype = contentType
	case path == "/":
		body.WriteString("memdiag: metrics at /metrics\n")
	default:
		status = 404
		body.WriteString("404 page not found\n")
	}
	head := "HTTP/1.1 " + strconv.Itoa(status) + " " + statusText(status) + "\r\n" +
		"Content-Type: " + ctype + "\r\n" +
		"Content-Length: " + strconv.Itoa(body.Len()) + "\r\n" +
		header + "Connection: close\r\n\r\n"
	if method == "HEAD" {
		body.Reset()
	}
	c.Write(append([]byte(head), body.Bytes()...))
	// Closing with unread bytes in the socket would reset the connection,
	// and the client could lose the answer: stop writing, then take what
	// it still sends, briefly.
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseWrite()
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		io.Copy(io.Discard, io.LimitReader(c, maxHeader))
	}
}

// readRequest reads a request's head and returns its method and path
// (without the query), or the status of what is wrong with it.
func readRequest(r *bufio.Reader) (method, path string, status int) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", "", 400
	}
	f := strings.Fields(line)
	if len(f) != 3 || !strings.HasPrefix(f[2], "HTTP/1.") {
		return "", "", 400
	}
	method, target := f[0], f[1]
	if rest, ok := strings.CutPrefix(target, "http://"); ok { // absolute form
		target = "/"
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			target = rest[i:]
		}
	}
	path, _, _ = strings.Cut(target, "?")
	if !strings.HasPrefix(path, "/") {
		return "", "", 400
	}
	n := len(line)
	for {
		line, err := r.ReadString('\n')
		n += len(line)
		if err != nil {
			if n >= maxHeader {
				return "", "", 431
			}
			return "", "", 400
		}
		if line == "\r\n" || line == "\n" {
			return method, path, 200
		}
	}
}

func statusText(status int) string {
	switch status {
	case 200:
		return "OK"
	case 400:
		return "Bad Request"
	case 404:
		return "Not Found"
	case 405:
		return "Method Not Allowed"
	case 431:
		return "Request Header Fields Too Large"
	}
	return "Error"
}
