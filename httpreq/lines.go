package httpreq

import (
	"bytes"
	"hash/maphash"
)

// maxLines bounds the request lines a lineCache remembers: a service's
// routes fit, and a client that sends a new line every time (ids in the
// path) costs at most this many entries, forgotten together when full
// (1024 entries were 0.2 MB of memdiag's live heap under the reference
// service, whose every /api/voice/N line is new: issue #15).
const maxLines = 256

// lineCache remembers the request each request line already seen named,
// so a line that comes again (most of a service's traffic) costs a map
// lookup instead of Parse's new strings. It keeps a line's hash, not the
// line: the query values Parse redacts stay out of memdiag's heap
// (SECURITY.md). Two lines of one hash (2^-64 for a pair, with a seed of
// this process's own) would share a naming. Not safe for concurrent use.
type lineCache struct {
	opts Options
	seed maphash.Seed
	m    map[uint64]Request
}

var (
	http10 = []byte(" HTTP/1.0\r\n")
	http11 = []byte(" HTTP/1.1\r\n")
)

// parse is Parse(b, opts). A request line that ends with its version and
// CRLF names the request by itself (Parse reads nothing past it then), so
// it is the key; what does not parse is not kept.
func (c *lineCache) parse(b []byte) (Request, error) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return Parse(b, c.opts)
	}
	line := b[:i+1]
	if !bytes.HasSuffix(line, http11) && !bytes.HasSuffix(line, http10) {
		return Parse(b, c.opts)
	}
	if c.m == nil {
		c.seed = maphash.MakeSeed()
	}
	h := maphash.Bytes(c.seed, line)
	if r, ok := c.m[h]; ok {
		return r, nil
	}
	r, err := Parse(b, c.opts)
	if err != nil {
		return r, err
	}
	if c.m == nil {
		c.m = make(map[uint64]Request, maxLines)
	} else if len(c.m) >= maxLines {
		clear(c.m) // the table is kept: no new one to grow
	}
	c.m[h] = r
	return r, nil
}
