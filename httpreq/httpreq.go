// Package httpreq names served requests from the bytes the kernel hands
// over, and drops query-string values before any log, report or
// recording can see them.
//
//   - Parse: an HTTP/1.x request line.
//   - Pipeline: the pipelined requests of one HTTP/1.1 connection, split
//     by header block and Content-Length, named in order as their
//     responses start.
//   - H2Conn: the streams of one HTTP/2 connection, from its HEADERS
//     frames through an HPACK decoder (golang.org/x/net/http2/hpack) that
//     follows the client's dynamic table; gRPC calls named by
//     service/method.
//   - Message: a client's WebSocket message, named after the request that
//     upgraded its connection.
//   - Conns: that state for every served connection, keyed by process
//     and fd, bounded; and the requests of the request lines seen last
//     (bounded too), so a line that comes again makes no new strings.
//
// Header values other than the pseudo-headers and content-type are never
// kept, nor are bodies.
package httpreq

import (
	"errors"
	"strings"

	"github.com/memdiag/memdiag/event"
)

// Request is a parsed request line: event.Request, the value the tracer
// puts in an event.OpBegin.
type Request = event.Request

// Sentinel errors of Parse.
var (
	ErrNotHTTP   = errors.New("not an HTTP/1.x request line")
	ErrBadTarget = errors.New("malformed request target")
)

var methods = map[string]bool{
	"GET": true, "POST": true, "PUT": true, "DELETE": true, "PATCH": true,
	"HEAD": true, "OPTIONS": true, "CONNECT": true, "TRACE": true,
}

// maxTarget bounds what is kept of a target.
const maxTarget = 512

// Options change what Parse keeps.
type Options struct {
	KeepQueryValues bool // keep query values (off by default: they carry secrets)
}

// Parse parses the request line at the start of b.
func Parse(b []byte, opts Options) (Request, error) {
	sp := indexByte(b, ' ', 8)
	if sp <= 0 || !methods[string(b[:sp])] {
		return Request{}, ErrNotHTTP
	}
	r := Request{Method: string(b[:sp])}
	rest := b[sp+1:]
	end := indexByte(rest, ' ', len(rest))
	target := rest
	if end >= 0 {
		target = rest[:end]
		if !strings.HasPrefix(string(rest[end+1:]), "HTTP/1.") && len(rest[end+1:]) >= 7 {
			return Request{}, ErrNotHTTP
		}
	} else {
		r.Truncated = true
	}
	if len(target) == 0 {
		return Request{}, ErrBadTarget
	}
	if len(target) > maxTarget {
		target, r.Truncated = target[:maxTarget], true
	}
	for _, c := range target {
		if c <= 0x20 || c >= 0x7f {
			return Request{}, ErrBadTarget
		}
	}
	t := string(target)
	switch {
	case t[0] == '/', t == "*":
	case strings.HasPrefix(t, "http://"), strings.HasPrefix(t, "https://"):
		t = t[strings.Index(t, "//")+2:]
		if i := strings.IndexAny(t, "/?"); i >= 0 {
			t = t[i:]
		} else {
			t = "/"
		}
		if t[0] == '?' {
			t = "/" + t
		}
	default:
		if r.Method != "CONNECT" {
			return Request{}, ErrBadTarget
		}
	}
	r.Path, r.Query, _ = strings.Cut(t, "?")
	if i := strings.IndexByte(r.Path, '#'); i >= 0 {
		r.Path = r.Path[:i]
	}
	if !opts.KeepQueryValues {
		r.Query = RedactQuery(r.Query)
	}
	return r, nil
}

// RedactQuery keeps a query's keys and replaces every value with "…".
func RedactQuery(q string) string {
	if q == "" {
		return ""
	}
	parts := strings.Split(q, "&")
	out := parts[:0]
	for _, p := range parts {
		k, _, hasValue := strings.Cut(p, "=")
		if k == "" && !hasValue {
			continue
		}
		if hasValue {
			k += "=…"
		}
		out = append(out, k)
	}
	return strings.Join(out, "&")
}

// indexByte is bytes.IndexByte limited to the first n bytes.
func indexByte(b []byte, c byte, n int) int {
	for i := 0; i < len(b) && i < n; i++ {
		if b[i] == c {
			return i
		}
	}
	return -1
}
