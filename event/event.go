package event

import (
	"net/netip"
	"time"
)

// Event is one of *Fork, *Exec, *Exit, *OpBegin, *OpEnd, *TLSSeen, *OOM,
// *Marker, *HeapSample, *HeapFree, *GCCycle, *HeapLive, *Sampling or
// *Snapshot.
type Event interface {
	// When is the time the event happened (wall clock).
	When() time.Time
}

// Header is common to every lifecycle event.
type Header struct {
	Time time.Time
	PID  uint32 // thread group id of the acting task
	TID  uint32 // thread id of the acting task
}

// When implements Event.
func (h Header) When() time.Time { return h.Time }

// Proc is the process and thread a record is of.
func (h Header) Proc() (pid, tid uint32) { return h.PID, h.TID }

// Fork says a traced task created a thread or a process.
type Fork struct {
	Header
	Child uint32 // tid of the new task; its pid when it is a process
	Comm  string // name of the new task
}

// Exec says a traced process (or the run launcher) replaced its image.
type Exec struct {
	Header
	Filename string
}

// Exit says a traced thread exited; GroupDead when it was the last one.
type Exit struct {
	Header
	ExitCode  int32 // wait(2) status encoding
	GroupDead bool
	Comm      string
}

// OpKind says what started an operation.
type OpKind uint32

// Operation kinds; the values are the kernel's enum op_kind.
const (
	OpHTTPServer OpKind = 1 // a request read on a served socket
	OpOutbound   OpKind = 2 // a call written on a client socket by an idle thread
)

// OpBegin says an operation began: a served request (HTTP/1.x, each
// pipelined request its own; an HTTP/2 stream; a gRPC call) or an
// outbound call. Its request line is parsed and its
// query values redacted before it leaves the tracer; nothing else of the
// bytes on the wire is kept.
type OpBegin struct {
	Header
	OpID uint64
	Kind OpKind
	FD   int32
	// Dest is the destination of an outbound call (invalid for served
	// requests).
	Dest netip.AddrPort
	// HTTP is set when the bytes named a request (package httpreq);
	// Request is then filled (its Query redacted).
	HTTP bool
	Request
}

// Request is a request as package httpreq names it from the bytes read:
// an HTTP/1.x request line, an HTTP/2 stream, a gRPC call or a WebSocket
// message.
type Request struct {
	Method string
	// Path is the request target without its query, for absolute-form
	// targets the path part ("/" when empty).
	Path string
	// Query holds the query's keys with values redacted: "limit=…&q=…";
	// values are kept only with KeepQueryValues.
	Query string
	// Truncated is set when the target did not end within the bytes seen.
	Truncated bool
	// Proto is "h2" for an HTTP/2 stream, "ws" for a WebSocket message
	// (named by its connection's upgrade request), "" for HTTP/1.x.
	Proto string
	// GRPC is set for a gRPC call (HTTP/2, content-type application/grpc):
	// Path is then /package.Service/Method.
	GRPC bool
}

// OpEndReason says why an operation ended.
type OpEndReason uint32

// Reasons; the values are the kernel's enum op_end_reason.
const (
	EndNext  OpEndReason = 1 // the next request (or call) on its socket
	EndClose OpEndReason = 2 // its socket was closed
	EndExit  OpEndReason = 3 // its process exited (set by attribution)
)

// OpEnd says an operation ended. The kernel takes the op's bucket out of
// its table when it sends the end, so Final holds the op's counters.
type OpEnd struct {
	Header
	OpID     uint64
	FD       int32
	Reason   OpEndReason
	HasFinal bool // false when the bucket was already gone
	Final    Counters
}

// TLSSeen says a served socket of the process carries TLS: its requests
// cannot be named from the syscalls alone.
type TLSSeen struct {
	Header
}

// OOM says the kernel's OOM killer chose a traced process (PID).
type OOM struct {
	Header
	AnonRSS  int64 // bytes, as the OOM killer saw them
	FileRSS  int64
	ShmemRSS int64
}

// Marker is something the session did that reports show on the timeline:
// a threshold crossed, a dump taken or refused.
type Marker struct {
	Header
	Kind  string // "threshold", "dump", "oom"
	Label string
}

// Runtime names a runtime whose own allocation sampler memdiag joins with
// operations.
type Runtime uint32

