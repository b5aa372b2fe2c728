package heapsnap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// noNode marks a missing node ordinal (no dominator, no parent, unreachable).
const noNode = math.MaxUint32

// SyntaxError is a malformed or truncated snapshot. Its message names the
// byte offset in the file where reading stopped.
type SyntaxError struct {
	Offset int64  // byte offset of the offending byte (the file size when truncated)
	Msg    string // what was wrong
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("malformed heap snapshot at byte offset %d: %s", e.Offset, e.Msg)
}

// ErrTruncated is wrapped by the SyntaxError of a snapshot that ends early.
var ErrTruncated = errors.New("file ends early (truncated snapshot?)")

type truncErr struct{ SyntaxError }

func (e *truncErr) Unwrap() error { return ErrTruncated }

// Snapshot is a V8 heap snapshot in compact arrays: one entry per node and
// per edge, string values dropped. Node 0 is the synthetic root. The JSON
// text is never held: Parse reads it through a fixed buffer.
type Snapshot struct {
	// meta
	nodeTypes []string
	edgeTypes []string

	// per node (ordinal = index in the nodes array / node field count)
	ntype     []uint8
	nname     []uint32 // index into the string table
	nid       []uint32 // V8's stable object id
	nself     []uint32 // shallow size in bytes (saturated at 4 GiB)
	firstEdge []uint32 // len nodes+1: edges of node i are firstEdge[i]:firstEdge[i+1]

	// per edge
	eto   []uint32 // target node ordinal | edge type << toBits
	ename []uint32 // string index, or element index for element/hidden edges; nil when read again from path
	path  string   // the file, when edge names are left in it

	edgeFields, efName int // to find edge names in the file again

	// the strings a report can print: class names, edge names
	strs     map[uint32]string
	nstrings int

	// type codes resolved from meta (255 when the snapshot lacks the type)
	tHidden, tObject, tNative, tCode, tSynthetic                        uint8
	eElement, eHidden, eWeak, eShortcut, eInternal, eProperty, eContext uint8
}

// Nodes is the number of nodes (objects) in the snapshot.
func (s *Snapshot) Nodes() int { return len(s.ntype) }

// Edges is the number of edges (references) in the snapshot.
func (s *Snapshot) Edges() int { return len(s.eto) }

// An edge's type shares a word with its target: 29 bits of node ordinal
// (536 million nodes), 3 bits of type (V8 has 7).
const (
	toBits = 29
	toMask = 1<<toBits - 1
)

func (s *Snapshot) to(e uint32) uint32      { return s.eto[e] & toMask }
func (s *Snapshot) edgeType(e uint32) uint8 { return uint8(s.eto[e] >> toBits) }

// ParseOptions tunes Parse.
type ParseOptions struct {
	// Size is the input size in bytes if known (0 if not). It bounds
	// allocations made from counts the file claims and drives Progress.
	Size int64
	// Progress, if set, is called with the bytes read so far, about every
	// 16 MiB and once at the end.
	Progress func(done int64)

	path string // set by ParseFile: leave edge names in the file
}

// reader is a byte reader over a fixed buffer that knows its offset.
type reader struct {
	r        io.Reader
	buf      []byte
	i, n     int
	base     int64 // offset of buf[0]
	err      error
	ctx      context.Context
	progress func(int64)
	nextProg int64
}

const progressStep = 16 << 20

func (r *reader) off() int64 { return r.base + int64(r.i) }

func (r *reader) fill() bool {
	if r.err != nil {
		return false
	}
	r.base += int64(r.n)
	r.i, r.n = 0, 0
	if r.progress != nil && r.base >= r.nextProg {
		r.progress(r.base)
		r.nextProg = r.base + progressStep
	}
	if r.ctx != nil {
		if err := r.ctx.Err(); err != nil {
			r.err = err
			return false
		}
	}
	for r.n == 0 {
		n, err := r.r.Read(r.buf)
		r.n = n
		if err != nil {
			if n > 0 {
				r.pendingErr(err)
				return true
			}
			r.err = err
			return false
		}
	}
	return true
}

// pendingErr stores err for the next fill; the bytes just read come first.
func (r *reader) pendingErr(err error) { r.err = err }

func (r *reader) fail(msg string, args ...any) error {
	return &SyntaxError{Offset: r.off(), Msg: fmt.Sprintf(msg, args...)}
}

func (r *reader) eofErr() error {
	if r.err != nil && r.err != io.EOF {
		if errors.Is(r.err, context.Canceled) || errors.Is(r.err, context.DeadlineExceeded) {
			return r.err
		}
		return fmt.Errorf("reading heap snapshot at byte offset %d: %w", r.off(), r.err)
	}
	return &truncErr{SyntaxError{Offset: r.off(), Msg: ErrTruncated.Error()}}
}

