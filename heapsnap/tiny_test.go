package heapsnap

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tnode and tedge describe a hand-written snapshot.
type tnode struct {
	typ  string // node type name ("object", "synthetic", ...)
	name string
	id   int
	self int
}

type tedge struct {
	from, to int    // node ordinals
	typ      string // edge type name
	name     string // property name, or element index for element/hidden
}

var (
	tNodeTypes = []string{"hidden", "array", "string", "object", "code", "closure", "regexp", "number", "native", "synthetic", "concatenated string", "sliced string", "symbol", "bigint", "object shape"}
	tEdgeTypes = []string{"context", "element", "property", "internal", "hidden", "shortcut", "weak"}
)

// tinyJSON writes nodes and edges in V8's format (7 node fields, as Node 20).
func tinyJSON(t testing.TB, nodes []tnode, edges []tedge) []byte {
	strs := []string{""}
	sidx := map[string]int{"": 0}
	str := func(s string) int {
		if i, ok := sidx[s]; ok {
			return i
		}
		sidx[s] = len(strs)
		strs = append(strs, s)
		return len(strs) - 1
	}
	idx := func(list []string, s string) int {
		for i, x := range list {
			if x == s {
				return i
			}
		}
		t.Fatalf("unknown type %q", s)
		return -1
	}
	byFrom := make([][]tedge, len(nodes))
	for _, e := range edges {
		byFrom[e.from] = append(byFrom[e.from], e)
	}
	var nb, eb []string
	for i, n := range nodes {
		nb = append(nb, fmt.Sprintf("%d,%d,%d,%d,%d,0,0", idx(tNodeTypes, n.typ), str(n.name), n.id, n.self, len(byFrom[i])))
		for _, e := range byFrom[i] {
			name := 0
			if e.typ == "element" || e.typ == "hidden" {
				fmt.Sscan(e.name, &name)
			} else {
				name = str(e.name)
			}
			eb = append(eb, fmt.Sprintf("%d,%d,%d", idx(tEdgeTypes, e.typ), name, e.to*7))
		}
	}
	sj, _ := json.Marshal(strs)
	meta := `{"node_fields":["type","name","id","self_size","edge_count","trace_node_id","detachedness"],` +
		`"node_types":[` + mustJSON(tNodeTypes) + `,"string","number","number","number","number","number"],` +
		`"edge_fields":["type","name_or_index","to_node"],` +
		`"edge_types":[` + mustJSON(tEdgeTypes) + `,"string_or_number","node"]}`
	return []byte(fmt.Sprintf(`{"snapshot":{"meta":%s,"node_count":%d,"edge_count":%d,"trace_function_count":0},`+"\n"+
		`"nodes":[%s],`+"\n"+`"edges":[%s],`+"\n"+`"trace_function_infos":[],"trace_tree":[],"samples":[],"locations":[],`+"\n"+`"strings":%s}`,
		meta, len(nodes), len(eb), strings.Join(nb, ",\n"), strings.Join(eb, ",\n"), sj))
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func parseBytes(t testing.TB, b []byte) *Snapshot {
	t.Helper()
	s, err := Parse(context.Background(), bytes.NewReader(b), ParseOptions{Size: int64(len(b))})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return s
}

// A diamond with a weak edge and a shortcut:
//
//	root(0) → gcroots(1) → app(2) → a(3) → c(5) → d(6)
//	                         └──→ b(4) → c(5)
//	a(3) weak→ e(7);  b(4) → e(7);  c(5) shortcut→ b(4)
func diamond() ([]tnode, []tedge) {
	nodes := []tnode{
		{"synthetic", "", 1, 0},
		{"synthetic", "(GC roots)", 3, 0},
		{"object", "App", 5, 10},
		{"object", "A", 7, 20},
		{"object", "B", 9, 30},
		{"object", "C", 11, 40},
		{"array", "", 13, 50},
		{"string", "secret value", 15, 60},
	}
	edges := []tedge{
		{0, 1, "element", "1"},
		{1, 2, "element", "1"},
		{2, 3, "property", "a"},
		{2, 4, "property", "b"},
		{3, 5, "property", "c"},
		{4, 5, "property", "c"},
		{5, 6, "internal", "elements"},
		{3, 7, "weak", "w"},
		{4, 7, "property", "e"},
		{5, 4, "shortcut", "back"},
	}
	return nodes, edges
}

func diamondJSON(t testing.TB) []byte {
	n, e := diamond()
	return tinyJSON(t, n, e)
}

func TestDominatorsAndRetained(t *testing.T) {
	s := parseBytes(t, diamondJSON(t))
	g, err := analyze(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	// c is reached from a and b: app dominates it. e only through b
	// (the weak edge from a does not count). The shortcut is ignored.
	wantDom := []uint32{0, 0, 1, 2, 2, 2, 5, 4}
	for v, d := range wantDom {
		if g.dom[v] != d {
			t.Errorf("dom[%d] = %d, want %d", v, g.dom[v], d)
		}
	}
	wantRet := []uint64{210, 210, 210, 20, 90, 90, 50, 60}
	for v, r := range wantRet {
		if g.retained[v] != r {
			t.Errorf("retained[%d] = %d, want %d", v, g.retained[v], r)
		}
	}
	// The string's contents are not kept; class names are.
	for _, v := range s.strs {
		if v == "secret value" {
			t.Errorf("string contents kept in memory")
		}
	}
	if got := s.className(s.classKey(3)); got != "A" {
		t.Errorf("class of node 3 = %q, want A", got)
	}
	if got := s.className(s.classKey(7)); got != "(string)" {
		t.Errorf("class of node 7 = %q, want (string)", got)
	}
	// Path to d: shortest over strong edges, first found: app.a.c.
	p := pathText(t, s, g, 6)
	if want := "(array) ← C.elements ← A.c ← App.a ← (GC roots)[1]"; p != want {
		t.Errorf("path = %q, want %q", p, want)
	}
	// e is held through b only, not through the weak edge.
	if p, want := pathText(t, s, g, 7), "(string) ← B.e ← App.b ← (GC roots)[1]"; p != want {
		t.Errorf("path = %q, want %q", p, want)
	}
}

func pathText(t *testing.T, s *Snapshot, g *graph, v uint32) string {
	t.Helper()
	p, err := s.namePaths(context.Background(), [][]rawStep{g.path(v)})
	if err != nil {
		t.Fatal(err)
	}
	return (&Group{Path: p[0]}).PathText()
}

func TestGroupRetainedCountsOutermostOnly(t *testing.T) {
	// A list of three Nodes: the group's retained size is the head's, not
	// the sum of the three (which would count the tail three times).
	nodes := []tnode{
		{"synthetic", "", 1, 0},
		{"object", "Node", 3, 10},
		{"object", "Node", 5, 10},
		{"object", "Node", 7, 10},
	}
	edges := []tedge{{0, 1, "element", "1"}, {1, 2, "property", "next"}, {2, 3, "property", "next"}}
	s := parseBytes(t, tinyJSON(t, nodes, edges))
	g, err := analyze(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := summarize(context.Background(), s, g, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := sum.classes["Node"]
	if c.count != 3 || c.shallow != 30 || c.retained != 30 {
		t.Errorf("Node: count %d shallow %d retained %d, want 3 30 30", c.count, c.shallow, c.retained)
	}
}

func TestDiffTiny(t *testing.T) {
	// A: app → cache(Map) → table(array) with one entry.
	// B: the same ids for app and cache, a new bigger table with two new
	// entries; an unrelated object churned (deleted and a new one).
	a := []tnode{
		{"synthetic", "", 1, 0}, {"object", "App", 3, 10}, {"object", "Map", 5, 20},
		{"array", "", 7, 30}, {"object", "Entry", 9, 100}, {"object", "Temp", 11, 5},
	}
	ae := []tedge{{0, 1, "shortcut", "app"}, {1, 2, "property", "cache"}, {2, 3, "internal", "table"}, {3, 4, "element", "0"}, {1, 5, "property", "tmp"}}
	b := []tnode{
		{"synthetic", "", 1, 0}, {"object", "App", 3, 10}, {"object", "Map", 5, 20},
		{"array", "", 21, 60}, {"object", "Entry", 9, 100}, {"object", "Entry", 23, 1000}, {"object", "Entry", 25, 2000},
		{"object", "Temp", 27, 5},
	}
	be := []tedge{{0, 1, "shortcut", "app"}, {1, 2, "property", "cache"}, {2, 3, "internal", "table"},
		{3, 4, "element", "0"}, {3, 5, "element", "1"}, {3, 6, "element", "2"}, {1, 7, "property", "tmp"}}
	d, err := DiffSnapshots(context.Background(), parseBytes(t, tinyJSON(t, a, ae)), parseBytes(t, tinyJSON(t, b, be)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Groups) == 0 {
		t.Fatal("no groups")
	}
	top := d.Groups[0]
	// The new table (60) holds the old entry (100) and two new ones.
	if top.Name != "Map" || top.Grew != 60+100+1000+2000 || top.Holders != 1 {
		t.Errorf("top group %+v, want Map holding 3160 bytes", top)
	}
	if p, want := top.PathText(), "(array) ← Map.table ← App.cache"; p != want {
		t.Errorf("path %q, want %q", p, want)
	}
	var entry *Group
	for i := range d.Groups {
		if d.Groups[i].Name == "Entry" {
			entry = &d.Groups[i]
		}
	}
	if entry == nil || entry.CountA != 1 || entry.CountB != 3 || entry.New != 2 || entry.NewSize != 3000 || entry.ShallowDelta() != 3000 || entry.Deleted != 0 {
		t.Errorf("Entry group %+v", entry)
	}
	if d.NewObjects != 4 || d.NewBytes != 60+3000+5 {
		t.Errorf("new objects %d (%d bytes), want 4 (3065)", d.NewObjects, d.NewBytes)
	}
	for _, g := range d.Groups {
		if g.Name == "Temp" {
			t.Errorf("Temp did not grow but is listed: %+v", g)
		}
	}
	txt := string(d.Text())
	if !strings.Contains(txt, "Map.table ← App.cache") {
		t.Errorf("text lacks the path:\n%s", txt)
	}
	js, err := d.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var back Diff
	if err := json.Unmarshal(js, &back); err != nil || back.Groups[0].Name != "Map" {
		t.Errorf("JSON round trip: %v, %s", err, js)
	}
	sec := d.Section()
	if len(sec.Rows) != len(d.Groups) || sec.Rows[0][0] != "Map" || sec.Paths[0] != top.PathText() {
		t.Errorf("section %+v", sec)
	}
}

// bruteDominators: d dominates v iff v is unreachable from the root once
// d is removed (essential edges only).
func bruteDominators(s *Snapshot) []uint32 {
	n := uint32(len(s.ntype))
	reach := func(skip uint32) []bool {
		seen := make([]bool, n)
		if skip == 0 {
			return seen
		}
		seen[0] = true
		stack := []uint32{0}
		for len(stack) > 0 {
			u := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			for e := s.firstEdge[u]; e < s.firstEdge[u+1]; e++ {
				v := s.to(e)
				if v != skip && !seen[v] && s.essential(u, e) {
					seen[v] = true
					stack = append(stack, v)
				}
			}
		}
		return seen
	}
	all := reach(noNode)
	doms := make([][]uint32, n) // strict dominators of v
	for d := uint32(0); d < n; d++ {
		if !all[d] {
			continue
		}
		r := reach(d)
		for v := uint32(0); v < n; v++ {
			if v != d && all[v] && !r[v] {
				doms[v] = append(doms[v], d)
			}
		}
	}
	idom := make([]uint32, n)
	for v := uint32(0); v < n; v++ {
		idom[v] = noNode
		if !all[v] {
			continue
		}
		if v == 0 {
			idom[v] = 0
			continue
		}
		// the immediate dominator is the strict dominator dominated by all others
		for _, c := range doms[v] {
			ok := true
			for _, o := range doms[v] {
				if o != c && !contains(doms[c], o) {
					ok = false
					break
				}
			}
			if ok {
				idom[v] = c
			}
		}
	}
	return idom
}

func contains(a []uint32, x uint32) bool {
	for _, y := range a {
		if y == x {
			return true
		}
	}
	return false
}

func TestDominatorsRandomGraphs(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for iter := 0; iter < 300; iter++ {
		n := 2 + rng.Intn(30)
		nodes := make([]tnode, n)
		for i := range nodes {
			nodes[i] = tnode{"object", "O", 2*i + 1, 1 + rng.Intn(100)}
		}
		nodes[0].typ = "synthetic"
		var edges []tedge
		m := rng.Intn(3 * n)
		for k := 0; k < m; k++ {
			typ := []string{"property", "property", "property", "element", "internal", "weak", "shortcut"}[rng.Intn(7)]
			edges = append(edges, tedge{rng.Intn(n), rng.Intn(n), typ, "1"})
		}
		// a spine so most nodes are reachable
		for i := 1; i < n; i += 1 + rng.Intn(3) {
			edges = append(edges, tedge{rng.Intn(i), i, "property", "s"})
		}
		s := parseBytes(t, tinyJSON(t, nodes, edges))
		g, err := analyze(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		want := bruteDominators(s)
		for v := range want {
			if g.dom[v] != want[v] {
				t.Fatalf("graph %d (n=%d): dom[%d] = %d, brute force says %d", iter, n, v, g.dom[v], want[v])
			}
		}
		// retained = self + retained of dominated nodes
		for v := n - 1; v >= 0; v-- {
			if want[v] == noNode {
				continue
			}
			var sum uint64 = uint64(nodes[v].self)
			for c := range want {
				if c != 0 && want[c] == uint32(v) {
					sum += g.retained[c]
				}
			}
			if g.retained[v] != sum {
				t.Fatalf("graph %d: retained[%d] = %d, want %d", iter, v, g.retained[v], sum)
			}
		}
	}
}

func TestMalformed(t *testing.T) {
	good := diamondJSON(t)
	nodesAt := int64(bytes.Index(good, []byte(`"nodes":[`)))
	cases := []struct {
		name string
		in   []byte
		off  int64 // -1: any
		msg  string
	}{
		{"empty", nil, 0, "file ends early"},
		{"not json", []byte("hello"), 0, `expected '{'`},
		{"truncated in nodes", good[:nodesAt+20], nodesAt + 20, "file ends early"},
		{"truncated at the end", good[:len(good)-1], int64(len(good) - 1), "file ends early"},
		{"trailing garbage", append(append([]byte{}, good...), " x"...), int64(len(good) + 1), "after the end"},
		{"negative number", bytes.Replace(good, []byte(`"nodes":[9`), []byte(`"nodes":[-9`), 1), nodesAt + 9, "non-negative integer"},
		{"fraction", bytes.Replace(good, []byte(`"nodes":[9`), []byte(`"nodes":[9.5`), 1), nodesAt + 10, "fraction"},
		{"bad node type", bytes.Replace(good, []byte(`"nodes":[9`), []byte(`"nodes":[99`), 1), -1, "node type 99 out of range"},
		{"no meta", []byte(`{"nodes":[],"edges":[],"strings":[]}`), 9, "nodes before snapshot.meta"},
		{"meta without fields", []byte(`{"snapshot":{"meta":{}}}`), 13, "node_fields missing"},
		{"bad escape", bytes.Replace(good, []byte(`"(GC roots)"`), []byte(`"(GC \q roots)"`), 1), -1, `invalid escape`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(context.Background(), bytes.NewReader(c.in), ParseOptions{Size: int64(len(c.in))})
			var se *SyntaxError
			var te *truncErr
			if !errors.As(err, &se) && !errors.As(err, &te) {
				t.Fatalf("error %v (%T), want a *SyntaxError", err, err)
			}
			if te != nil {
				se = &te.SyntaxError
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") || !strings.Contains(msg, "byte offset") || !strings.Contains(msg, c.msg) {
				t.Errorf("message %q: want one line naming the offset and %q", msg, c.msg)
			}
			if c.off >= 0 && se.Offset != c.off {
				t.Errorf("offset %d, want %d (%s)", se.Offset, c.off, msg)
			}
		})
	}
	// Every truncation of a good snapshot is an error naming where it ends.
	for cut := 0; cut < len(good); cut += 7 {
		_, err := Parse(context.Background(), bytes.NewReader(good[:cut]), ParseOptions{})
		if err == nil {
			t.Fatalf("truncated at %d: no error", cut)
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("byte offset %d", cut)) && !errors.Is(err, ErrTruncated) {
			t.Errorf("truncated at %d: %v", cut, err)
		}
	}
	// Structural errors found after reading.
	nodes, edges := diamond()
	bad := tinyJSON(t, nodes, edges)
	bad = bytes.Replace(bad, []byte(`"edges":[`), []byte(`"edges":[0,`), 1) // one field too many
	if _, err := Parse(context.Background(), bytes.NewReader(bad), ParseOptions{}); err == nil {
		t.Errorf("edges of wrong length accepted")
	}
}

func FuzzParse(f *testing.F) {
	f.Add(diamondJSON(f))
	f.Add([]byte(`{"snapshot":{"meta":{"node_fields":["type","name","id","self_size","edge_count"],"node_types":[["synthetic"]],"edge_fields":["type","name_or_index","to_node"],"edge_types":[["property"]]}},"nodes":[0,0,1,0,1],"edges":[0,0,0],"strings":[""]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Parse(context.Background(), bytes.NewReader(b), ParseOptions{Size: int64(len(b))})
		if err != nil {
			if strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "byte offset") {
				t.Fatalf("error not one line with an offset: %q", err)
			}
			return
		}
		g, err := analyze(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		if g.retained[0] < uint64(s.nself[0]) {
			t.Fatalf("root retains less than itself")
		}
		if _, err := DiffSnapshots(context.Background(), s, s, Options{}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestFileNamesReadAgain: from a file, edge names are left out of memory
// and read again for the paths; the result is the same as from memory.
func TestFileNamesReadAgain(t *testing.T) {
	a, ae := diamond()
	b := append(append([]tnode{}, a...), tnode{"object", "Extra", 99, 500})
	be := append(append([]tedge{}, ae...), tedge{4, 8, "property", "extra"})
	dir := t.TempDir()
	pa, pb := filepath.Join(dir, "a.heapsnapshot"), filepath.Join(dir, "b.heapsnapshot")
	ja, jb := tinyJSON(t, a, ae), tinyJSON(t, b, be)
	// strings before nodes and edges: kept whole, still right
	jb = moveStringsFirst(t, jb)
	os.WriteFile(pa, ja, 0o600)
	os.WriteFile(pb, jb, 0o600)
	var calls []int64
	s, err := ParseFile(context.Background(), pb, func(done, total int64) { calls = append(calls, done, total) })
	if err != nil {
		t.Fatal(err)
	}
	if s.ename != nil {
		t.Errorf("edge names kept in memory when parsing a file")
	}
	if n := len(calls); n < 2 || calls[n-2] != int64(len(jb)) || calls[n-1] != int64(len(jb)) {
		t.Errorf("progress calls %v, want the last to be %d of %d", calls, len(jb), len(jb))
	}
	fromFile, err := DiffFiles(context.Background(), pa, pb, Options{})
	if err != nil {
		t.Fatal(err)
	}
	inMemory, err := DiffSnapshots(context.Background(), parseBytes(t, ja), parseBytes(t, jb), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(fromFile.Groups) == 0 || fromFile.Groups[0].Name != "B" {
		t.Fatalf("top group %+v, want B (holds the new Extra)", fromFile.Groups)
	}
	for i := range inMemory.Groups {
		if got, want := fromFile.Groups[i].PathText(), inMemory.Groups[i].PathText(); got != want {
			t.Errorf("group %d path from file %q, in memory %q", i, got, want)
		}
	}
	if p := fromFile.Groups[0].PathText(); p != "Extra ← B.extra ← App.b ← (GC roots)[1]" {
		t.Errorf("path %q", p)
	}
}

func moveStringsFirst(t *testing.T, b []byte) []byte {
	i := bytes.Index(b, []byte(`"strings":`))
	if i < 0 {
		t.Fatal("no strings")
	}
	strs := b[i : len(b)-1]
	rest := bytes.TrimRight(b[:i], ",\n")
	return append(append(append([]byte(`{`), strs...), ',', '\n'), append(rest[1:], '}')...)
}
