package attribution_test

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/memdiag/memdiag/attribution"
	"github.com/memdiag/memdiag/config"
	"github.com/memdiag/memdiag/event"
)

// served is the begin of a served HTTP request, op id on process 100.
func served(i int, id uint64, method, path string) *event.OpBegin {
	return &event.OpBegin{Header: event.Header{Time: at(i), PID: 100, TID: 100}, OpID: id, Kind: event.OpHTTPServer, FD: 10 + int32(id), HTTP: true, Request: event.Request{Method: method, Path: path}}
}

// call is the begin of an outbound HTTP call to dest.
func call(i int, id uint64, dest, path string) *event.OpBegin {
	return &event.OpBegin{Header: event.Header{Time: at(i), PID: 100, TID: 100}, OpID: id, Kind: event.OpOutbound, FD: 10 + int32(id),
		Dest: netip.MustParseAddrPort(dest), HTTP: true, Request: event.Request{Method: "GET", Path: path}}
}

// end is the end of op id carrying its final counters (anon bytes), or
// none (its bucket was gone) when bytes < 0.
func end(i int, id uint64, bytes int64) *event.OpEnd {
	e := &event.OpEnd{Header: event.Header{Time: at(i), PID: 100, TID: 100}, OpID: id, Reason: event.EndNext}
	if bytes >= 0 {
		e.HasFinal = true
		e.Final.RSS[event.RSSAnon] = bytes
	}
	return e
}

// opBucket is op id's bucket as a snapshot reads it while the op is open.
func opBucket(id uint64, bytes int64) event.Bucket { return anon(100, event.BucketOp, id, bytes, "") }

// conserved is a snapshot at second i whose Total is its buckets' sum plus
// what ended ops took out of the kernel (ended): conservation holds when
// the account puts every byte in exactly one bucket.
func conserved(i int, ended int64, buckets ...event.Bucket) *event.Snapshot {
	s := snap(i, nil, buckets...)
	s.Total += ended
	s.Peak = s.Total
	return s
}

// cat is a category as these tests check it.
type cat struct {
	Name     string
	Ops      int
	OpenOps  int
	Resident int64
}

