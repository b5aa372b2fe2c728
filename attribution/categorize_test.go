package attribution

import (
	"fmt"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/memdiag/memdiag/config"
	"github.com/memdiag/memdiag/event"
)

func TestNormalizeRoute(t *testing.T) {
	for in, want := range map[string]string{
		"/api/records":  "/api/records",
		"/api/voice/42": "/api/voice/:id",
		"/users/550e8400-e29b-41d4-a716-446655440000": "/users/:id",
		"/objects/5f2b8c9e1a2b3c4d5e6f7a8b/view":      "/objects/:id/view",
		"/media/logo.png":                             "/media/logo.png",
		"/v1/orders/ab12cd34ef56":                     "/v1/orders/:id",
		"/a/b/c/d/e/f/g/h/i/j":                        "/a/b/c/d/e/f/g/h/…",
		"/":                                           "/",
		"/api/v2":                                     "/api/v2",
		"/track/u6871":                                "/track/:id",
		"/invoices/INV-2024/pdf":                      "/invoices/:id/pdf",
		"/auth/oauth2/callback":                       "/auth/oauth2/callback",
		"/net/ipv6":                                   "/net/ipv6",
		"/videos/h264":                                "/videos/h264",
	} {
		if got := NormalizeRoute(in); got != want {
			t.Errorf("NormalizeRoute(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCategorize(t *testing.T) {
	cfg, err := config.Parse("t.yaml", []byte(`categories:
  - name: api_voice
    http: { path_prefix: /api/voice }
  - name: posts
    http: { method: POST, path_regex: '^/p/[0-9]+$' }
  - name: gun_sync
    outbound: { port: 8765 }
    cycle_gap: 1s
  - name: es
    outbound: { host: 10.0.0.5, path_prefix: /_search }
`))
	if err != nil {
		t.Fatal(err)
	}
	c := NewCategorizer(cfg)
	peer := netip.MustParseAddrPort("127.0.0.1:8765")
	es := netip.MustParseAddrPort("10.0.0.5:9200")
	for _, tc := range []struct {
		in   event.OpBegin
		want Naming
	}{
		{event.OpBegin{Kind: event.OpHTTPServer, HTTP: true, Request: event.Request{Method: "GET", Path: "/api/voice/7", Query: "t=…"}},
			Naming{Category: "api_voice", Kind: KindHTTP, Name: "GET /api/voice/7", Detail: "?t=…"}},
		{event.OpBegin{Kind: event.OpHTTPServer, HTTP: true, Request: event.Request{Method: "POST", Path: "/p/12"}},
			Naming{Category: "posts", Kind: KindHTTP, Name: "POST /p/12"}},
		{event.OpBegin{Kind: event.OpHTTPServer, HTTP: true, Request: event.Request{Method: "GET", Path: "/p/12"}},
			Naming{Category: "GET /p/:id", Kind: KindHTTP, Name: "GET /p/12"}},
		{event.OpBegin{Kind: event.OpHTTPServer, HTTP: true, Request: event.Request{Method: "GET", Path: "/x", Truncated: true}},
			Naming{Category: "GET /x", Kind: KindHTTP, Name: "GET /x", Detail: "…"}},
		{event.OpBegin{Kind: event.OpHTTPServer},
			Naming{Category: "unknown", Kind: KindUnknown, Name: "unknown"}},
		{event.OpBegin{Kind: event.OpHTTPServer, HTTP: true, Request: event.Request{Method: "POST", Path: "/helloworld.Greeter/SayHello", Proto: "h2", GRPC: true}},
			Naming{Category: "grpc helloworld.Greeter/SayHello", Kind: KindHTTP, Name: "grpc helloworld.Greeter/SayHello"}},
		{event.OpBegin{Kind: event.OpHTTPServer, HTTP: true, Request: event.Request{Method: "GET", Path: "/h2/42", Proto: "h2"}},
			Naming{Category: "GET /h2/:id", Kind: KindHTTP, Name: "GET /h2/42"}},
		{event.OpBegin{Kind: event.OpHTTPServer, HTTP: true, Request: event.Request{Method: "GET", Path: "/ws/7", Proto: "ws"}},
			Naming{Category: "GET /ws/:id", Kind: KindHTTP, Name: "ws GET /ws/7"}},
		{event.OpBegin{Kind: event.OpOutbound, Dest: peer, HTTP: true, Request: event.Request{Method: "GET", Path: "/sync/changes"}},
			Naming{Category: "gun_sync", Kind: KindOutbound, CycleGap: time.Second, Name: "out 127.0.0.1:8765 GET /sync/changes"}},
		{event.OpBegin{Kind: event.OpOutbound, Dest: es, HTTP: true, Request: event.Request{Method: "POST", Path: "/_search"}},
			Naming{Category: "es", Kind: KindOutbound, Name: "out 10.0.0.5:9200 POST /_search"}},
		{event.OpBegin{Kind: event.OpOutbound, Dest: es},
			Naming{Category: "out 10.0.0.5:9200", Kind: KindOutbound, Name: "out 10.0.0.5:9200"}},
	} {
		if got := c.Categorize(&tc.in); got != tc.want {
			t.Errorf("Categorize(%+v) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func FuzzNormalizeRoute(f *testing.F) {
	for _, s := range []string{"/api/records", "/a/1/b/2", "//", "/%2F/x", "/" + string(make([]byte, 300))} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		r := NormalizeRoute(p)
		if len(r) > maxRouteLen+len("…") {
			t.Fatalf("route too long: %d", len(r))
		}
		if NormalizeRoute(r) != r && len(r) <= maxRouteLen {
			// normalizing twice changes nothing for bounded routes
			t.Fatalf("not idempotent: %q -> %q -> %q", p, r, NormalizeRoute(r))
		}
	})
}

// TestRouteFolding: ids NormalizeRoute cannot tell by their look (short
// user ids, slugs) fold to :id once a route shape has had more than
// foldAfter distinct values, most of them once; resource names that
// repeat stay routes of their own.
func TestRouteFolding(t *testing.T) {
	c := NewCategorizer(nil)
	cat := func(path string) string {
		return c.Categorize(&event.OpBegin{Kind: event.OpHTTPServer, HTTP: true, Request: event.Request{Method: "GET", Path: path}}).Category
	}
	for i := range 32 {
		if got, want := cat(fmt.Sprintf("/track/u%dx", i)), fmt.Sprintf("GET /track/u%dx", i); got != want {
			t.Fatalf("value %d: %q, want %q (not learnt yet)", i, got, want)
		}
	}
	for i := 32; i < 40; i++ {
		if got := cat(fmt.Sprintf("/track/u%dx", i)); got != "GET /track/:id" {
			t.Fatalf("value %d: %q, want GET /track/:id", i, got)
		}
	}
	// A request named before its position was learnt, remembered with
	// that name, folds now.
	if got := cat("/track/u0x"); got != "GET /track/:id" {
		t.Fatalf("the first value again: %q, want GET /track/:id", got)
	}
	if got := cat("/posts/hello-world/comments"); got != "GET /posts/hello-world/comments" {
		t.Errorf("another shape: %q", got)
	}
	// An id in the middle of a route, learnt the same way.
	for i := range 40 {
		got := cat(fmt.Sprintf("/posts/my-post-%c%c/comments", 'a'+i/26, 'a'+i%26))
		if want := "GET /posts/:id/comments"; i > 32 && got != want {
			t.Fatalf("slug %d: %q, want %q", i, got, want)
		}
	}
	// 40 resources under /api, each asked for again before the next is
	// first seen: values that repeat are routes, not ids.
	for i := range 40 {
		for range 2 {
			if got, want := cat(fmt.Sprintf("/api/res%c%c", 'a'+i/26, 'a'+i%26)), fmt.Sprintf("GET /api/res%c%c", 'a'+i/26, 'a'+i%26); got != want {
				t.Fatalf("resource %d: %q, want %q", i, got, want)
			}
		}
	}
	// Bounded: never more than foldShapes shapes followed; undecided
	// ones are forgotten when the bound is reached, so a route met later
	// is still learnt.
	most := 0
	for i := range 2 * foldShapes {
		for range 2 { // top-level names that repeat: each its own shape below
			cat(fmt.Sprintf("/area%d/list", i))
		}
		n := len(c.fold.values) + len(c.fold.state)
		if n > foldShapes {
			t.Fatalf("%d shapes followed, want at most %d", n, foldShapes)
		}
		most = max(most, n)
	}
	if most < foldShapes {
		t.Fatalf("at most %d shapes followed: the bound was not reached", most)
	}
	for i := range 40 {
		if got := cat(fmt.Sprintf("/late/u%dx", i)); i > 32 && got != "GET /late/:id" {
			t.Fatalf("a route met after the bound: %q, want GET /late/:id", got)
		}
	}
}

// TestCategorizeSeenRequestAllocatesNothing: the next request of a route
// seen before is named without a heap allocation (issue #15: memdiag names
// ~100k ops a second under a plain Node.js server), and the namings
// remembered are bounded.
func TestCategorizeSeenRequestAllocatesNothing(t *testing.T) {
	c := NewCategorizer(nil)
	b := &event.OpBegin{Kind: event.OpHTTPServer, HTTP: true, Request: event.Request{Method: "GET", Path: "/api/users/42/orders", Query: "limit=…"}}
	want := c.Categorize(b)
	if n := testing.AllocsPerRun(100, func() {
		if got := c.Categorize(b); got != want {
			t.Fatalf("named %+v, then %+v", want, got)
		}
	}); n != 0 {
		t.Errorf("Categorize allocated %v times an op", n)
	}
	table := reflect.ValueOf(c.known).UnsafePointer()
	for i := range 3 * maxKnown {
		c.Categorize(&event.OpBegin{Kind: event.OpHTTPServer, HTTP: true, Request: event.Request{Method: "GET", Path: fmt.Sprintf("/v%d", i)}})
		if len(c.known) > maxKnown {
			t.Fatalf("%d namings kept", len(c.known))
		}
		if reflect.ValueOf(c.known).UnsafePointer() != table {
			t.Fatalf("op %d: a new table (a full one is cleared, not replaced)", i)
		}
	}
}
