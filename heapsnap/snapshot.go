package heapsnap

import (
	"context"
	"fmt"
	"io"
	"math"
)

// Parse reads a V8 .heapsnapshot from r into compact arrays. It streams:
// memory is the arrays (about 17 bytes a node and 9 an edge) plus the
// strings a report prints, never the JSON text. A malformed or truncated
// input gives a *SyntaxError naming the byte offset.
func Parse(ctx context.Context, in io.Reader, opts ParseOptions) (*Snapshot, error) {
	bufSize := int64(1 << 20)
	if opts.Size > 0 && opts.Size < bufSize {
		bufSize = opts.Size + 1 // one read sees the end
	}
	r := &reader{r: in, buf: make([]byte, bufSize), ctx: ctx, progress: opts.Progress, nextProg: progressStep}
	p := &parser{r: r, size: opts.Size, s: &Snapshot{strs: map[uint32]string{}}, dropNames: opts.path != ""}
	p.s.path = opts.path
	if err := p.top(); err != nil {
		return nil, err
	}
	if opts.Progress != nil {
		opts.Progress(r.off())
	}
	return p.s, nil
}

type parser struct {
	r    *reader
	size int64
	s    *Snapshot

	haveMeta               bool
	nodeFields, edgeFields int
	nfType, nfName, nfID   int
	nfSelf, nfEdgeCount    int
	efType, efName, efTo   int
	nodeCount, edgeCount   int64
	haveNodes, haveEdges   bool
	haveStrings            bool
	want                   []uint64 // string indices to keep (bitset)
	maxName, maxEdgeName   int64    // highest string index used, -1 if none
	maxWant                int64
	nodesOff, edgesOff     int64
	keepNameOfType         [256]bool
	edgeNameIsString       [256]bool
	dropNames              bool // edge names are read again from the file when needed
}

func (p *parser) top() error {
	r := p.r
	p.maxName, p.maxEdgeName = -1, -1
	if err := r.expect('{'); err != nil {
		return err
	}
	for {
		key, err := r.str(true)
		if err != nil {
			return err
		}
		if err := r.expect(':'); err != nil {
			return err
		}
		switch key {
		case "snapshot":
			err = p.header()
		case "nodes":
			err = p.nodes()
		case "edges":
			err = p.edges()
		case "strings":
			err = p.strings()
		default:
			err = r.skip(0)
		}
		if err != nil {
			return err
		}
		c, err := r.nonSpace()
		if err != nil {
			return err
		}
		r.i++
		if c == '}' {
			break
		}
		if c != ',' {
			r.i--
			return r.fail("expected ',' or '}', found %q", c)
		}
	}
	if c, err := r.nonSpace(); err == nil {
		return r.fail("unexpected %q after the end of the snapshot", c)
	} else if r.err != io.EOF {
		return err
	}
	return p.finish()
}

func (p *parser) finish() error {
	s, end := p.s, p.r.off()
	fail := func(msg string, args ...any) error {
		return &SyntaxError{Offset: end, Msg: fmt.Sprintf(msg, args...)}
	}
	switch {
	case !p.haveMeta:
		return fail("no snapshot.meta: not a V8 heap snapshot")
	case !p.haveNodes:
		return fail("no nodes array")
	case !p.haveEdges:
		return fail("no edges array")
	case !p.haveStrings:
		return fail("no strings array")
	case len(s.ntype) == 0:
		return fail("the snapshot has no nodes")
	}
	if got := s.firstEdge[len(s.ntype)]; int(got) != len(s.eto) {
		return &SyntaxError{Offset: p.edgesOff, Msg: fmt.Sprintf("nodes declare %d edges, the edges array holds %d", got, len(s.eto))}
	}
	for i, to := range s.eto {
		if to &= toMask; int(to) >= len(s.ntype) {
			return &SyntaxError{Offset: p.edgesOff, Msg: fmt.Sprintf("edge %d points to node %d of %d", i, to, len(s.ntype))}
		}
	}
	if p.maxName >= int64(s.nstrings) {
		return &SyntaxError{Offset: p.nodesOff, Msg: fmt.Sprintf("a node names string %d, the strings array holds %d", p.maxName, s.nstrings)}
	}
	if p.maxEdgeName >= int64(s.nstrings) {
		return &SyntaxError{Offset: p.edgesOff, Msg: fmt.Sprintf("an edge names string %d, the strings array holds %d", p.maxEdgeName, s.nstrings)}
	}
	return nil
}

