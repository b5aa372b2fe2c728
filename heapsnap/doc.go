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
// group totals and its sorted ids before B is read). Edge names are not
// kept: the few a report prints (on its retainer paths) are read from the
// file again at the end, which costs one more streaming read.
//
// # Measured (2026-11-29, 2-core VM shared with other users)
//
// BenchmarkDiffFiles200MB diffs two snapshots of a Node 20 process written
// by testdata/bigheap.js (223 MiB, 3.24 M nodes; 283 MiB, 3.39 M nodes,
// 50,000 leaked sessions): peak RSS 174 MiB, 0.62 × the larger file, in
// 4.2 s (17 s under heavy load). `memdiag diff` on the same pair: 185 MiB
// (0.65 ×); on a pair of 333 and 392 MiB: 265 MiB (0.68 ×). Memory is
// about 13 bytes a node and 4 an edge for the parsed snapshot, plus 20
// bytes a node while dominators are computed, against about 25 bytes a
// node and 14 an edge of JSON. The top group was the Map holding the
// sessions, +57.4 MB for 51.2 MB of payload plus the Session objects,
// keys and table. For comparison, DevTools' own worker code (run in Node,
// see testdata/devtools) needed 1.8 GB of RSS for the 283 MiB pair.
//
// # Agreement with Chrome DevTools
//
// testdata/devtools loads the same pair with DevTools' own heap snapshot
// code (HeapSnapshotLoader, JSHeapSnapshot from chrome-devtools-frontend
// 1.0.1705227, bundled with esbuild and run in Node) and prints its
// Comparison view next to this package's groups. For the benchmark pair
// and the three leaks of testdata/leaky.js, the classes whose size grew
// most agree exactly in # New, # Delta and Size Delta ((string) +53,592,024
// bytes and 100,001 objects, Session +2,000,000 and 50,000, (compiled
// code) +41,080 and 143). Small differences remain in (system),
// (object shape) and ArrayBuffer (hundreds of bytes): DevTools moves the
// shallow size of internal arrays and hidden objects into the object that
// owns them (JSHeapSnapshot.calculateShallowSizes); this package keeps
// V8's self sizes. DevTools names plain objects by their properties
// ({id, name}); this package calls them Object, as DevTools' classic
// Summary did.
package heapsnap