// opCats are the op categories of a summary (http, outbound, unknown),
// by name.
func opCats(s *attribution.Summary) []cat {
	var out []cat
	for _, c := range s.Categories {
		if c.Kind == attribution.KindHTTP || c.Kind == attribution.KindOutbound || c.Kind == attribution.KindUnknown {
			out = append(out, cat{c.Name, c.Ops, c.OpenOps, c.Resident()})
		}
	}
	slices.SortFunc(out, func(a, b cat) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// message is a WebSocket message on the connection upgraded by GET /gun.
func message(i int, id uint64) *event.OpBegin {
	b := served(i, id, "GET", "/gun")
	b.Proto = "ws"
	return b
}

func burstRules(t *testing.T) *config.Config {
	t.Helper()
	cfg, err := config.Parse("rules.yaml", []byte("categories:\n  - name: peer_sync\n    http: { path_prefix: /gun }\n    cycle_gap: 5s\n"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func syncRules(t *testing.T) *config.Config {
	t.Helper()
	cfg, err := config.Parse("rules.yaml", []byte("categories:\n  - name: gun_sync\n    outbound: { port: 8765 }\n    cycle_gap: 5s\n"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestOpLifecycle feeds op begins, ends and snapshots to an account and
// checks where every op's bytes land, exactly.
func TestOpLifecycle(t *testing.T) {
	base := other(100, event.BucketBaseline, 50*mib)
	tests := []struct {
		name    string
		opts    attribution.Options
		events  []event.Event
		want    []cat
		top     string // the first category's top op, when set
		notices []string
		evicted int
		forget  []event.BucketKey
	}{
		{
			name: "begin then end with its counters",
			events: []event.Event{
				served(1, 1, "GET", "/api/records/42"), end(2, 1, 3*mib),
				conserved(3, 3*mib, base),
			},
			want: []cat{{"GET /api/records/:id", 1, 0, 3 * mib}},
			top:  "GET /api/records/42",
		},
		{
			name: "open op counted with its latest snapshot",
			events: []event.Event{
				served(1, 1, "POST", "/api/voice"),
				conserved(2, 0, base, opBucket(1, 1*mib)),
				conserved(3, 0, base, opBucket(1, 2*mib)),
			},
			want: []cat{{"POST /api/voice", 1, 1, 2 * mib}},
		},
		{
			name: "end without counters takes the last snapshot's",
			events: []event.Event{
				served(1, 1, "GET", "/a"),
				conserved(2, 0, base, opBucket(1, 5*mib)),
				end(3, 1, -1),
				conserved(4, 5*mib, base),
			},
			want: []cat{{"GET /a", 1, 0, 5 * mib}},
		},
		{
			name: "end whose begin was lost counts as unknown",
			events: []event.Event{
				end(1, 9, 4*mib),
				conserved(2, 4*mib, base),
			},
			want: []cat{{"unknown", 1, 0, 4 * mib}},
			top:  "unknown (begin lost)",
		},
		{
			name: "a repeated begin is one op",
			events: []event.Event{
				served(1, 1, "GET", "/a"), served(1, 1, "GET", "/a"), end(2, 1, mib),
				conserved(3, mib, base),
			},
			want: []cat{{"GET /a", 1, 0, mib}},
		},
		{
			name: "op bucket before its begin: unknown until named",
			events: []event.Event{
				conserved(1, 0, base, opBucket(1, mib)),
				served(2, 1, "GET", "/late"),
				conserved(3, 0, base, opBucket(1, 2*mib)),
			},
			want: []cat{{"GET /late", 1, 1, 2 * mib}},
		},
		{
			name: "op bucket whose begin never comes becomes unknown",
			events: []event.Event{
				conserved(1, 0, base, opBucket(1, mib)),
				conserved(2, 0, base, opBucket(1, mib)),
				conserved(3, 0, base, opBucket(1, mib)),
				conserved(4, 0, base, opBucket(1, 2*mib)),
			},
			want: []cat{{"unknown", 1, 1, 2 * mib}},
		},
		{
			name: "calls closer than the cycle gap make one cycle",
			opts: attribution.Options{Categorizer: attribution.NewCategorizer(syncRules(t))},
			events: []event.Event{
				call(1, 1, "10.0.0.5:8765", "/sync"), end(2, 1, 2*mib),
				call(4, 2, "10.0.0.5:8765", "/changes"), end(5, 2, 3*mib), // 2 s after: same cycle
				call(20, 3, "10.0.0.5:8765", "/sync"), end(21, 3, 1*mib), // 15 s after: a new cycle
				conserved(30, 6*mib, base), // 9 s after: the second cycle closes
			},
			want: []cat{{"gun_sync", 2, 0, 6 * mib}},
			top:  "out 10.0.0.5:8765 GET /sync",
		},
		{
			// The first call holds the cycle: it must outlive its end
			// while the others run (ended ops are reused).
			name: "overlapping calls of a cycle, the first ending first",
			opts: attribution.Options{Categorizer: attribution.NewCategorizer(syncRules(t))},
			events: []event.Event{
				call(1, 1, "10.0.0.5:8765", "/sync"), call(2, 2, "10.0.0.5:8765", "/changes"),
				end(3, 1, 2*mib), call(3, 3, "10.0.0.5:8765", "/changes"),
				end(4, 2, 3*mib), end(4, 3, mib),
				call(20, 4, "10.0.0.5:8765", "/sync"), end(21, 4, 1*mib), // 16 s after: a new cycle
				conserved(30, 7*mib, base),
			},
			want: []cat{{"gun_sync", 2, 0, 7 * mib}},
			top:  "out 10.0.0.5:8765 GET /sync",
		},
		{
			name: "messages of a WebSocket route closer than its cycle gap make one burst",
			opts: attribution.Options{Categorizer: attribution.NewCategorizer(burstRules(t))},
			events: []event.Event{
				served(1, 1, "GET", "/gun"), end(2, 1, 0), // the upgrade
				message(3, 2), end(3, 2, mib), message(3, 3), end(4, 3, mib), // one burst with the upgrade
				message(20, 4), end(20, 4, mib), message(21, 5), end(21, 5, mib), // a second burst
				conserved(30, 4*mib, base),
			},
			want: []cat{{"peer_sync", 2, 0, 4 * mib}},
			top:  "GET /gun",
		},
		{
			name: "a cycle over the growth threshold is noticed once, whole",
			opts: attribution.Options{Categorizer: attribution.NewCategorizer(syncRules(t)), GrowthRSS: 4 * mib},
			events: []event.Event{
				call(1, 1, "10.0.0.5:8765", "/sync"), end(2, 1, 2*mib),
				call(3, 2, "10.0.0.5:8765", "/changes"), end(4, 2, 3*mib),
				conserved(10, 5*mib, base),
			},
			want:    []cat{{"gun_sync", 1, 0, 5 * mib}},
			notices: []string{"gun_sync: out 10.0.0.5:8765 GET /sync ×2 5242880"},
		},
		{
			name: "a full op table ends the oldest op",
			opts: attribution.Options{MaxOpenOps: 2},
			events: []event.Event{
				served(1, 1, "GET", "/one"),
				served(2, 2, "GET", "/two"),
				conserved(3, 0, base, opBucket(1, mib), opBucket(2, mib)),
				served(4, 3, "GET", "/three"), // evicts op 1, ended with its snapshot's 1 MiB
				conserved(5, 0, base, opBucket(1, mib), opBucket(2, mib)),
			},
			want:    []cat{{"GET /one", 1, 0, mib}, {"GET /three", 1, 1, 0}, {"GET /two", 1, 1, mib}},
			evicted: 1,
		},
		{
			name: "an op whose counters stop moving ends and leaves the kernel",
			opts: attribution.Options{StaleOp: time.Minute},
			events: []event.Event{
				served(1, 1, "GET", "/stuck"),
				conserved(2, 0, base, opBucket(1, mib)),
				conserved(90, 0, base, opBucket(1, mib)),
			},
			want:   []cat{{"GET /stuck", 1, 0, mib}},
			forget: []event.BucketKey{{PID: 100, Kind: event.BucketOp, ID: 1}},
		},
		{
			// The ring buffer was full when the kernel ended op 1: its
			// end record was lost and its bucket stayed. Op 2 begun on
			// the same socket says op 1 ended; the next snapshot's read
			// of its bucket is final, and the kernel forgets it.
			name: "an op whose end was lost ends at the next snapshot once its socket began another",
			events: []event.Event{
				served(1, 1, "GET", "/a"),
				func() *event.OpBegin { b := served(2, 2, "GET", "/b"); b.FD = 11; return b }(),
				conserved(3, 0, base, opBucket(1, mib), opBucket(2, 0)),
			},
			want:   []cat{{"GET /a", 1, 0, mib}, {"GET /b", 1, 1, 0}},
			forget: []event.BucketKey{{PID: 100, Kind: event.BucketOp, ID: 1}},
		},
		{
			name: "an op on another socket does not end an open one",
			events: []event.Event{
				served(1, 1, "GET", "/a"),
				served(2, 2, "GET", "/b"),
				conserved(3, 0, base, opBucket(1, mib), opBucket(2, 0)),
			},
			want: []cat{{"GET /a", 1, 1, mib}, {"GET /b", 1, 1, 0}},
		},
		{
			name: "what an op gives back after it ended is its category's",
			events: []event.Event{
				served(1, 1, "GET", "/map"),
				&event.OpEnd{Header: event.Header{Time: at(2), PID: 100}, OpID: 1, HasFinal: true, Final: event.Counters{RSS: [4]int64{0, 8 * mib, 0, 0}, Mapped: 8 * mib, Retained: 8 * mib}},
				func() *event.Snapshot {
					s := conserved(3, 8*mib-6*mib, base)
					f := anon(100, event.BucketFreed, 1, -6*mib, "")
					f.Unmapped, f.Retained = 6*mib, -6*mib
					s.Freed = []event.Bucket{f}
					return s
				}(),
			},
			want: []cat{{"GET /map", 1, 0, 2 * mib}},
		},
		{
			// The maps are read apart from the ring buffer: a snapshot can
			// carry a give-back of an op whose begin and end records are
			// still on their way. It was "freed (op forgotten)" for good,
			// which made a route that frees every Buffer it allocates look
			// like it kept 7% of them (node-buffers with --exact-external).
			name: "a give-back read before its op's begin is its category's once the begin comes",
			events: []event.Event{
				func() *event.Snapshot {
					s := conserved(1, -6*mib, base)
					f := anon(100, event.BucketFreed, 1, -6*mib, "")
					f.Unmapped, f.Retained = 6*mib, -6*mib
					s.Freed = []event.Bucket{f}
					return s
				}(),
				served(2, 1, "GET", "/map"),
				&event.OpEnd{Header: event.Header{Time: at(2), PID: 100}, OpID: 1, HasFinal: true, Final: event.Counters{RSS: [4]int64{0, 8 * mib, 0, 0}, Mapped: 8 * mib, Retained: 8 * mib}},
				conserved(3, 8*mib-6*mib, base),
			},
			want: []cat{{"GET /map", 1, 0, 2 * mib}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := attribution.New(100, t0)
			a.SetOptions(tt.opts)
			var notices []string
			var forget []event.BucketKey
			for _, ev := range tt.events {
				a.Apply(ev)
				keys, _ := a.Retired()
				forget = append(forget, keys...)
				for _, n := range a.Notices() {
					notices = append(notices, fmt.Sprintf("%s: %s ×%d %d", n.Category, n.Name, n.Ops, n.Counters.Resident()))
				}
			}
			s := a.Summary()
			if got := opCats(s); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("op categories =\n%+v\nwant\n%+v", got, tt.want)
			}
			if u := s.Unattributed(); u != 0 {
				t.Errorf("unattributed = %d, want exactly 0 (conservation)", u)
			}
			var sum int64
			for _, b := range s.Buckets {
				sum += b.Resident()
			}
			if sum != s.Growth.Resident() {
				t.Errorf("buckets sum to %d, growth is %d", sum, s.Growth.Resident())
			}
			if tt.top != "" {
				var top string
				for _, c := range s.Categories {
					if c.Name == tt.want[0].Name && len(c.Top) > 0 {
						top = c.Top[0].Name
					}
				}
				if top != tt.top {
					t.Errorf("top op = %q, want %q", top, tt.top)
				}
			}
			if !reflect.DeepEqual(notices, tt.notices) {
				t.Errorf("notices = %q, want %q", notices, tt.notices)
			}
			if s.OpsEvicted != tt.evicted {
				t.Errorf("ops evicted = %d, want %d", s.OpsEvicted, tt.evicted)
			}
			if !reflect.DeepEqual(forget, tt.forget) {
				t.Errorf("buckets the kernel should forget = %v, want %v", forget, tt.forget)
			}
		})
	}
}