// header reads the "snapshot" object: meta, node_count, edge_count.
func (p *parser) header() error {
	r := p.r
	if err := r.expect('{'); err != nil {
		return err
	}
	if c, err := r.nonSpace(); err != nil {
		return err
	} else if c == '}' {
		r.i++
		return nil
	}
	for {
		keyOff := r.off()
		key, err := r.str(true)
		if err != nil {
			return err
		}
		if err := r.expect(':'); err != nil {
			return err
		}
		switch key {
		case "meta":
			v, err := r.value(0, r.off()+1<<20)
			if err != nil {
				return err
			}
			if err := p.meta(v, keyOff); err != nil {
				return err
			}
		case "node_count", "edge_count":
			f, err := r.number()
			if err != nil {
				return err
			}
			if f < 0 || f > math.MaxUint32 || f != math.Trunc(f) {
				return &SyntaxError{Offset: keyOff, Msg: fmt.Sprintf("%s %v out of range", key, f)}
			}
			if key == "node_count" {
				p.nodeCount = int64(f)
			} else {
				p.edgeCount = int64(f)
			}
		default:
			if err := r.skip(0); err != nil {
				return err
			}
		}
		c, err := r.nonSpace()
		if err != nil {
			return err
		}
		r.i++
		if c == '}' {
			return nil
		}
		if c != ',' {
			r.i--
			return r.fail("expected ',' or '}', found %q", c)
		}
	}
}

func strList(v any) ([]string, bool) {
	a, ok := v.([]any)
	if !ok {
		return nil, false
	}
	out := make([]string, len(a))
	for i, x := range a {
		if out[i], ok = x.(string); !ok {
			return nil, false
		}
	}
	return out, true
}

func index(list []string, name string) int {
	for i, s := range list {
		if s == name {
			return i
		}
	}
	return -1
}

// meta resolves field positions and type codes from snapshot.meta.
func (p *parser) meta(v any, off int64) error {
	fail := func(msg string, args ...any) error {
		return &SyntaxError{Offset: off, Msg: "snapshot.meta: " + fmt.Sprintf(msg, args...)}
	}
	m, ok := v.(map[string]any)
	if !ok {
		return fail("not an object")
	}
	nf, ok := strList(m["node_fields"])
	if !ok {
		return fail("node_fields missing or not a list of names")
	}
	ef, ok := strList(m["edge_fields"])
	if !ok {
		return fail("edge_fields missing or not a list of names")
	}
	for _, f := range []struct {
		list []string
		name string
		dst  *int
	}{
		{nf, "type", &p.nfType}, {nf, "name", &p.nfName}, {nf, "id", &p.nfID},
		{nf, "self_size", &p.nfSelf}, {nf, "edge_count", &p.nfEdgeCount},
		{ef, "type", &p.efType}, {ef, "name_or_index", &p.efName}, {ef, "to_node", &p.efTo},
	} {
		if *f.dst = index(f.list, f.name); *f.dst < 0 {
			return fail("field %q missing", f.name)
		}
	}
	p.nodeFields, p.edgeFields = len(nf), len(ef)
	p.s.edgeFields, p.s.efName = len(ef), p.efName
	types := func(key string) ([]string, error) {
		a, ok := m[key].([]any)
		if !ok || len(a) == 0 {
			return nil, fail("%s missing", key)
		}
		t, ok := strList(a[0])
		if !ok || len(t) == 0 || len(t) > 254 {
			return nil, fail("%s[0] is not a list of at most 254 type names", key)
		}
		return t, nil
	}
	var err error
	s := p.s
	if s.nodeTypes, err = types("node_types"); err != nil {
		return err
	}
	if s.edgeTypes, err = types("edge_types"); err != nil {
		return err
	}
	if len(s.edgeTypes) > 1<<(32-toBits) {
		return fail("more than %d edge types", 1<<(32-toBits))
	}
	code := func(list []string, name string) uint8 {
		if i := index(list, name); i >= 0 {
			return uint8(i)
		}
		return 255
	}
	s.tHidden, s.tObject, s.tNative = code(s.nodeTypes, "hidden"), code(s.nodeTypes, "object"), code(s.nodeTypes, "native")
	s.tCode, s.tSynthetic = code(s.nodeTypes, "code"), code(s.nodeTypes, "synthetic")
	s.eElement, s.eHidden, s.eWeak = code(s.edgeTypes, "element"), code(s.edgeTypes, "hidden"), code(s.edgeTypes, "weak")
	s.eShortcut, s.eInternal = code(s.edgeTypes, "shortcut"), code(s.edgeTypes, "internal")
	s.eProperty, s.eContext = code(s.edgeTypes, "property"), code(s.edgeTypes, "context")
	// Keep the names a report prints: class names and synthetic/closure
	// names; drop string contents, numbers and code.
	for i, t := range s.nodeTypes {
		switch t {
		case "string", "concatenated string", "sliced string", "number", "bigint", "code":
		default:
			p.keepNameOfType[i] = true
		}
	}
	for i := range s.edgeTypes {
		p.edgeNameIsString[i] = uint8(i) != s.eElement && uint8(i) != s.eHidden
	}
	p.haveMeta = true
	return nil
}

