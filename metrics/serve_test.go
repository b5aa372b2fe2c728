package metrics

import (
	"bufio"
	"context"
	"io"
	"net"
	"strings"
	"testing"
)

// TestServeRequests: what the hand-written server answers to the requests
// a scraper, a browser or a stray client sends, over a real connection.
func TestServeRequests(t *testing.T) {
	e := New(Labels{Version: "v1"})
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.ServeListener(ctx, ln) }()
	for _, c := range []struct {
		request, status, body string
	}{
		{"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 200 OK", "memdiag_build_info"},
		{"GET http://a/metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK", "# TYPE go_goroutines gauge"},
		{"HEAD /metrics HTTP/1.0\r\n\r\n", "HTTP/1.1 200 OK", ""},
		{"GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK", "memdiag: metrics at /metrics"},
		{"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "HTTP/1.1 405 Method Not Allowed", "method not allowed"},
		{"GET /nothing HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found", "404"},
		{"hello\r\n\r\n", "HTTP/1.1 400 Bad Request", ""},
		{"GET / HTTP/1.1\r\nX: " + strings.Repeat("a", maxHeader) + "\r\n\r\n", "HTTP/1.1 431 Request Header Fields Too Large", ""},
	} {
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		go io.WriteString(conn, c.request)
		answer, err := io.ReadAll(bufio.NewReader(conn))
		conn.Close()
		if err != nil {
			t.Fatalf("%.30q: %v", c.request, err)
		}
		head, body, _ := strings.Cut(string(answer), "\r\n\r\n")
		if !strings.HasPrefix(head, c.status+"\r\n") || !strings.Contains(body, c.body) || c.body == "" && strings.HasPrefix(c.request, "HEAD") && body != "" {
			t.Errorf("%.30q: answered %.200q", c.request, answer)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("ServeListener after cancel: %v", err)
	}
}

// FuzzReadRequest: any request head gives a method and path or a status.
func FuzzReadRequest(f *testing.F) {
	f.Add("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
	f.Add("GET http://h HTTP/1.0\n\n")
	f.Fuzz(func(t *testing.T, head string) {
		method, path, status := readRequest(bufio.NewReader(strings.NewReader(head)))
		if status == 200 && (method == "" || !strings.HasPrefix(path, "/") && path != "") {
			t.Errorf("%q: method %q path %q", head, method, path)
		}
	})
}
