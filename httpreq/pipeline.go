package httpreq

import (
	"bytes"
	"strconv"
	"unicode/utf8"
)

// Bounds of a Pipeline: what the kernel hands over is bounded already
// (OP_BEGIN's bytes, then at most 2 KiB per read); these keep a hostile
// client from growing memdiag through them.
const (
	maxPipelineBuf   = 16 << 10 // bytes of unsplit requests kept per connection
	maxPipelineQueue = 256      // requests waiting for their response per connection
)

// Pipeline names the pipelined HTTP/1.1 requests of one connection, in
// order. The kernel begins an op with the first request of a read and
// hands over the read's bytes; every request after the first waits in the
// queue until the server starts its response, when the kernel begins its
// op and Next names it. Requests are split by their header block and
// Content-Length; a chunked request body ends the splitting (its successors
// stay unnamed rather than misnamed).
type Pipeline struct {
	opts      Options
	buf       []byte    // bytes not split yet
	skipFirst bool      // buf starts with the request the op itself is named by
	stuck     bool      // the bytes cannot be split any further (chunked body, garbage)
	queue     []Request // requests read and not answered yet, oldest first
}

// NewPipeline returns an empty pipeline whose names keep what opts says.
func NewPipeline(opts Options) *Pipeline { return &Pipeline{opts: opts} }

// Begin takes the bytes of a read that began an op named after its first
// request (data: that request first). Requests still queued stay queued:
// their responses come first.
func (p *Pipeline) Begin(data []byte) {
	p.buf = append(p.buf[:0], data...)
	p.skipFirst, p.stuck = true, false
	p.split()
}

// More takes more bytes of the same read (the kernel sends them apart when
// they do not fit the op's first record).
func (p *Pipeline) More(data []byte) {
	if p.stuck {
		return
	}
	if len(p.buf)+len(data) > maxPipelineBuf {
		data = data[:max(0, maxPipelineBuf-len(p.buf))]
	}
	p.buf = append(p.buf, data...)
	p.split()
}

// Requests takes a later read that starts with a request while the op's
// own request is still being read: every request in it is pipelined.
func (p *Pipeline) Requests(data []byte) {
	if len(data) > maxPipelineBuf {
		data = data[:maxPipelineBuf]
	}
	p.buf = append(p.buf[:0], data...)
	p.skipFirst, p.stuck = false, false
	p.split()
}

// Next returns the oldest request waiting for its response, and false when
// none is known.
func (p *Pipeline) Next() (Request, bool) {
	if len(p.queue) == 0 {
		// A last request whose end was not seen (bounded bytes) is still
		// the next one when its request line is whole.
		if !p.skipFirst && len(p.buf) > 0 {
			r, err := Parse(p.buf, p.opts)
			p.buf, p.stuck = p.buf[:0], true
			if err == nil && !r.Truncated {
				return r, true
			}
		}
		return Request{}, false
	}
	r := p.queue[0]
	p.queue = p.queue[1:]
	return r, true
}

// Pending says how many requests wait for their response.
func (p *Pipeline) Pending() int { return len(p.queue) }

// split moves the whole requests at the start of buf into the queue.
func (p *Pipeline) split() {
	for !p.stuck && len(p.buf) > 0 {
		n := RequestLen(p.buf)
		if n == 0 {
			return // not all of it yet
		}
		if n < 0 {
			p.stuck, p.buf = true, p.buf[:0]
			return
		}
		if p.skipFirst {
			p.skipFirst = false
		} else {
			r, err := Parse(p.buf[:n], p.opts)
			if err != nil {
				p.stuck, p.buf = true, p.buf[:0]
				return
			}
			if len(p.queue) < maxPipelineQueue {
				p.queue = append(p.queue, r)
			}
		}
		p.buf = p.buf[:copy(p.buf, p.buf[n:])]
	}
}

var (
	crlf          = []byte("\r\n")
	crlf2         = []byte("\r\n\r\n")
	colon         = []byte(":")
	contentLength = []byte("content-length")
	transferEnc   = []byte("transfer-encoding")
	identity      = []byte("identity")
)

// RequestLen returns the length of the HTTP/1.x request at the start of b:
// its header block and its Content-Length body. It returns 0 when b does
// not hold all of it yet, and -1 when its end cannot be found from its
// headers (not a request line, a chunked body, a bad Content-Length). It
// runs on every request read, so it scans the headers in place.
func RequestLen(b []byte) int {
	if sp := indexByte(b, ' ', 8); sp <= 0 || !methods[string(b[:sp])] {
		if len(b) >= 8 || sp > 0 {
			return -1
		}
		return 0
	}
	end := bytes.Index(b, crlf2)
	if end < 0 {
		return 0
	}
	body := 0
	_, rest, more := bytes.Cut(b[:end], crlf) // past the request line
	for more {
		var line []byte
		line, rest, more = bytes.Cut(rest, crlf)
		name, value, ok := bytes.Cut(line, colon)
		if !ok {
			return -1
		}
		name, value = bytes.TrimSpace(name), bytes.TrimSpace(value)
		switch {
		case headerIs(name, contentLength):
			n, ok := contentLen(value)
			if !ok {
				return -1
			}
			body = n
		case headerIs(name, transferEnc):
			if !bytes.EqualFold(value, identity) {
				return -1
			}
		}
	}
	total := end + len(crlf2) + body
	if total > len(b) {
		return 0
	}
	return total
}

// headerIs says whether a header's name is want (lower case) once
// lowered. ASCII names, all of them in practice, compare in place; others
// are lowered as Unicode lowers them (the Kelvin sign is a k).
func headerIs(name, want []byte) bool {
	for _, c := range name {
		if c >= utf8.RuneSelf {
			return bytes.Equal(bytes.ToLower(name), want)
		}
	}
	return len(name) == len(want) && bytes.EqualFold(name, want)
}

// contentLen reads a Content-Length value: a decimal from 0 to 1 GiB.
// Plain digits are read in place; anything else goes through strconv.Atoi
// (a sign, an error), whose string is an allocation.
func contentLen(v []byte) (int, bool) {
	n := 0
	for i, c := range v {
		if c < '0' || c > '9' || i == 10 {
			n, err := strconv.Atoi(string(v))
			return n, err == nil && n >= 0 && n <= 1<<30
		}
		n = n*10 + int(c-'0')
	}
	return n, len(v) > 0 && n <= 1<<30
}
