package attribution

import (
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/memdiag/memdiag/config"
	"github.com/memdiag/memdiag/event"
)

// Category kinds.
const (
	KindHTTP       = "http"       // served requests
	KindOutbound   = "outbound"   // outbound calls and cycles
	KindUnknown    = "unknown"    // served bytes that were not an HTTP request
	KindIdle       = "idle"       // event-loop threads between operations
	KindBackground = "background" // threads that never served an operation
	KindProcess    = "process"    // kernel, inherited, released, overflow
)

// Naming is what the categorizer makes of an operation.
type Naming struct {
	Category string
	Kind     string
	CycleGap time.Duration // >0: group calls into cycles
	Name     string        // the op itself: "GET /api/voice/42", "out 10.0.0.5:9200 POST /_search"
	Detail   string        // "?limit=…", or ""
}

// Categorizer names operations from rules, first match wins; with no
// match, HTTP ops are named by normalized route and outbound ops by
// destination. It learns which route segments are ids (routeFolder), so
// it is not safe for concurrent use.
type Categorizer struct {
	rules []config.Category
	fold  routeFolder
	// known holds the namings of the requests seen last (maxKnown at
	// most), so a request that comes again makes no new strings: at 100k
	// ops a second they were most of memdiag's allocations (issue #15).
	known map[namingKey]*naming
}

// maxKnown bounds Categorizer.known: a service's routes fit, and ops whose
// requests are all new (ids in the path) cost at most this many entries,
// forgotten together when full. An entry is about 250 bytes with its
// naming, and under the reference service's ids every entry is new: 1024
// of them were 0.4 MB of memdiag's live heap (issue #15).
const maxKnown = 256

// namingKey is what an op's naming is made of.
type namingKey struct {
	kind event.OpKind
	http bool
	dest netip.AddrPort
	req  event.Request
}

// naming is the naming of one namingKey. A name by route is folded again
// for every op (routeFolder learns from each one and may fold it later),
// so its category is the one of the route as last folded.
type naming struct {
	Naming
	byRoute bool   // the category is the method and the folded route
	route   string // the normalized route, when byRoute
	folded  string // route as last folded, which Category names
}

// NewCategorizer returns a categorizer for cfg (nil: automatic names only).
func NewCategorizer(cfg *config.Config) *Categorizer {
	c := &Categorizer{}
	if cfg != nil {
		c.rules = cfg.Categories
	}
	return c
}

// Categorize names an operation.
func (c *Categorizer) Categorize(b *event.OpBegin) Naming {
	k := namingKey{kind: b.Kind, http: b.HTTP, dest: b.Dest, req: b.Request}
	n := c.known[k]
	if n == nil {
		n = c.name(b)
		if c.known == nil {
			c.known = make(map[namingKey]*naming, maxKnown)
		} else if len(c.known) >= maxKnown {
			clear(c.known) // the table is kept: no new one to grow
		}
		c.known[k] = n
	}
	if n.byRoute {
		if folded := c.fold.apply(b.Method, n.route); folded != n.folded {
			n.folded, n.Category = folded, b.Method+" "+folded
		}
	}
	return n.Naming
}

// name names an operation seen for the first time, but for the folding of
// a route.
func (c *Categorizer) name(b *event.OpBegin) *naming {
	n := Naming{Kind: KindHTTP}
	if b.Kind == event.OpOutbound {
		n.Kind = KindOutbound
	}
	switch {
	case b.Kind == event.OpOutbound:
		n.Name = "out " + dest(b)
		if b.HTTP {
			n.Name += " " + b.Method + " " + b.Path
		}
	case b.GRPC:
		n.Name = GRPCName(b.Path)
	case b.HTTP && b.Proto == "ws":
		n.Name = "ws " + b.Method + " " + b.Path // a message: the category is its connection's
	case b.HTTP:
		n.Name = b.Method + " " + b.Path
	default:
		n.Kind, n.Category, n.Name = KindUnknown, "unknown", "unknown"
		return &naming{Naming: n}
	}
	if b.Query != "" {
		n.Detail = "?" + b.Query
	}
	if b.Truncated {
		n.Detail += "…"
	}
	for _, r := range c.rules {
		if matches(r, b) {
			n.Category, n.CycleGap = r.Name, r.CycleGap
			return &naming{Naming: n}
		}
	}
	switch {
	case b.Kind == event.OpOutbound:
		n.Category = "out " + dest(b)
	case b.GRPC:
		n.Category = n.Name // a method is a route already: nothing to fold
	default:
		route := NormalizeRoute(b.Path)
		n.Category = b.Method + " " + route
		return &naming{Naming: n, byRoute: true, route: route, folded: route}
	}
	return &naming{Naming: n}
}

// Route folding bounds: a segment position of one route shape is an id
// once more than foldAfter distinct values came there and at least
// foldSingles of them came once (ids: a user, a slug, a token); a
// position whose values repeat (resource names: /api/users, /api/orders)
// is decided static. At most foldShapes shapes are followed.
const (
	foldAfter   = 32
	foldSingles = 0.75
	foldShapes  = 1024
)

// routeFolder learns which segments of a route are ids that NormalizeRoute
// cannot tell by their look (u42, my-first-post): one category per route,
// not one per user. Its memory is bounded (foldShapes shapes of at most
// foldAfter+1 values; undecided ones are forgotten together when the bound
// is reached); a route's first foldAfter values keep their own names, the
// ones after fold to ":id".
type routeFolder struct {
	values map[string]map[string]int // a position's shape -> value -> ops
	state  map[string]bool           // decided shapes: true = an id, false = static
	segs   []string                  // scratch: the segments of the route being folded
	shape  []byte                    // scratch: the shape of the position looked at
}