// Runtimes; the values are the kernel's enum heap_runtime.
const (
	RuntimeV8 Runtime = 1 // V8's sampling heap profiler (Node.js)
	RuntimeGo Runtime = 2 // the Go runtime's memory profiler
)

// String names the runtime as reports do.
func (r Runtime) String() string {
	switch r {
	case RuntimeV8:
		return "v8"
	case RuntimeGo:
		return "go"
	}
	return "unknown"
}

// HeapSample says a runtime's allocation sampler sampled an allocation
// while Owner was the allocating thread's bucket.
type HeapSample struct {
	Header
	Runtime Runtime
	Ordinal uint64 // V8: the sample's number since sampling started (1, 2, …)
	Addr    uint64 // the object's address
	Size    uint64 // bytes asked for, unscaled
	Owner   BucketKey
}

// HeapFree says a sampled allocation (Go: by address) was freed.
type HeapFree struct {
	Header
	Runtime Runtime
	Addr    uint64
}

// GCCycle says a runtime finished a garbage collection cycle (Go).
type GCCycle struct {
	Header
	Runtime Runtime
}

// LiveSample is one sample still live in a sampling profile.
type LiveSample struct {
	Ordinal uint64
	Bytes   int64 // the bytes it stands for (V8 scales it by its sampling rate)
}

// HeapLive is a runtime's list of sampled allocations still live, read
// after a full collection (V8: HeapProfiler.getSamplingProfile over the
// inspector). Samples not listed are gone.
type HeapLive struct {
	Header
	Runtime Runtime
	Samples []LiveSample // by ordinal
	// UpTo is the highest ordinal the runtime had handed out when the
	// profile was taken: samples above it may still come.
	UpTo uint64
	// HeapUsed is the runtime's own count of live heap bytes after the same
	// collection (0 when unknown). The first HeapLive of a process, taken
	// when sampling starts, is its baseline.
	HeapUsed int64
}

// Sampling says whether a runtime sampler is joined with the ops of
// process PID, at what rate, and why not when it is not.
type Sampling struct {
	Header
	Runtime  Runtime
	Active   bool
	Interval uint64 // bytes between samples, on average
	Reason   string // why sampling is off, or how it runs
}

// RSS members, the kernel's MM_* counters, indexes of Counters.RSS.
const (
	RSSFile    = 0
	RSSAnon    = 1
	RSSSwap    = 2
	RSSShmem   = 3
	RSSMembers = 4
)

// BucketKind says what a bucket charges.
type BucketKind uint32

// Bucket kinds; the values are the kernel's enum bucket_kind.
const (
	BucketThread   BucketKind = 1 // ID is a tid: that thread's own activity
	BucketBaseline BucketKind = 2 // counters as first seen after attach
	BucketStart    BucketKind = 3 // what a forked child inherited
	BucketKernel   BucketKind = 4 // changes made from outside the process
	BucketOverflow BucketKind = 5 // charges that found the bucket table full
	BucketRelease  BucketKind = 6 // a process tearing down its own mm (exit, exec)
	BucketOp       BucketKind = 7 // ID is an op id: an operation
	BucketIdle     BucketKind = 8 // event-loop threads between operations
	BucketFreed    BucketKind = 9 // ID is an op id: what the op mapped, given back after it ended
)

// String names the kind as reports do.
func (k BucketKind) String() string {
	switch k {
	case BucketThread:
		return "thread"
	case BucketBaseline:
		return "baseline"
	case BucketStart:
		return "inherited"
	case BucketKernel:
		return "kernel"
	case BucketOverflow:
		return "overflow"
	case BucketRelease:
		return "released"
	case BucketOp:
		return "op"
	case BucketIdle:
		return "idle"
	case BucketFreed:
		return "freed"
	}
	return "unknown"
}

// BucketKey names a bucket: a process, a kind and a kind-specific id.
type BucketKey struct {
	PID  uint32
	Kind BucketKind
	ID   uint64
}

