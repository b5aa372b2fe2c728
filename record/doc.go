// Package record writes and reads memdiag recordings: the stream of events
// and snapshots a trace was made of, so that every report can be rebuilt
// later, on another machine, without root (`memdiag attach --record FILE`,
// then `memdiag report FILE`).
//
// It is pure Go and a leaf next to package event: it imports nothing of
// memdiag's but event, and writes files itself (0600 files in 0700
// directories, never over an existing file, never through a symlink).
//
//	w, err := record.Create(path, record.Header{...})
//	w.Write(ev) ... w.Flush() ... w.Close(record.Trailer{...})
//
//	r, err := record.Open(path)
//	for { ev, err := r.Next(); if err != nil { break } ... }
//	// err == io.EOF: the whole recording; a *record.CorruptError: the
//	// events before the damage, which are intact.
//
// # Format, version 1
//
// All integers are little-endian where fixed-size. "uvarint" and "varint"
// are Go's encoding/binary varints: an unsigned LEB128 (7 bits a byte, low
// group first, high bit set on every byte but the last, at most 10 bytes),
// and for varint the same of the zigzag encoding ((x << 1) ^ (x >> 63)). A
// "string" is a uvarint byte length then that many bytes (UTF-8 by
// convention, not checked).
//
// A file is:
//
//	"MEMDIAG-REC\n"   12 bytes, the magic
//	version           1 byte, the major format version: 1
//	gzip stream       RFC 1952, exactly one member, to the end of the file
//
// A reader refuses a version above its own (it cannot know what changed)
// and a version 0. Additions that older readers can skip (new frame kinds,
// fields appended to a payload or to a counters or stats group) keep the
// version; anything else increments it.
//
// The gzip stream decompresses to a sequence of frames:
//
//	length    uvarint: the byte length of payload (at most 16 MiB, MaxFrame)
//	kind      1 byte
//	payload   length bytes
//	crc       4 bytes: CRC-32C (Castagnoli) of kind and payload, little-endian
//
// The writer sync-flushes the gzip stream (an empty stored block) at every
// Flush, so a recording cut off by a crash still decompresses up to its
// last flush. The recording ends cleanly when the gzip member ends (its
// CRC-32 and size verified) exactly after a frame, with nothing after it
// in the file. Anything else — a gzip error, a frame cut off, a length over
// MaxFrame, a CRC mismatch, a payload that does not decode, bytes after the
// gzip member — is damage: a reader stops there and reports how far it got.
//
// Frame kinds:
//
//	0x01 header    JSON (Header): the first frame, exactly once
//	0x02 trailer   JSON (Trailer): the last frame of a closed recording
//	0x10 fork      event.Fork
//	0x11 exec      event.Exec
//	0x12 exit      event.Exit
//	0x13 op-begin  event.OpBegin
//	0x14 op-end    event.OpEnd
//	0x15 tls-seen  event.TLSSeen
//	0x16 snapshot  event.Snapshot
//	0x17 oom       event.OOM: header, anon_rss, file_rss, shmem_rss (varints)
//	0x18 marker    event.Marker: header, kind, label (strings)
//
// A reader skips a frame of any other kind (its CRC still checked), so a
// new kind may only carry what an older reader can do without; anything
// else needs a new version.
//
// The header JSON object has the fields format (the version again, which
// must match the version byte), memdiag (tool and version), created_at
// (RFC 3339), target {pid, comm, exe, mode, container, cgroup — the last
// two optional}, baseline {rss_bytes,
// rss_anon_bytes, rss_file_bytes, rss_shmem_bytes, hwm_bytes} and options
// (any JSON: the writer's flags and config). The trailer has ended_at
// (RFC 3339) and reason. Unknown JSON fields are ignored.
//
// # Event payloads
//
// Two pieces of state run through the event frames (0x10–0x18, in file
// order), kept alike by writer and reader; no other frame touches them:
//
//   - the clock, in nanoseconds since the Unix epoch, 0 at the start. A
//     "time" field is a varint d: the time is clock + d (two's-complement,
//     wrapping), and becomes the new clock. d = -2^63 means the zero
//     time.Time (no time) and leaves the clock as it is.
//   - the previous snapshot's buckets: key → counters of the Buckets of the
//     last snapshot frame, empty at the start.
//
// Every event but the snapshot begins with the event header:
//
//	time, pid uvarint, tid uvarint
//
// then, by kind (fields in this order):
//
//	fork      header, child uvarint, comm string
//	exec      header, filename string
//	exit      header, exit_code varint, flags byte (bit 0: group_dead), comm string
//	op-begin  header, op_id uvarint, kind uvarint, fd varint, dest addrport,
//	          flags byte (bit 0: http, bit 1: truncated, bit 2: HTTP/2
//	          stream, bit 3: gRPC call, bit 4: WebSocket message),
//	          method string,
//	          path string, query string
//	op-end    header, op_id uvarint, fd varint, reason uvarint,
//	          flags byte (bit 0: has_final, bit 1: final counters follow),
//	          [final counters] (absent: all zero)
//	tls-seen  header
//	snapshot  time,
//	          n uvarint, n × bucket (Buckets),
//	          n uvarint, n × (key, counters) (Freed),
//	          n uvarint, n × (pid uvarint, current varint, peak varint, array_buffers varint) (Processes),
//	          total varint, peak varint,
//	          stats
//
// with
//
//	addrport  family byte (0 none, 4 IPv4, 6 IPv6), address 16 bytes (IPv4
//	          as ::ffff:a.b.c.d, zeros for none), port 2 bytes big-endian,
//	          and for IPv6 only: zone string
//	key       pid uvarint, kind uvarint, id uvarint
//	bucket    key, mode byte, then
//	            mode 0: counters
//	            mode 1: nothing: the counters of the bucket with this key in
//	                    the previous snapshot (damage if it has none)
//	counters  n uvarint, n values, comm string. The values, in order (as
//	          the fields of event.Counters; s: varint, u: uvarint):
//	            0-3   rss_file, rss_anon, rss_swap, rss_shmem  s
//	            4-8   faults, mapped, unmapped, made_writable,
//	                  advised_free                             u
//	            9-11  external, retained, retained_native      s
//	            12-13 ab_alloc, ab_freed                       u
//	            14    created (the kernel clock at creation)   u
//	            15    retained_heap (the part of retained_native
//	                  that grew a shared heap: brk, commits)   s
//	          Version 1 wrote n = 15 before retained_heap, n = 16
//	          since; a reader zeroes values beyond n and
//	          skips values it does not know (each is one varint). New
//	          fields of event.Counters are appended here.
//	stats     n uvarint, n uvarints: lost_events, decode_errors,
//	          bucket_overflow, mm_overflow, target_overflow, pending_overflow,
//	          socket_overflow, thread_overflow, region_overflow,
//	          outstanding_overflow, unmap_split (n = 11 in version 1),
//	          frames_lost (n = 12 since), records (n = 13 since; same
//	          rule as counters)
//
// Integers that are 32 bits in package event (pids, tids, kinds, fd, exit
// code) must fit them. A reader ignores bytes after the fields it knows at
// the end of a payload (later versions may append fields). An empty slice
// of a snapshot reads back nil.
//
// Limits: no frame payload exceeds MaxFrame (16 MiB) and no Buckets,
// Freed or Processes of a snapshot has more than MaxEntries (2^18)
// entries: a writer refuses a bigger event, a reader takes one as damage.
// A reader allocates a frame's buffer only as its bytes arrive, and checks
// every count against the bytes left in its payload before it allocates
// anything, so a damaged or crafted file costs it at most some 250 MB for
// one frame (a real snapshot: a few times its payload).
package record
