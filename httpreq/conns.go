package httpreq

// ConnKey names a served connection: the process and its socket's fd.
type ConnKey struct {
	PID uint32
	FD  int32
}

// maxConns bounds the connections Conns keeps state for, as the kernel's
// sockets map bounds the sockets it follows.
const maxConns = 65536

// Conns keeps the naming state of every served connection: its last
// request (a WebSocket upgrade names the connection's messages), its
// pipelined HTTP/1.1 requests, its HTTP/2 decoder. Not safe for
// concurrent use: the tracer's reader owns it.
type Conns struct {
	opts    Options
	lines   lineCache
	m       map[ConnKey]*connState
	Dropped uint64 // connections not followed because maxConns were
}

type connState struct {
	pipe *Pipeline
	h2   *H2Conn
	last Request // the last HTTP/1.x request that began an op: a WebSocket upgrade names its messages
}

// NewConns returns an empty table whose names keep what opts says.
func NewConns(opts Options) *Conns {
	return &Conns{opts: opts, lines: lineCache{opts: opts}, m: map[ConnKey]*connState{}}
}

// Parse is Parse with Conns' options, through its cache of request lines:
// a line seen before makes no new strings.
func (c *Conns) Parse(b []byte) (Request, error) { return c.lines.parse(b) }

func (c *Conns) get(k ConnKey) *connState {
	s := c.m[k]
	if s == nil {
		if len(c.m) >= maxConns {
			c.Dropped++
			return nil
		}
		s = &connState{}
		c.m[k] = s
	}
	return s
}

// Begin names the op a read began with the HTTP/1.x request at the start
// of data, and queues the requests after it.
func (c *Conns) Begin(k ConnKey, data []byte) (Request, error) {
	r, err := c.lines.parse(data)
	if err != nil {
		return r, err
	}
	s := c.get(k)
	if s == nil {
		return r, nil
	}
	s.last = r
	if RequestLen(data) == len(data) && s.pipe == nil {
		return r, nil // one whole request and nothing after it, the usual read
	}
	if s.pipe == nil {
		s.pipe = NewPipeline(c.opts)
	}
	s.pipe.Begin(data)
	return r, nil
}

// More takes the rest of the read that began the connection's op.
func (c *Conns) More(k ConnKey, data []byte) {
	if s := c.m[k]; s != nil && s.pipe != nil {
		s.pipe.More(data)
	}
}

// Requests takes a read of pipelined requests that came while the op's
// own request was still being read.
func (c *Conns) Requests(k ConnKey, data []byte) {
	if s := c.get(k); s != nil {
		if s.pipe == nil {
			s.pipe = NewPipeline(c.opts)
		}
		s.pipe.Requests(data)
	}
}

// Pipelined names the op begun by a response with no request read since:
// the oldest pipelined request waiting; false when none is known.
func (c *Conns) Pipelined(k ConnKey) (Request, bool) {
	if s := c.m[k]; s != nil && s.pipe != nil {
		return s.pipe.Next()
	}
	return Request{}, false
}

// Stream names the HTTP/2 stream opened by the HEADERS frame.
func (c *Conns) Stream(k ConnKey, frame []byte) (Request, error) {
	s := c.get(k)
	if s == nil {
		return Request{}, ErrStateLost
	}
	if s.h2 == nil {
		s.h2 = NewH2Conn(c.opts)
	}
	return s.h2.Stream(frame)
}

// Headers takes an HTTP/2 header block that opens no stream.
func (c *Conns) Headers(k ConnKey, frame []byte) {
	if s := c.m[k]; s != nil && s.h2 != nil {
		s.h2.Headers(frame)
	}
}

// Message names a WebSocket message by its connection's upgrade request.
func (c *Conns) Message(k ConnKey, frame []byte) (Request, error) {
	s := c.m[k]
	if s == nil || s.last.Method == "" {
		return Request{}, ErrNotWSMessage
	}
	return Message(s.last, frame)
}

// Close forgets a connection whose socket closed.
func (c *Conns) Close(k ConnKey) { delete(c.m, k) }

// Exit forgets every connection of an exited process.
func (c *Conns) Exit(pid uint32) {
	for k := range c.m {
		if k.PID == pid {
			delete(c.m, k)
		}
	}
}

// Len says how many connections have state.
func (c *Conns) Len() int { return len(c.m) }
