package heapsnap

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
)

// Options tunes DiffFiles and DiffSnapshots.
type Options struct {
	// Top is how many groups the diff keeps (default 20).
	Top int
	// Progress, if set, is called while a file is read: which file (0 for
	// A, 1 for B), bytes read, file size.
	Progress func(file int, done, total int64)
}

// Diff compares two heap snapshots of one process: what grew from A to B,
// which group of objects holds it, and a retainer path to it.
type Diff struct {
	// Snapshots describes A and B, in that order.
	Snapshots [2]SnapshotInfo `json:"snapshots"`
	// NewObjects and NewBytes count the objects of B whose id is not in A
	// and their shallow size.
	NewObjects int64  `json:"new_objects"`
	NewBytes   uint64 `json:"new_bytes"`
	// Groups are the groups that grew most, largest growth first.
	Groups []Group `json:"groups"`
}

// SnapshotInfo describes one snapshot of a diff.
type SnapshotInfo struct {
	Path        string `json:"path,omitempty"`
	Nodes       int    `json:"nodes"`
	Edges       int    `json:"edges"`
	Unreachable int    `json:"unreachable"` // nodes no strong path reaches (left out of groups)
	TotalBytes  uint64 `json:"total_bytes"` // retained size of the root: the reachable heap
	Passes      int    `json:"dominator_passes"`
}

// Group is one class of objects (constructor name, or "(string)",
// "(array)", … as DevTools' Summary groups them) and how it changed.
type Group struct {
	Name string `json:"name"`
	// Grew is the retained size of the new objects (ids absent from A)
	// that objects of this group already present in A keep alone (they
	// dominate them): the memory this group holds on to since A. The
	// diff is ranked by Grew, then by RetainedDelta.
	Grew int64 `json:"grew_bytes"`
	// Holders is how many objects of the group hold new objects.
	Holders int64 `json:"holders"`

	CountA  int64 `json:"count_a"`
	CountB  int64 `json:"count_b"`
	New     int64 `json:"new"`      // objects in B whose id is not in A
	NewSize int64 `json:"new_size"` // their shallow size
	Deleted int64 `json:"deleted"`  // CountA - (CountB - New)

	ShallowA int64 `json:"shallow_a"`
	ShallowB int64 `json:"shallow_b"`
	// RetainedA/B is the group's retained size as DevTools computes it:
	// the objects of the group that no other object of the group
	// dominates.
	RetainedA int64 `json:"retained_a"`
	RetainedB int64 `json:"retained_b"`

	// Path is a representative retainer path in B, from the object up to
	// a GC root: the first step is the object, each later step holds the
	// previous one through Edge.
	Path []Step `json:"path"`
}

// Step is one object on a retainer path and the edge through which it
// holds the step before it.
type Step struct {
	Object   string `json:"object"`
	Edge     string `json:"edge,omitempty"`
	EdgeType string `json:"edge_type,omitempty"`
}

// CountDelta, ShallowDelta and RetainedDelta are B minus A.
func (g *Group) CountDelta() int64    { return g.CountB - g.CountA }
func (g *Group) ShallowDelta() int64  { return g.ShallowB - g.ShallowA }
func (g *Group) RetainedDelta() int64 { return g.RetainedB - g.RetainedA }

// PathText renders the path the way the text report prints it:
// "(array) ← Map.table ← Cache.sessions ← …".
func (g *Group) PathText() string {
	if len(g.Path) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString(g.Path[0].Object)
	for _, st := range g.Path[1:] {
		b.WriteString(" ← ")
		b.WriteString(st.Object)
		if st.Edge != "" {
			if strings.Trim(st.Edge, "0123456789") == "" {
				b.WriteString("[" + st.Edge + "]")
				continue
			}
			if !strings.HasPrefix(st.Edge, "[") {
				b.WriteByte('.')
			}
			b.WriteString(st.Edge)
		}
	}
	return b.String()
}

// classStats is one group in one snapshot.
type classStats struct {
	count, shallow, retained int64
	newCount, newSize        int64
	grew, holders            int64
	rep, repGrew, repAny     uint32 // largest new object; largest new subtree held alone; largest object
	repRet, repGrewRet       uint64
	repAnyRet                uint64
}

type summary struct {
	info    SnapshotInfo
	classes map[string]*classStats
	ids     []uint32 // sorted ids of every node (A only)
}

// newObjects marks the nodes of s whose id is not in prev (sorted).
func newObjects(s *Snapshot, prev []uint32) []uint64 {
	n := uint32(len(s.nid))
	isNew := make([]uint64, (n+63)/64)
	for v := uint32(0); v < n; v++ {
		if _, found := slices.BinarySearch(prev, s.nid[v]); !found {
			isNew[v>>6] |= 1 << (v & 63)
		}
	}
	return isNew
}

