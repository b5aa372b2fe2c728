package httpreq

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"unsafe"
)

// FuzzLineCache: after any request went through the cache, any other one
// is named as Parse names it.
func FuzzLineCache(f *testing.F) {
	f.Add([]byte("GET /a?k=v HTTP/1.1\r\nHost: x\r\n\r\n"), []byte("GET /a?k=v HTTP/1.1\r\n"))
	f.Add([]byte("GET / HT\r\n"), []byte("GET / HT\r\nHost: x\r\n"))
	f.Add([]byte("GET /a b HTTP/1.1\r\n"), []byte("GET /a b HTTP/1.1\r\n\r\n"))
	f.Add([]byte("GET /x HTTP/1.0\r\n"), []byte("GET /x HTTP/1.1\r\n"))
	f.Fuzz(func(t *testing.T, first, then []byte) {
		c := lineCache{}
		c.parse(first)
		got, err := c.parse(then)
		want, wantErr := Parse(then, Options{})
		if got != want || !errors.Is(err, wantErr) {
			t.Fatalf("after %q, %q named %+v, %v; Parse: %+v, %v", first, then, got, err, want, wantErr)
		}
	})
}

// TestLineCacheBounded: a new line every time keeps at most maxLines, in
// the one table made first (a full cache is cleared, not replaced: a new
// table regrown every maxLines lines was garbage the size of the cache).
func TestLineCacheBounded(t *testing.T) {
	c := lineCache{}
	var table unsafe.Pointer
	for i := range 3 * maxLines {
		if _, err := c.parse(fmt.Appendf(nil, "GET /u%d HTTP/1.1\r\n", i)); err != nil {
			t.Fatal(err)
		}
		if len(c.m) > maxLines {
			t.Fatalf("%d lines kept", len(c.m))
		}
		if table == nil {
			table = reflect.ValueOf(c.m).UnsafePointer()
		} else if reflect.ValueOf(c.m).UnsafePointer() != table {
			t.Fatalf("line %d: a new table", i)
		}
	}
}

// TestBeginSeenLineAllocatesNothing: a keep-alive connection's next
// request, a line seen before, is named without a heap allocation (issue
// #15: memdiag reads ~100k of them a second under a plain Node.js server).
func TestBeginSeenLineAllocatesNothing(t *testing.T) {
	c := NewConns(Options{})
	req := []byte("GET /api/orders?limit=5 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n")
	k := ConnKey{PID: 1, FD: 5}
	if _, err := c.Begin(k, req); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = c.Begin(k, req) }); n != 0 {
		t.Errorf("Begin allocated %v times a request", n)
	}
}