// peek returns the next byte without consuming it.
func (r *reader) peek() (byte, error) {
	if r.i >= r.n && !r.fill() {
		return 0, r.eofErr()
	}
	return r.buf[r.i], nil
}

// nonSpace skips white space and returns (without consuming) the next byte.
func (r *reader) nonSpace() (byte, error) {
	for {
		if r.i >= r.n && !r.fill() {
			return 0, r.eofErr()
		}
		c := r.buf[r.i]
		if c != ' ' && c != '\n' && c != '\r' && c != '\t' {
			return c, nil
		}
		r.i++
	}
}

// expect consumes c after optional white space.
func (r *reader) expect(c byte) error {
	got, err := r.nonSpace()
	if err != nil {
		return err
	}
	if got != c {
		return r.fail("expected %q, found %q", c, got)
	}
	r.i++
	return nil
}

// uint reads a non-negative integer (V8 writes no other number in nodes
// and edges).
func (r *reader) uint() (uint64, error) {
	c, err := r.nonSpace()
	if err != nil {
		return 0, err
	}
	if c < '0' || c > '9' {
		return 0, r.fail("expected a non-negative integer, found %q", c)
	}
	start := r.off()
	var v uint64
	for {
		if r.i >= r.n && !r.fill() {
			if r.err == io.EOF {
				return v, nil // the caller finds the truncation
			}
			return 0, r.eofErr()
		}
		c := r.buf[r.i]
		if c < '0' || c > '9' {
			if c == '.' || c == 'e' || c == 'E' {
				return 0, r.fail("expected an integer, found a fraction or exponent")
			}
			return v, nil
		}
		if v > (math.MaxUint64-9)/10 {
			return 0, &SyntaxError{Offset: start, Msg: "integer out of range"}
		}
		v = v*10 + uint64(c-'0')
		r.i++
	}
}

// str reads a JSON string; with keep false it is skipped and "" returned.
func (r *reader) str(keep bool) (string, error) {
	if err := r.expect('"'); err != nil {
		return "", err
	}
	var b []byte
	for {
		if r.i >= r.n && !r.fill() {
			return "", r.eofErr()
		}
		// fast path: run of plain bytes
		j := r.i
		for j < r.n {
			c := r.buf[j]
			if c == '"' || c == '\\' || c < 0x20 {
				break
			}
			j++
		}
		if keep {
			b = append(b, r.buf[r.i:j]...)
		}
		r.i = j
		if j == r.n {
			continue
		}
		c := r.buf[j]
		switch {
		case c == '"':
			r.i++
			if !keep {
				return "", nil
			}
			if !utf8.Valid(b) {
				return string([]rune(string(b))), nil
			}
			return string(b), nil
		case c < 0x20:
			return "", r.fail("control character %#x in a string", c)
		}
		// escape
		r.i++
		e, err := r.peek()
		if err != nil {
			return "", err
		}
		r.i++
		switch e {
		case '"', '\\', '/':
			b = append(b, e)
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			u, err := r.hex4()
			if err != nil {
				return "", err
			}
			if utf16.IsSurrogate(rune(u)) {
				// a pair if a \uDC00.. follows; V8 may also write lone halves
				if c, _ := r.peek(); c == '\\' {
					save := r.i
					if save+1 < r.n && r.buf[save+1] == 'u' {
						r.i += 2
						u2, err := r.hex4()
						if err != nil {
							return "", err
						}
						if rr := utf16.DecodeRune(rune(u), rune(u2)); rr != utf8.RuneError {
							b = utf8.AppendRune(b, rr)
							break
						}
						b = utf8.AppendRune(b, utf8.RuneError)
						b = utf8.AppendRune(b, rune(u2))
						break
					}
				}
				b = utf8.AppendRune(b, utf8.RuneError)
				break
			}
			b = utf8.AppendRune(b, rune(u))
		default:
			return "", r.fail("invalid escape %q in a string", "\\"+string(rune(e)))
		}
	}
}

func (r *reader) hex4() (uint16, error) {
	var u uint16
	for k := 0; k < 4; k++ {
		c, err := r.peek()
		if err != nil {
			return 0, err
		}
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, r.fail("invalid \\u escape")
		}
		u = u<<4 | uint16(d)
		r.i++
	}
	return u, nil
}

// literal consumes one of true, false, null.
func (r *reader) literal() (any, error) {
	c, err := r.nonSpace()
	if err != nil {
		return nil, err
	}
	var word string
	var v any
	switch c {
	case 't':
		word, v = "true", true
	case 'f':
		word, v = "false", false
	case 'n':
		word, v = "null", nil
	default:
		return nil, r.fail("unexpected %q", c)
	}
	for k := 0; k < len(word); k++ {
		c, err := r.peek()
		if err != nil {
			return nil, err
		}
		if c != word[k] {
			return nil, r.fail("unexpected %q", c)
		}
		r.i++
	}
	return v, nil
}