// summarize groups the nodes of s. isNew (nil for A) marks new objects.
func summarize(ctx context.Context, s *Snapshot, g *graph, isNew []uint64) (*summary, error) {
	n := uint32(len(s.ntype))
	sum := &summary{classes: map[string]*classStats{}}
	sum.info = SnapshotInfo{Nodes: int(n), Edges: len(s.eto), TotalBytes: g.retained[0], Passes: g.passes}
	byKey := map[uint64]*classStats{}
	stats := func(v uint32) *classStats {
		k := s.classKey(v)
		c := byKey[k]
		if c == nil {
			name := s.className(k)
			if c = sum.classes[name]; c == nil {
				c = &classStats{rep: noNode, repGrew: noNode, repAny: noNode}
				sum.classes[name] = c
			}
			byKey[k] = c
		}
		return c
	}
	newObj := func(v uint32) bool { return isNew != nil && isNew[v>>6]&(1<<(v&63)) != 0 }
	var holder []uint64 // nodes already counted as holders
	if isNew != nil {
		holder = make([]uint64, (n+63)/64)
	}
	// The synthetic root (node 0) is no object: it is in no group.
	for v := uint32(1); v < n; v++ {
		if g.dom[v] == noNode {
			sum.info.Unreachable++
			continue
		}
		c := stats(v)
		c.count++
		c.shallow += int64(s.nself[v])
		if newObj(v) {
			c.newCount++
			c.newSize += int64(s.nself[v])
			if g.retained[v] > c.repRet || c.rep == noNode {
				c.rep, c.repRet = v, g.retained[v]
			}
			if h := g.dom[v]; h != 0 && !newObj(h) { // held by one old object, not by several roots
				hc := stats(h)
				hc.grew += int64(g.retained[v])
				if holder[h>>6]&(1<<(h&63)) == 0 {
					hc.holders++
					holder[h>>6] |= 1 << (h & 63)
				}
				if g.retained[v] > hc.repGrewRet || hc.repGrew == noNode {
					hc.repGrew, hc.repGrewRet = v, g.retained[v]
				}
			}
		}
		if g.retained[v] > c.repAnyRet || c.repAny == noNode {
			c.repAny, c.repAnyRet = v, g.retained[v]
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Group retained sizes (DevTools' calculateClassesRetainedSize): walk
	// the dominator tree, count a node when no dominator of it is of its
	// group. Children lists by counting sort on the dominator.
	// The children of x end up in kids[start[x]:start[x+1]]: count, sum
	// to block ends, then fill each block from its end.
	start := make([]uint32, n+1)
	for v := uint32(1); v < n; v++ {
		if d := g.dom[v]; d != noNode {
			start[d]++
		}
	}
	for i := uint32(1); i <= n; i++ {
		start[i] += start[i-1]
	}
	kids := make([]uint32, start[n])
	for v := uint32(1); v < n; v++ {
		if d := g.dom[v]; d != noNode {
			start[d]--
			kids[start[d]] = v
		}
	}
	seen := map[*classStats]int32{}
	type frame struct {
		v    uint32
		next uint32
		c    *classStats
	}
	stack := []frame{{v: 0, next: start[0]}}
	for len(stack) > 0 {
		top := &stack[len(stack)-1]
		if top.next < start[top.v+1] {
			v := kids[top.next]
			top.next++
			c := stats(v)
			if seen[c] == 0 {
				c.retained += int64(g.retained[v])
			}
			seen[c]++
			stack = append(stack, frame{v: v, next: start[v], c: c})
			continue
		}
		if top.c != nil {
			seen[top.c]--
		}
		stack = stack[:len(stack)-1]
	}
	start, kids, stack = nil, nil, nil
	runtime.GC()
	return sum, nil
}

// rawStep is a step of a retainer path before its edge is named.
type rawStep struct {
	node, edge uint32 // edge == noNode: none
}

// path walks BFS parents from v up to (not including) the root.
func (g *graph) path(v uint32) []rawStep {
	steps := []rawStep{{node: v, edge: noNode}}
	for u := v; g.parent[u] != noNode && g.parent[u] != 0 && len(steps) < 64; {
		p := g.parent[u]
		st := rawStep{node: p, edge: noNode}
		if e, ok := g.s.edgeBetween(p, u); ok {
			st.edge = e
		}
		steps = append(steps, st)
		u = p
	}
	return steps
}

// namePaths turns raw paths into Steps, reading edge names from the file
// again when the snapshot left them there.
func (s *Snapshot) namePaths(ctx context.Context, raw [][]rawStep) ([][]Step, error) {
	names := map[uint32]uint32{} // edge → name_or_index
	for _, p := range raw {
		for _, st := range p {
			if st.edge != noNode {
				names[st.edge] = 0
			}
		}
	}
	if s.ename != nil {
		for e := range names {
			names[e] = s.ename[e]
		}
	} else if len(names) > 0 {
		if err := s.readEdgeNames(ctx, names); err != nil {
			return nil, err
		}
	}
	out := make([][]Step, len(raw))
	for i, p := range raw {
		for _, st := range p {
			step := Step{Object: s.nodeLabel(st.node)}
			if st.edge != noNode {
				step.Edge = s.edgeLabel(st.edge, names[st.edge])
				step.EdgeType = s.edgeTypes[s.edgeType(st.edge)]
			}
			out[i] = append(out[i], step)
		}
	}
	return out, nil
}

// ParseFile parses the snapshot in file path.
func ParseFile(ctx context.Context, path string, progress func(done, total int64)) (*Snapshot, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	opts := ParseOptions{Size: fi.Size(), path: path}
	if progress != nil {
		opts.Progress = func(done int64) { progress(done, fi.Size()) }
	}
	s, err := Parse(ctx, f, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// DiffFiles compares the heap snapshots in files a and b (a taken first).
// It holds one parsed snapshot at a time (plus A's sorted ids), so its
// peak memory is about that of the larger snapshot's arrays: see the
// package documentation for the measured ratio to the file size.
func DiffFiles(ctx context.Context, a, b string, opts Options) (*Diff, error) {
	prog := func(i int) func(done, total int64) {
		if opts.Progress == nil {
			return nil
		}
		return func(done, total int64) { opts.Progress(i, done, total) }
	}
	sa, err := ParseFile(ctx, a, prog(0))
	if err != nil {
		return nil, err
	}
	ga, err := analyze(ctx, sa)
	if err != nil {
		return nil, err
	}
	sumA, err := summarize(ctx, sa, ga, nil)
	if err != nil {
		return nil, err
	}
	sumA.ids = sa.nid // A's ids, sorted, are all that is left of it
	slices.Sort(sumA.ids)
	sa, ga = nil, nil
	runtime.GC()
	debug.FreeOSMemory()
	sb, err := ParseFile(ctx, b, prog(1))
	if err != nil {
		return nil, err
	}
	d, err := diffWith(ctx, sumA, sb, opts)
	if err != nil {
		return nil, err
	}
	d.Snapshots[0].Path, d.Snapshots[1].Path = a, b
	return d, nil
}

// DiffSnapshots compares two parsed snapshots (a taken first).
func DiffSnapshots(ctx context.Context, a, b *Snapshot, opts Options) (*Diff, error) {
	ga, err := analyze(ctx, a)
	if err != nil {
		return nil, err
	}
	sumA, err := summarize(ctx, a, ga, nil)
	if err != nil {
		return nil, err
	}
	sumA.ids = slices.Sorted(slices.Values(a.nid))
	return diffWith(ctx, sumA, b, opts)
}

func diffWith(ctx context.Context, sumA *summary, b *Snapshot, opts Options) (*Diff, error) {
	isNew := newObjects(b, sumA.ids)
	if b.path != "" {
		b.nid = nil // B is ours (DiffFiles): its ids are no longer needed
	}
	sumA.ids = nil
	gb, err := analyze(ctx, b)
	if err != nil {
		return nil, err
	}
	sumB, err := summarize(ctx, b, gb, isNew)
	if err != nil {
		return nil, err
	}
	top := opts.Top
	if top <= 0 {
		top = 20
	}
	d := &Diff{Snapshots: [2]SnapshotInfo{sumA.info, sumB.info}}
	zero := &classStats{rep: noNode, repGrew: noNode, repAny: noNode}
	names := map[string]bool{}
	for name := range sumA.classes {
		names[name] = true
	}
	for name := range sumB.classes {
		names[name] = true
	}
	type cand struct {
		g      Group
		rep    uint32
		sortBy [3]int64
	}
	var all []cand
	for name := range names {
		ca, cb := sumA.classes[name], sumB.classes[name]
		if ca == nil {
			ca = zero
		}
		if cb == nil {
			cb = zero
		}
		d.NewObjects += cb.newCount
		d.NewBytes += uint64(cb.newSize)
		gr := Group{
			Name: name, Grew: cb.grew, Holders: cb.holders,
			CountA: ca.count, CountB: cb.count, New: cb.newCount, NewSize: cb.newSize,
			Deleted:  ca.count - (cb.count - cb.newCount),
			ShallowA: ca.shallow, ShallowB: cb.shallow,
			RetainedA: ca.retained, RetainedB: cb.retained,
		}
		if gr.Grew <= 0 && gr.RetainedDelta() <= 0 && gr.ShallowDelta() <= 0 {
			continue
		}
		rep := cb.repGrew
		if rep == noNode {
			rep = cb.rep
		}
		if rep == noNode {
			rep = cb.repAny
		}
		all = append(all, cand{g: gr, rep: rep, sortBy: [3]int64{gr.Grew, gr.RetainedDelta(), gr.ShallowDelta()}})
	}
	sort.Slice(all, func(i, j int) bool {
		for k := range all[i].sortBy {
			if all[i].sortBy[k] != all[j].sortBy[k] {
				return all[i].sortBy[k] > all[j].sortBy[k]
			}
		}
		return all[i].g.Name < all[j].g.Name
	})
	if len(all) > top {
		all = all[:top]
	}
	raw := make([][]rawStep, len(all))
	for i, c := range all {
		if c.rep != noNode {
			raw[i] = gb.path(c.rep)
		}
	}
	paths, err := b.namePaths(ctx, raw)
	if err != nil {
		return nil, err
	}
	for i, c := range all {
		c.g.Path = paths[i]
		d.Groups = append(d.Groups, c.g)
	}
	return d, nil
}

// JSON encodes the diff (indented, with a final newline).
func (d *Diff) JSON() ([]byte, error) {
	if d.Groups == nil {
		d.Groups = []Group{}
	}
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Text renders the diff for a terminal.
func (d *Diff) Text() []byte {
	var b bytes.Buffer
	a, bb := d.Snapshots[0], d.Snapshots[1]
	fmt.Fprintf(&b, "What grew from A to B\n")
	fmt.Fprintf(&b, "  A: %s  %d objects, %s reachable\n", orDash(a.Path), a.Nodes, bytesText(int64(a.TotalBytes)))
	fmt.Fprintf(&b, "  B: %s  %d objects, %s reachable (%s)\n", orDash(bb.Path), bb.Nodes, bytesText(int64(bb.TotalBytes)), signed(int64(bb.TotalBytes)-int64(a.TotalBytes)))
	fmt.Fprintf(&b, "  new in B: %d objects, %s shallow\n\n", d.NewObjects, bytesText(int64(d.NewBytes)))
	if len(d.Groups) == 0 {
		b.WriteString("Nothing grew.\n")
		return b.Bytes()
	}
	fmt.Fprintf(&b, "%-3s %-28s %11s %11s %11s %9s %9s\n", "#", "group", "held new", "Δretained", "Δshallow", "Δcount", "new")
	for i, g := range d.Groups {
		fmt.Fprintf(&b, "%-3d %-28s %11s %11s %11s %9s %9d\n", i+1, clip(g.Name, 28), signed(g.Grew), signed(g.RetainedDelta()), signed(g.ShallowDelta()), signedN(g.CountDelta()), g.New)
		if p := g.PathText(); p != "" {
			fmt.Fprintf(&b, "    %s\n", p)
		}
	}
	b.WriteString("\nheld new: retained size of objects new in B that this group's older objects alone keep.\n")
	return b.Bytes()
}

// Section is the diff as a table the HTML report can render without
// knowing this package: a title, a one-line summary, column names, rows
// of cells, and one retainer path per row.
type Section struct {
	Title   string     `json:"title"`
	Summary string     `json:"summary"`
	Columns []string   `json:"columns"`
	Rows    [][]string `json:"rows"`
	Paths   []string   `json:"paths"`
}

// Section returns the diff as a report section.
func (d *Diff) Section() Section {
	a, b := d.Snapshots[0], d.Snapshots[1]
	sec := Section{
		Title: "What grew between the heap snapshots",
		Summary: fmt.Sprintf("%s → %s: reachable heap %s → %s (%s), %d new objects",
			orDash(a.Path), orDash(b.Path), bytesText(int64(a.TotalBytes)), bytesText(int64(b.TotalBytes)),
			signed(int64(b.TotalBytes)-int64(a.TotalBytes)), d.NewObjects),
		Columns: []string{"group", "held new", "Δretained", "Δshallow", "Δcount", "new"},
	}
	for _, g := range d.Groups {
		sec.Rows = append(sec.Rows, []string{g.Name, signed(g.Grew), signed(g.RetainedDelta()), signed(g.ShallowDelta()), signedN(g.CountDelta()), fmt.Sprint(g.New)})
		sec.Paths = append(sec.Paths, g.PathText())
	}
	return sec
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func signedN(v int64) string {
	if v > 0 {
		return fmt.Sprintf("+%d", v)
	}
	return fmt.Sprint(v)
}

func signed(v int64) string {
	if v > 0 {
		return "+" + bytesText(v)
	}
	if v < 0 {
		return "-" + bytesText(-v)
	}
	return "0"
}

func bytesText(v int64) string {
	switch {
	case v >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(v)/(1<<30))
	case v >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(v)/(1<<20))
	case v >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(v)/(1<<10))
	}
	return fmt.Sprintf("%d B", v)
}