// apply folds the id positions of a normalized route, learning from it.
// It runs for every op: only a route it folds makes a new string.
func (f *routeFolder) apply(method, route string) string {
	if route == "" || route[0] != '/' {
		return route
	}
	segs := f.segs[:0]
	for s := range strings.SplitSeq(route[1:], "/") {
		segs = append(segs, s)
	}
	f.segs = segs
	folded := false
	for i, s := range segs {
		if s == ":id" || s == "" || s == "…" {
			continue
		}
		f.shape = appendShape(f.shape[:0], method, segs[:i], len(segs)-i-1)
		if f.isID(f.shape, s) {
			segs[i], folded = ":id", true
		}
	}
	if !folded {
		return route
	}
	return "/" + strings.Join(segs, "/")
}

// appendShape appends a position's shape to b: the method, the segments
// before it as folded so far, and how many come after (not their values,
// which may be ids not learnt yet).
func appendShape(b []byte, method string, before []string, after int) []byte {
	b = append(append(b, method...), " /"...)
	for i, s := range before {
		if i > 0 {
			b = append(b, '/')
		}
		b = append(b, s...)
	}
	b = append(b, "/\x00 +"...)
	return strconv.AppendInt(b, int64(after), 10)
}

// isID counts value at shape's position and says whether the position is
// an id.
func (f *routeFolder) isID(shape []byte, value string) bool {
	if id, decided := f.state[string(shape)]; decided {
		return id
	}
	if f.values == nil {
		f.values, f.state = map[string]map[string]int{}, map[string]bool{}
	}
	seen, ok := f.values[string(shape)]
	if !ok {
		if len(f.state) >= foldShapes {
			return false // decided shapes fill the bound: nothing more is learnt
		}
		if len(f.values)+len(f.state) >= foldShapes {
			// Undecided shapes fill the bound: most are a route's later
			// positions behind an id not learnt yet (/users/u1/*,
			// /users/u2/*, …), which its learning makes moot. They start
			// counting again.
			clear(f.values)
		}
		seen = map[string]int{}
		f.values[string(shape)] = seen
	}
	seen[value]++
	if len(seen) <= foldAfter {
		return false
	}
	singles := 0
	for _, n := range seen {
		if n == 1 {
			singles++
		}
	}
	id := float64(singles) >= foldSingles*float64(len(seen))
	f.state[string(shape)] = id
	delete(f.values, string(shape))
	return id
}

// GRPCName names a gRPC call by its service and method:
// "grpc helloworld.Greeter/SayHello" for the path
// /helloworld.Greeter/SayHello.
func GRPCName(path string) string {
	return "grpc " + strings.TrimPrefix(path, "/")
}

func dest(b *event.OpBegin) string {
	if !b.Dest.IsValid() {
		return "?"
	}
	return b.Dest.String()
}

func matches(r config.Category, b *event.OpBegin) bool {
	switch {
	case r.HTTP == nil && r.Outbound == nil:
		return true // a catch-all
	case r.HTTP != nil:
		if b.Kind != event.OpHTTPServer || !b.HTTP {
			return false
		}
		m := r.HTTP
		return (m.Method == "" || m.Method == b.Method) &&
			strings.HasPrefix(b.Path, m.PathPrefix) &&
			(m.PathRegex == nil || m.PathRegex.MatchString(b.Path))
	default:
		if b.Kind != event.OpOutbound {
			return false
		}
		m := r.Outbound
		if m.Host.IsValid() && (!b.Dest.IsValid() || b.Dest.Addr().Unmap() != m.Host) {
			return false
		}
		if m.Port != 0 && b.Dest.Port() != m.Port {
			return false
		}
		return m.PathPrefix == "" || b.HTTP && strings.HasPrefix(b.Path, m.PathPrefix)
	}
}

// Route normalization bounds.
const (
	maxSegments = 8
	maxRouteLen = 128
)

// NormalizeRoute folds the variable parts of a path — numbers, UUIDs,
// long hex strings and other id-like segments — to ":id", so requests of
// one route share a category.
func NormalizeRoute(path string) string {
	if path == "" || path == "*" {
		return path
	}
	segs := strings.Split(strings.TrimPrefix(path, "/"), "/")
	var b strings.Builder
	for i, s := range segs {
		if i == maxSegments {
			b.WriteString("/…")
			break
		}
		b.WriteByte('/')
		if isID(s) {
			b.WriteString(":id")
		} else {
			b.WriteString(s)
		}
	}
	r := b.String()
	if len(r) > maxRouteLen {
		r = r[:maxRouteLen] + "…"
	}
	return r
}

// isID says whether a path segment looks like an identifier rather than a
// fixed part of a route.
func isID(s string) bool {
	if s == "" {
		return false
	}
	digits, hex, letters := 0, 0, 0
	for _, c := range s {
		switch {
		case c >= '0' && c <= '9':
			digits++
			hex++
		case c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F':
			hex++
			letters++
		case c >= 'g' && c <= 'z' || c >= 'G' && c <= 'Z':
			letters++
		case c == '-' || c == '_' || c == '.' || c == '~' || c == '%' || c == ':':
		default:
			return false
		}
	}
	n := len(s)
	switch {
	case digits == n: // 42
		return true
	case n == 36 && strings.Count(s, "-") == 4 && hex == 32: // UUID
		return true
	case hex == n && n >= 16: // object ids, hashes
		return true
	case digits > 0 && n >= 8 && digits*3 >= n: // mixed ids like a1b2c3d4e5
		return true
	case digits >= 4 && digits*2 >= n: // short prefixed ids like u6871, INV-2024 (not v1, oauth2, h264)
		return true
	}
	return false
}
