// Package heapsnap compares V8 heap snapshots (.heapsnapshot files, as
// memdiag's dumps, Node's v8.writeHeapSnapshot() and Chrome DevTools write
// them) and says what grew between two of them and who holds it.
//
// # Parsing with bounded memory
//
// Parse streams the JSON through a 1 MiB buffer into compact arrays: per
// node its type, name (string index), id, shallow size and first edge
// (17 bytes); per edge its type, name or index, and target ordinal
// (9 bytes). Strings are kept only when a report may print them (class,
// closure and synthetic names, property names): string contents are
// dropped. The JSON text is never held, so a snapshot of gigabytes parses
// on a machine with less free memory than the file. A malformed or
// truncated file gives a *SyntaxError naming the byte offset.
//
// # Dominators, retained sizes, groups, paths
//
// Dominators are computed with Cooper, Harvey and Kennedy's iterative
// algorithm ("A Simple, Fast Dominance Algorithm"), with each pass pushed
// forward along out-edges in reverse post-order, so no reverse edge list
// is built. Weak edges are ignored, and shortcut edges count only from the
// root, as in DevTools' isEssentialEdge. A node's retained size is its
// shallow size plus that of the nodes it dominates.
//
// Objects are grouped as DevTools' Summary groups them: by constructor name
// for objects and native objects, by type otherwise ("(string)",
// "(array)", "(system)" for hidden nodes, "(compiled code)", "Function" for
// closures, "RegExp").
// A group's retained size counts the objects of the group that no other
// object of the group dominates (DevTools' calculateClassesRetainedSize).
//
// A retainer path follows the shortest path from the root over the same
// edges (a breadth-first search), and names each edge by its property
// name or [element index].
//
// # Diff
//
// DiffFiles (or DiffSnapshots) compares snapshot A with a later snapshot
// B of the same process. V8 keeps an object's id across snapshots, so the
// objects of B whose id is not in A are new. Every new object whose
// immediate dominator is old is a subtree that the old object alone keeps:
// its retained size is charged to the old object's group as "held new"
// (Group.Grew). The diff ranks groups by it: the top group is the
// structure that grew (a Map, an Array, a cache object), with a retainer
// path through which it is reached, not an ancestor such as the global
// object whose retained size grew just as much. Each group also carries
// the columns of DevTools' Comparison view: counts, new and deleted
// objects, shallow and retained sizes in A and B.
//
// DiffFiles holds one parsed snapshot at a time (A is reduced to its
// group totals and its sorted ids before B is read).
package heapsnap