// Counters are a bucket's totals since it was created; they only grow
// (RSS entries are signed sums of changes).
type Counters struct {
	RSS          [RSSMembers]int64 // bytes of RSS change per member
	Faults       uint64            // user page faults
	Mapped       uint64            // bytes mapped (mmap, mremap and brk growth)
	Unmapped     uint64            // bytes unmapped (munmap, mremap and brk shrink)
	MadeWritable uint64            // bytes mprotect'ed writable
	AdvisedFree  uint64            // bytes given back with madvise
	// External is the RSS change in native-allocator mappings (the brk
	// heap, arenas, large malloc chunks): memory outside the runtime's heap.
	External int64
	// Retained is the bytes of mappings made here and not unmapped yet;
	// negative when this bucket is credited with others' unmaps.
	Retained       int64
	RetainedNative int64 // the native-allocator part of Retained
	// RetainedHeap is the part of RetainedNative that grew a shared heap
	// (brk growth, an arena's commits): pages whoever needed fresh space
	// committed, which says who allocated, not who keeps. The rest of
	// RetainedNative is mappings of their own (a large malloc chunk),
	// kept as long as what was allocated in them.
	RetainedHeap int64
	ABAlloc      uint64 // exact mode: ArrayBuffer bytes allocated
	ABFreed      uint64 // exact mode: ArrayBuffer bytes allocated here, freed since
	// Created is the kernel's clock when the bucket was created: a bucket
	// deleted and created again under the same key is a new one.
	Created uint64
	Comm    string // thread name for BucketThread
}

// Resident is the change of resident memory: file + anon + shmem.
func (c Counters) Resident() int64 {
	return c.RSS[RSSFile] + c.RSS[RSSAnon] + c.RSS[RSSShmem]
}

// Bucket is one bucket's counters at snapshot time.
type Bucket struct {
	Key BucketKey
	Counters
}

// Stats are the kernel's own health counters, summed over CPUs.
type Stats struct {
	LostEvents uint64 // ring buffer records dropped (full buffer; a lost pair, an op's end and the next op's begin, counts as two)
	// Records counts the records the tracer read, of every kind (op
	// begin and end, lifecycle, heap samples), a pair (an op's end and
	// the next op's begin, sent in one reservation) as two: with
	// LostEvents, the rate the ring carried (BENCHMARKS.md, "Record
	// storms").
	Records uint64
	// DecodeErrors counts ring buffer records the tracer could not decode
	// (a kernel/userspace layout mismatch: a bug). Their bytes stay in the
	// kernel's counters. Nothing is dropped between the ring buffer and
	// attribution: the reader waits for a slow consumer instead.
	DecodeErrors    uint64
	BucketOverflow  uint64 // charges that found the bucket table full
	MMOverflow      uint64 // address spaces that found the mm table full
	TargetOverflow  uint64 // tasks that found the target table full
	PendingOverflow uint64 // syscalls whose arguments found the pending table full
	SocketOverflow  uint64 // sockets that found the socket table full
	ThreadOverflow  uint64 // threads that found the thread-state table full
	RegionOverflow  uint64 // mappings that found the region table (or a chunk of its index) full
	// OutstandingOverflow counts ArrayBuffers (exact mode) that found the
	// outstanding-allocation table full: their frees are not credited to
	// their op, totals stay exact.
	OutstandingOverflow uint64
	UnmapSplit          uint64 // unmaps that crossed more mappings than one pass follows
	// FramesLost counts HTTP/2 and WebSocket connections whose frame
	// boundaries the kernel lost (a frame header split across reads): no
	// more ops begin on them.
	FramesLost uint64
}

// ProcessMemory is one traced process's resident memory as the kernel last
// reported it, counting each counter from its first change after attach.
type ProcessMemory struct {
	PID     uint32
	Current int64
	Peak    int64 // highest Current seen
	// ArrayBuffers (exact mode) is the ArrayBuffer bytes allocated while
	// traced and not freed yet.
	ArrayBuffers int64
}

// Snapshot is a read of the kernel's aggregated state: every live bucket,
// the resident memory of each process and of the group, and the health
// counters.
type Snapshot struct {
	Time    time.Time
	Buckets []Bucket // sorted by key
	// Freed holds BucketFreed buckets taken out of the kernel by this
	// snapshot: unlike Buckets, their counters add to what came before.
	Freed     []Bucket
	Processes []ProcessMemory // sorted by pid
	Total     int64           // sum of all traced mms' resident counters as last seen
	Peak      int64           // highest Total seen
	Stats     Stats
}

// When implements Event.
func (s *Snapshot) When() time.Time { return s.Time }