// number reads any JSON number (meta and header values).
func (r *reader) number() (float64, error) {
	if _, err := r.nonSpace(); err != nil {
		return 0, err
	}
	start := r.off()
	var b []byte
	for {
		c, err := r.peek()
		if err != nil {
			if r.err == io.EOF && len(b) > 0 {
				break
			}
			return 0, err
		}
		if (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E' {
			b = append(b, c)
			r.i++
			if len(b) > 64 {
				return 0, &SyntaxError{Offset: start, Msg: "number too long"}
			}
			continue
		}
		break
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return 0, &SyntaxError{Offset: start, Msg: fmt.Sprintf("invalid number %q", b)}
	}
	return f, nil
}

// maxMetaDepth bounds nesting in generic values (meta, skipped sections).
const maxMetaDepth = 64

// value reads a generic JSON value (used for the small meta object). It
// refuses values nested deeper than maxMetaDepth or larger than budget bytes.
func (r *reader) value(depth int, budget int64) (any, error) {
	if depth > maxMetaDepth {
		return nil, r.fail("nesting deeper than %d", maxMetaDepth)
	}
	c, err := r.nonSpace()
	if err != nil {
		return nil, err
	}
	if r.off() > budget {
		return nil, r.fail("snapshot.meta larger than expected")
	}
	switch {
	case c == '{':
		r.i++
		m := map[string]any{}
		if c, err := r.nonSpace(); err != nil {
			return nil, err
		} else if c == '}' {
			r.i++
			return m, nil
		}
		for {
			k, err := r.str(true)
			if err != nil {
				return nil, err
			}
			if err := r.expect(':'); err != nil {
				return nil, err
			}
			v, err := r.value(depth+1, budget)
			if err != nil {
				return nil, err
			}
			m[k] = v
			c, err := r.nonSpace()
			if err != nil {
				return nil, err
			}
			r.i++
			if c == '}' {
				return m, nil
			}
			if c != ',' {
				r.i--
				return nil, r.fail("expected ',' or '}', found %q", c)
			}
		}
	case c == '[':
		r.i++
		var a []any
		if c, err := r.nonSpace(); err != nil {
			return nil, err
		} else if c == ']' {
			r.i++
			return a, nil
		}
		for {
			v, err := r.value(depth+1, budget)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
			c, err := r.nonSpace()
			if err != nil {
				return nil, err
			}
			r.i++
			if c == ']' {
				return a, nil
			}
			if c != ',' {
				r.i--
				return nil, r.fail("expected ',' or ']', found %q", c)
			}
		}
	case c == '"':
		return r.str(true)
	case c == '-' || (c >= '0' && c <= '9'):
		return r.number()
	}
	return r.literal()
}

// skip consumes one JSON value of any size without keeping it.
func (r *reader) skip(depth int) error {
	if depth > maxMetaDepth {
		return r.fail("nesting deeper than %d", maxMetaDepth)
	}
	c, err := r.nonSpace()
	if err != nil {
		return err
	}
	switch {
	case c == '{' || c == '[':
		end := byte('}')
		if c == '[' {
			end = ']'
		}
		r.i++
		if c2, err := r.nonSpace(); err != nil {
			return err
		} else if c2 == end {
			r.i++
			return nil
		}
		for {
			if c == '{' {
				if _, err := r.str(false); err != nil {
					return err
				}
				if err := r.expect(':'); err != nil {
					return err
				}
			}
			if err := r.skip(depth + 1); err != nil {
				return err
			}
			c2, err := r.nonSpace()
			if err != nil {
				return err
			}
			r.i++
			if c2 == end {
				return nil
			}
			if c2 != ',' {
				r.i--
				return r.fail("expected ',' or %q, found %q", end, c2)
			}
		}
	case c == '"':
		_, err := r.str(false)
		return err
	case c == '-' || (c >= '0' && c <= '9'):
		return r.skipNumber()
	}
	_, err = r.literal()
	return err
}

// skipNumber consumes a number's characters without converting them
// (skipped sections such as "locations" hold millions of them).
func (r *reader) skipNumber() error {
	for {
		if r.i >= r.n && !r.fill() {
			if r.err == io.EOF {
				return nil // the caller finds the truncation
			}
			return r.eofErr()
		}
		c := r.buf[r.i]
		if (c < '0' || c > '9') && c != '-' && c != '+' && c != '.' && c != 'e' && c != 'E' {
			return nil
		}
		r.i++
	}
}