// capCount bounds a count the file claims by what its size allows.
func (p *parser) capCount(claimed int64, minBytes int) int {
	if p.size > 0 {
		if m := p.size / int64(minBytes); claimed > m {
			claimed = m
		}
	} else if claimed > 1<<24 {
		claimed = 1 << 24 // grow by append beyond this
	}
	return int(claimed)
}

// wantString marks string index i as one to keep.
func (p *parser) wantString(i uint64) error {
	limit := int64(1) << 28
	if p.size > 0 && p.size/2+1 < limit {
		limit = p.size/2 + 1
	}
	if int64(i) >= limit {
		return p.r.fail("string index %d out of range", i)
	}
	w := int(i >> 6)
	if w >= len(p.want) {
		n := 2*len(p.want) + 1
		if n <= w {
			n = w + 1
		}
		p.want = append(p.want, make([]uint64, n-len(p.want))...)
	}
	p.want[w] |= 1 << (i & 63)
	if int64(i) > p.maxWant {
		p.maxWant = int64(i)
	}
	return nil
}

func (p *parser) wanted(i int) bool {
	w := i >> 6
	return w < len(p.want) && p.want[w]&(1<<(uint(i)&63)) != 0
}

// arrayOpen consumes '[' and reports whether the array is empty.
func (r *reader) arrayOpen() (empty bool, err error) {
	if err := r.expect('['); err != nil {
		return false, err
	}
	c, err := r.nonSpace()
	if err != nil {
		return false, err
	}
	if c == ']' {
		r.i++
		return true, nil
	}
	return false, nil
}

// arrayNext consumes ',' or ']' and reports whether the array ended.
func (r *reader) arrayNext() (end bool, err error) {
	c, err := r.nonSpace()
	if err != nil {
		return false, err
	}
	switch c {
	case ',':
		r.i++
		return false, nil
	case ']':
		r.i++
		return true, nil
	}
	return false, r.fail("expected ',' or ']', found %q", c)
}

