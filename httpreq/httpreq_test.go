package httpreq

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Request
		err  error
	}{
		{"GET /api/records HTTP/1.1\r\nHost: x\r\n", Request{Method: "GET", Path: "/api/records"}, nil},
		{"POST /api/voice/42?token=secret&limit=10 HTTP/1.1\r\n", Request{Method: "POST", Path: "/api/voice/42", Query: "token=…&limit=…"}, nil},
		{"GET /a?flag&x= HTTP/1.0\r\n", Request{Method: "GET", Path: "/a", Query: "flag&x=…"}, nil},
		{"GET http://example.com:8080/p/q?k=v HTTP/1.1\r\n", Request{Method: "GET", Path: "/p/q", Query: "k=…"}, nil},
		{"GET http://example.com HTTP/1.1\r\n", Request{Method: "GET", Path: "/"}, nil},
		{"OPTIONS * HTTP/1.1\r\n", Request{Method: "OPTIONS", Path: "*"}, nil},
		{"GET /very/long/path/that/was/cut", Request{Method: "GET", Path: "/very/long/path/that/was/cut", Truncated: true}, nil},
		{"GET /frag#x HTTP/1.1\r\n", Request{Method: "GET", Path: "/frag"}, nil},
		{"HTTP/1.1 200 OK\r\n", Request{}, ErrNotHTTP},
		{"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", Request{}, ErrNotHTTP},
		{"GETX /a HTTP/1.1", Request{}, ErrNotHTTP},
		{"GET  HTTP/1.1", Request{}, ErrBadTarget},
		{"GET /a\x00b HTTP/1.1", Request{}, ErrBadTarget},
		{"GET relative HTTP/1.1", Request{}, ErrBadTarget},
		{"GET /a SMTP/1.0\r\n", Request{}, ErrNotHTTP},
		{"", Request{}, ErrNotHTTP},
	} {
		got, err := Parse([]byte(tc.in), Options{})
		if !errors.Is(err, tc.err) || got != tc.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v, %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestKeepQueryValues(t *testing.T) {
	got, err := Parse([]byte("GET /s?q=cats HTTP/1.1\r\n"), Options{KeepQueryValues: true})
	if err != nil || got.Query != "q=cats" {
		t.Fatalf("got %+v, %v", got, err)
	}
}

func TestLongTargetIsBounded(t *testing.T) {
	got, err := Parse([]byte("GET /"+strings.Repeat("a", 64<<10)+" HTTP/1.1\r\n"), Options{})
	if err != nil || !got.Truncated || len(got.Path) != maxTarget {
		t.Fatalf("len %d truncated %v err %v", len(got.Path), got.Truncated, err)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"GET / HTTP/1.1\r\n", "POST /a?b=c&d HTTP/1.0\r\n", "GET http://h/x?y=z HTTP/1.1", "\x16\x03", "PUT *"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Parse(b, Options{})
		if err != nil {
			return
		}
		if !methods[r.Method] || len(r.Path) > maxTarget || !utf8.ValidString(r.Path+r.Query) {
			t.Fatalf("bad result %+v from %q", r, b)
		}
		if strings.ContainsAny(r.Path, " \r\n") {
			t.Fatalf("path with whitespace %q", r.Path)
		}
		// Redacted: no value survives.
		for _, kv := range strings.Split(r.Query, "&") {
			if _, v, ok := strings.Cut(kv, "="); ok && v != "…" {
				t.Fatalf("query value leaked: %q", r.Query)
			}
		}
	})
}
