package httpreq

import (
	"fmt"
	"strings"
	"testing"
)

func names(p *Pipeline) []string {
	var out []string
	for {
		r, ok := p.Next()
		if !ok {
			return out
		}
		out = append(out, r.Method+" "+r.Path)
	}
}

// TestPipelineOrder: the requests after the first of a read are named in
// order, bodies skipped by their Content-Length.
func TestPipelineOrder(t *testing.T) {
	read := "GET /a HTTP/1.1\r\nHost: x\r\n\r\n" +
		"POST /b HTTP/1.1\r\nContent-Length: 11\r\n\r\nGET /fake\r\n" +
		"DELETE /c/1?k=v HTTP/1.1\r\ncontent-length:0\r\n\r\n" +
		"GET /d HTTP/1.1\r\n\r\n"
	p := NewPipeline(Options{})
	p.Begin([]byte(read))
	if got, want := strings.Join(names(p), ","), "POST /b,DELETE /c/1,GET /d"; got != want {
		t.Errorf("pipelined = %s, want %s", got, want)
	}
}

// TestPipelineMore: a read longer than the op's first record comes in two
// parts; the requests are split across them.
func TestPipelineMore(t *testing.T) {
	var read strings.Builder
	for i := range 20 {
		fmt.Fprintf(&read, "GET /r/%d HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: test\r\n\r\n", i)
	}
	b := []byte(read.String())
	p := NewPipeline(Options{})
	p.Begin(b[:248])
	p.More(b[248:])
	got := names(p)
	if len(got) != 19 || got[0] != "GET /r/1" || got[18] != "GET /r/19" {
		t.Errorf("pipelined = %v, want /r/1../r/19", got)
	}
}

// TestPipelineCut: the last request of a cut read is named when its
// request line is whole, and nothing after it is guessed.
func TestPipelineCut(t *testing.T) {
	p := NewPipeline(Options{})
	p.Begin([]byte("GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nHo"))
	if got := strings.Join(names(p), ","); got != "GET /b,GET /c" {
		t.Errorf("pipelined = %s", got)
	}
	if _, ok := p.Next(); ok {
		t.Error("a request named after the bytes ran out")
	}
}

// TestPipelineChunked: a chunked body cannot be split: the requests after
// it stay unnamed rather than misnamed.
func TestPipelineChunked(t *testing.T) {
	p := NewPipeline(Options{})
	p.Begin([]byte("POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nGET\r\n0\r\n\r\nGET /b HTTP/1.1\r\n\r\n"))
	if got := names(p); len(got) != 0 {
		t.Errorf("named %v after a chunked body", got)
	}
}

// TestPipelineRequests: requests that came in a later read, while the
// first was still being read, are all pipelined.
func TestPipelineRequests(t *testing.T) {
	p := NewPipeline(Options{})
	p.Begin([]byte("GET /a HTTP/1.1\r\n\r\n"))
	p.Requests([]byte("GET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\n"))
	if got := strings.Join(names(p), ","); got != "GET /b,GET /c" {
		t.Errorf("pipelined = %s", got)
	}
}

func TestRequestLen(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int
	}{
		{"GET / HTTP/1.1\r\n\r\nrest", 18},
		{"GET / HTTP/1.1\r\nHost: a\r\n", 0},
		{"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nab", 0},
		{"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcdGET", 42},
		{"POST / HTTP/1.1\r\nContent-Length: -4\r\n\r\n", -1},
		{"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", -1},
		{"\x16\x03\x01\x02\x00\x01\x00\x01", -1},
		{"GE", 0},
		{"FOO / HTTP/1.1\r\n\r\n", -1},
		{"GET / HTTP/1.1\r\nno colon\r\n\r\n", -1},
		{"POST / HTTP/1.1\r\ncontent-LENGTH :  +2 \r\n\r\nab", 44},
		{"POST / HTTP/1.1\r\nContent-Length: 0002\r\n\r\nab", 43},
		{"POST / HTTP/1.1\r\nContent-Length: 10000000000\r\n\r\n", -1},
		{"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", -1},
		{"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", -1},
		{"POST / HTTP/1.1\r\nTransfer-Encoding: Identity\r\n\r\n", 48},
	} {
		if got := RequestLen([]byte(c.in)); got != c.want {
			t.Errorf("RequestLen(%q) = %d, want %d", c.in, got, c.want)
		}
	}
}

// FuzzPipeline: any bytes, cut anywhere: never a panic, never more names
// than requests, and every name a parsed request line with its query
// redacted.
func FuzzPipeline(f *testing.F) {
	f.Add([]byte("GET /a HTTP/1.1\r\n\r\nGET /b?x=1 HTTP/1.1\r\n\r\n"), uint16(10), true)
	f.Add([]byte("POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcPUT /c HTTP/1.1\r\n\r\n"), uint16(40), false)
	f.Add([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), uint16(3), true)
	f.Fuzz(func(t *testing.T, b []byte, cut uint16, begin bool) {
		p := NewPipeline(Options{})
		at := min(int(cut), len(b))
		if begin {
			p.Begin(b[:at])
		} else {
			p.Requests(b[:at])
		}
		p.More(b[at:])
		n := 0
		for {
			r, ok := p.Next()
			if !ok {
				break
			}
			n++
			if !methods[r.Method] || r.Path == "" || strings.ContainsAny(r.Path, " \r\n") {
				t.Fatalf("bad name %+v", r)
			}
			for _, kv := range strings.Split(r.Query, "&") {
				if _, v, ok := strings.Cut(kv, "="); ok && v != "…" {
					t.Fatalf("query value leaked: %q", r.Query)
				}
			}
		}
		if n > strings.Count(string(b), " HTTP/1.")+strings.Count(string(b), "\r\n")+1 {
			t.Fatalf("%d names from %q", n, b)
		}
	})
}