func (p *parser) nodes() error {
	r, s := p.r, p.s
	if !p.haveMeta {
		return r.fail("nodes before snapshot.meta")
	}
	if p.haveNodes {
		return r.fail("a second nodes array")
	}
	p.haveNodes = true
	p.nodesOff = r.off()
	n := p.capCount(p.nodeCount, 2*p.nodeFields)
	s.ntype = make([]uint8, 0, n)
	s.nname = make([]uint32, 0, n)
	s.nid = make([]uint32, 0, n)
	s.nself = make([]uint32, 0, n)
	s.firstEdge = make([]uint32, 1, n+1)
	empty, err := r.arrayOpen()
	if err != nil || empty {
		return err
	}
	var edges uint64
	var typ uint8
	var name, id, self uint64
	for f := 0; ; f++ {
		if f == p.nodeFields {
			f = 0
		}
		v, err := r.uint()
		if err != nil {
			return err
		}
		switch f {
		case p.nfType:
			if v >= uint64(len(s.nodeTypes)) {
				return r.fail("node type %d out of range", v)
			}
			typ = uint8(v)
		case p.nfName:
			name = v
		case p.nfID:
			id = v
		case p.nfSelf:
			self = v
		case p.nfEdgeCount:
			edges += v
		}
		if (f == p.nfName || f == p.nfID || f == p.nfEdgeCount) && v > math.MaxUint32 {
			return r.fail("value %d out of range", v)
		}
		if f == p.nodeFields-1 {
			if edges > math.MaxUint32 {
				return r.fail("more than 2^32 edges")
			}
			if p.keepNameOfType[typ] {
				if err := p.wantString(name); err != nil {
					return err
				}
			}
			if int64(name) > p.maxName {
				p.maxName = int64(name)
			}
			if self > math.MaxUint32 {
				self = math.MaxUint32
			}
			s.ntype = append(s.ntype, typ)
			s.nname = append(s.nname, uint32(name))
			s.nid = append(s.nid, uint32(id))
			s.nself = append(s.nself, uint32(self))
			s.firstEdge = append(s.firstEdge, uint32(edges))
		}
		end, err := r.arrayNext()
		if err != nil {
			return err
		}
		if end {
			if f != p.nodeFields-1 {
				return r.fail("nodes array length is not a multiple of %d fields", p.nodeFields)
			}
			return nil
		}
	}
}

func (p *parser) edges() error {
	r, s := p.r, p.s
	if !p.haveMeta {
		return r.fail("edges before snapshot.meta")
	}
	if p.haveEdges {
		return r.fail("a second edges array")
	}
	p.haveEdges = true
	p.edgesOff = r.off()
	n := p.capCount(p.edgeCount, 2*p.edgeFields)
	if !p.dropNames {
		s.ename = make([]uint32, 0, n)
	}
	s.eto = make([]uint32, 0, n)
	empty, err := r.arrayOpen()
	if err != nil || empty {
		return err
	}
	var typ uint8
	var name, to uint64
	for f := 0; ; f++ {
		if f == p.edgeFields {
			f = 0
		}
		v, err := r.uint()
		if err != nil {
			return err
		}
		switch f {
		case p.efType:
			if v >= uint64(len(s.edgeTypes)) {
				return r.fail("edge type %d out of range", v)
			}
			typ = uint8(v)
		case p.efName:
			if v > math.MaxUint32 {
				return r.fail("value %d out of range", v)
			}
			name = v
		case p.efTo:
			if v%uint64(p.nodeFields) != 0 || v/uint64(p.nodeFields) > toMask {
				return r.fail("to_node %d is not a node offset", v)
			}
			to = v / uint64(p.nodeFields)
		}
		if f == p.edgeFields-1 {
			if p.edgeNameIsString[typ] {
				if p.dropNames {
					name = 0 // read again later for the few edges a report names
				}
				if err := p.wantString(name); err != nil {
					return err
				}
				if int64(name) > p.maxEdgeName {
					p.maxEdgeName = int64(name)
				}
			}
			if !p.dropNames {
				s.ename = append(s.ename, uint32(name))
			}
			s.eto = append(s.eto, uint32(to)|uint32(typ)<<toBits)
		}
		end, err := r.arrayNext()
		if err != nil {
			return err
		}
		if end {
			if f != p.edgeFields-1 {
				return r.fail("edges array length is not a multiple of %d fields", p.edgeFields)
			}
			return nil
		}
	}
}

func (p *parser) strings() error {
	r, s := p.r, p.s
	if p.haveStrings {
		return r.fail("a second strings array")
	}
	p.haveStrings = true
	// Strings before nodes and edges (V8 writes them last): keep them all.
	keepAll := !p.haveNodes || !p.haveEdges
	empty, err := r.arrayOpen()
	if err != nil || empty {
		return err
	}
	for i := 0; ; i++ {
		keep := keepAll || p.wanted(i)
		v, err := r.str(keep)
		if err != nil {
			return err
		}
		if keep {
			s.strs[uint32(i)] = v
		}
		s.nstrings = i + 1
		if s.nstrings > math.MaxUint32-1 {
			return r.fail("too many strings")
		}
		end, err := r.arrayNext()
		if err != nil {
			return err
		}
		if end {
			return nil
		}
	}
}
