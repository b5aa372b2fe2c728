package heapsnap

import (
	"context"
	"runtime"
	"strconv"
)

// graph holds what Analyze derives from a Snapshot: dominators, retained
// sizes and a shortest-path parent per node (for retainer paths).
type graph struct {
	s        *Snapshot
	dom      []uint32 // immediate dominator ordinal; the root's is itself; noNode if unreachable
	retained []uint64 // retained size in bytes
	parent   []uint32 // BFS parent from the root over non-weak edges; noNode for the root and unreachable nodes
	passes   int      // dominator iterations until stable
}

// essential reports whether edge e of node from counts for dominators and
// paths: weak edges never do, shortcuts only from the root (DevTools'
// isEssentialEdge: they mark the user's global objects).
func (s *Snapshot) essential(from uint32, e uint32) bool {
	t := s.edgeType(e)
	return t != s.eWeak && (t != s.eShortcut || from == 0)
}

// analyze computes dominators (Cooper–Harvey–Kennedy's iterative algorithm,
// pushed forward along out-edges so no reverse edge list is needed),
// retained sizes and BFS parents. Memory: 16 bytes a node besides the
// snapshot while it runs, 16 bytes a node kept.
func analyze(ctx context.Context, s *Snapshot) (*graph, error) {
	n := len(s.ntype)
	g := &graph{s: s}

	// Post-order DFS from the root over essential edges.
	postIdx := make([]uint32, n) // node → post-order index; noNode until finished
	cursor := make([]uint32, n)  // node → next edge to look at; later: dominators
	for i := range postIdx {
		postIdx[i] = noNode
	}
	const onStack = noNode - 1
	order := make([]uint32, 0, n) // post-order index → node
	stack := []uint32{0}
	postIdx[0] = onStack
	cursor[0] = s.firstEdge[0]
	for len(stack) > 0 {
		u := stack[len(stack)-1]
		e, end := cursor[u], s.firstEdge[u+1]
		for ; e < end; e++ {
			v := s.to(e)
			if postIdx[v] == noNode && s.essential(u, e) {
				break
			}
		}
		if e < end {
			cursor[u] = e + 1
			v := s.to(e)
			postIdx[v] = onStack
			cursor[v] = s.firstEdge[v]
			stack = append(stack, v)
			continue
		}
		stack = stack[:len(stack)-1]
		postIdx[u] = uint32(len(order))
		order = append(order, u)
	}
	stack = nil
	k := uint32(len(order))
	root := k - 1

	// Dominators in post-order index space: domPo[x] > x for x != root.
	domPo := cursor[:k]
	for i := range domPo {
		domPo[i] = noNode
	}
	domPo[root] = root
	intersect := func(a, b uint32) uint32 {
		for a != b {
			for a < b {
				a = domPo[a]
			}
			for b < a {
				b = domPo[b]
			}
		}
		return a
	}
	for changed := true; changed; {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		changed = false
		g.passes++
		for po := int(root); po >= 0; po-- {
			u := order[po]
			if domPo[po] == noNode {
				continue
			}
			for e, end := s.firstEdge[u], s.firstEdge[u+1]; e < end; e++ {
				v := s.to(e)
				pv := postIdx[v]
				if pv == root || pv == noNode || !s.essential(u, e) {
					continue
				}
				d := domPo[pv]
				if d == noNode {
					domPo[pv] = uint32(po)
					changed = true
					continue
				}
				if nd := intersect(uint32(po), d); nd != d {
					domPo[pv] = nd
					changed = true
				}
			}
		}
	}

	// Retained sizes: children before their dominator in post-order.
	g.retained = make([]uint64, n)
	for i, sz := range s.nself {
		g.retained[i] = uint64(sz)
	}
	for po := uint32(0); po < root; po++ {
		g.retained[order[domPo[po]]] += g.retained[order[po]]
	}
	// Dominators by node ordinal, reusing postIdx.
	g.dom = postIdx
	for i := range g.dom {
		g.dom[i] = noNode
	}
	for po := uint32(0); po < k; po++ {
		g.dom[order[po]] = order[domPo[po]]
	}
	// Shortest paths from the root (BFS), for retainer paths; the
	// parents reuse cursor, the queue reuses order.
	g.parent = cursor[:n]
	for i := range g.parent {
		g.parent[i] = noNode
	}
	queue := append(order[:0], 0)
	order, cursor, domPo = nil, nil, nil
	g.parent[0] = 0
	for qi := 0; qi < len(queue); qi++ {
		u := queue[qi]
		for e, end := s.firstEdge[u], s.firstEdge[u+1]; e < end; e++ {
			v := s.to(e)
			if g.parent[v] == noNode && s.essential(u, e) {
				g.parent[v] = u
				queue = append(queue, v)
			}
		}
	}
	g.parent[0] = noNode
	queue = nil
	runtime.GC() // the arrays above are garbage: reuse their memory now
	return g, nil
}

// classKey identifies a node's group: the type for most nodes, the name
// (constructor) for objects and native objects, as DevTools' Summary does.
func (s *Snapshot) classKey(i uint32) uint64 {
	t := s.ntype[i]
	if t == s.tObject || t == s.tNative {
		return 1<<32 | uint64(s.nname[i])
	}
	return uint64(t)
}

// className is the group name DevTools' Summary shows for a class key
// (HeapSnapshot.ts getNodeClassIndex, chrome-devtools-frontend 1.0.1705227).
func (s *Snapshot) className(key uint64) string {
	if key>>32 == 1 {
		return s.strs[uint32(key)]
	}
	t := uint8(key)
	switch {
	case t == s.tHidden:
		return "(system)"
	case t == s.tCode:
		return "(compiled code)"
	case s.nodeTypes[t] == "closure":
		return "Function"
	case s.nodeTypes[t] == "regexp":
		return "RegExp"
	}
	return "(" + s.nodeTypes[t] + ")"
}

// nodeLabel names a node in a retainer path: its class, or for synthetic
// roots and closures their own name.
func (s *Snapshot) nodeLabel(i uint32) string {
	t := s.ntype[i]
	if t == s.tSynthetic || s.nodeTypes[t] == "closure" {
		if name, ok := s.strs[s.nname[i]]; ok && name != "" {
			if s.nodeTypes[t] == "closure" {
				return name + "()"
			}
			return name
		}
	}
	if t == s.tHidden {
		if name, ok := s.strs[s.nname[i]]; ok && name != "" {
			return name
		}
	}
	return s.className(s.classKey(i))
}

// edgeLabel names edge e as DevTools' retainers view does: a property
// name, or [index] for elements and hidden edges. name is the edge's
// name_or_index.
func (s *Snapshot) edgeLabel(e uint32, name uint32) string {
	t := s.edgeType(e)
	if t == s.eElement || t == s.eHidden {
		return "[" + strconv.FormatUint(uint64(name), 10) + "]"
	}
	return s.strs[name]
}

// edgeBetween finds the edge from u to v, preferring a named, non-weak one.
func (s *Snapshot) edgeBetween(u, v uint32) (uint32, bool) {
	best, found := uint32(0), false
	plain := func(e uint32) bool { t := s.edgeType(e); return t != s.eInternal && t != s.eHidden }
	for e, end := s.firstEdge[u], s.firstEdge[u+1]; e < end; e++ {
		if s.to(e) != v || !s.essential(u, e) {
			continue
		}
		if !found || !plain(best) && plain(e) {
			best, found = e, true
		}
	}
	return best, found
}
