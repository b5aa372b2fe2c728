package tracer

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/memdiag/memdiag/event"
	"github.com/memdiag/memdiag/httpreq"
)

// Config sets the tracer's sizes and mode.
type Config struct {
	// Launcher is the pid of `memdiag run`'s launcher: its exec makes it
	// a target, so nothing the command does is missed. 0 for attach.
	Launcher int
	// RingbufBytes sizes the lifecycle ring buffer (a power of two, at
	// least one page); 0 means DefaultRingbufBytes.
	RingbufBytes int
	// MaxBuckets bounds the kernel's bucket table, and its op slots (rounded
	// up to a power of two); 0 means 16384.
	MaxBuckets int
	// MaxOutstanding bounds the exact mode's table of live ArrayBuffers;
	// 0 means 262144.
	MaxOutstanding int
	// Cgroup, when set, is the path of a cgroup v2 directory: processes
	// that exec in it or below it become targets (--container, --cgroup).
	Cgroup string
	// StackSampleBytes samples the user stack of RSS growth every so many
	// bytes, for dumps' profiles; 0 turns sampling off.
	StackSampleBytes uint64
	// KeepQueryValues keeps query-string values in request names (they
	// are redacted by default: they carry tokens and personal data).
	KeepQueryValues bool
	// QueueLen sizes the channel between the ring buffer reader and its
	// consumer, in events (the reader waits when it is full): it holds
	// QueueLen/event.BatchLen batches, at least one. 0 means 4096.
	QueueLen int
}

// Target states: the kernel's enum target_state, as bpf2go generates it.
const (
	stateAttached = uint32(memdiagTargetStateTS_ATTACHED)
)

// Stat slots: the kernel's enum stat_index, as bpf2go generates it.
const (
	statLost                = uint32(memdiagStatIndexST_LOST_EVENTS)
	statBucketOverflow      = uint32(memdiagStatIndexST_BUCKET_OVERFLOW)
	statMMOverflow          = uint32(memdiagStatIndexST_MM_OVERFLOW)
	statTargetOverflow      = uint32(memdiagStatIndexST_TARGET_OVERFLOW)
	statPendingOverflow     = uint32(memdiagStatIndexST_PENDING_OVERFLOW)
	statSocketOverflow      = uint32(memdiagStatIndexST_SOCK_OVERFLOW)
	statThreadOverflow      = uint32(memdiagStatIndexST_THREAD_OVERFLOW)
	statRegionOverflow      = uint32(memdiagStatIndexST_REGION_OVERFLOW)
	statOutstandingOverflow = uint32(memdiagStatIndexST_OUTSTANDING_OVERFLOW)
	statUnmapSplit          = uint32(memdiagStatIndexST_UNMAP_SPLIT)
	statFramesLost          = uint32(memdiagStatIndexST_FRAMES_LOST)
)

// attachment is one tracepoint and the program that handles it. Every one
// is a BTF raw tracepoint (SEC("tp_btf/...")): the handler gets the
// tracepoint's arguments and the kernel builds no record, so every process
// on the host pays a fraction of a perf-event tracepoint; and its link
// detaches without waiting for RCU grace periods under the kernel's
// event_mutex, as a perf event's does (about 50 ms each, one after the
// other, up to 1.6 s for one on this loaded VM).
type attachment struct {
	Tracepoint
	prog func(*memdiagObjects) *ebpf.Program
}

func btfTP(group, name string, prog func(*memdiagObjects) *ebpf.Program) attachment {
	return attachment{Tracepoint{group, name}, prog}
}

// attachments lists every tracepoint the BPF program attaches to.
var attachments = []attachment{
	btfTP("kmem", "rss_stat", func(o *memdiagObjects) *ebpf.Program { return o.OnRssStat }),
	btfTP("exceptions", "page_fault_user", func(o *memdiagObjects) *ebpf.Program { return o.OnPageFault }),
	btfTP("sched", "sched_process_fork", func(o *memdiagObjects) *ebpf.Program { return o.OnFork }),
	btfTP("sched", "sched_process_exec", func(o *memdiagObjects) *ebpf.Program { return o.OnExec }),
	btfTP("sched", "sched_process_exit", func(o *memdiagObjects) *ebpf.Program { return o.OnExit }),
	btfTP("task", "task_rename", func(o *memdiagObjects) *ebpf.Program { return o.OnRename }),
	btfTP("oom", "mark_victim", func(o *memdiagObjects) *ebpf.Program { return o.OnOom }),
	// The syscalls (mmap, munmap, mremap, brk, mprotect, madvise; accept,
	// connect, the reads and writes, close, the polls; execve): one raw
	// pair that dispatches on the syscall number (bpf/syscalls.bpf.h). A
	// perf-event tracepoint per syscall took 50 ms or more each to detach,
	// one after the other (2 s at exit).
	btfTP("raw_syscalls", "sys_enter", func(o *memdiagObjects) *ebpf.Program { return o.OnSysEnter }),
	btfTP("raw_syscalls", "sys_exit", func(o *memdiagObjects) *ebpf.Program { return o.OnSysExit }),
}

// Tracepoints lists every tracepoint memdiag attaches to.
func Tracepoints() []Tracepoint {
	tps := make([]Tracepoint, len(attachments))
	for i, a := range attachments {
		tps[i] = a.Tracepoint
	}
	return tps
}

// DefaultRingbufBytes is the ring buffer's size unless configured: 1 MiB,
// 39 ms of records at 100k records/s (268 bytes a record on average in a
// request storm). The reader must run before the ring fills; the kernel
// wakes it at a quarter full. The BPF object's 256 KiB (9.8 ms) lost 1,200
// to 1,400 of 300,000 records in every storm at 100k records/s at load
// average 3 on the 2-CPU test VM; 1 MiB lost none in three. It costs
// memdiag 1.5-1.7 MiB more RSS from attach on (the reader maps the ring's
// pages twice, all resident, counted as file pages: 21.9 -> 23.6 and
// 22.2 -> 23.7 MiB attached to an idle process) and the kernel 768 KiB
// more of locked memory (BENCHMARKS.md, "Record storms").
const DefaultRingbufBytes = 1 << 20

// readPoll is how often the ring buffer reader looks for records the
// kernel did not wake it for.
const readPoll = 50 * time.Millisecond

// Tracer is a loaded and attached BPF program.
type Tracer struct {
	objs   memdiagObjects
	bits   *targetBits // the kernel's target bitmap, mapped
	links  []io.Closer // closed in reverse
	ring   *ring       // the events ring buffer, the reader's
	events chan *event.Batch
	batch  *event.Batch // the reader's, filling
	clock  Clock
	http   httpreq.Options // what request names keep
	conns  *httpreq.Conns  // naming state of served connections (pipelining, HTTP/2); the reader's own
	// decodeErrors counts records that did not decode (Stats.DecodeErrors).
	// Nothing else is ever dropped here: read blocks on a full channel.
	decodeErrors atomic.Uint64
	// records counts the records read from the ring (Stats.Records).
	records    atomic.Uint64
	readerDone chan struct{}
	// shared: a Shared routes this tracer's records; the reader marks
	// each moment it finds the ring empty (ringEmpty) and hands each
	// exec record's cgroup to onExec before the record goes out.
	shared    bool
	onExec    func(pid uint32, cgroup uint64)
	wantMarks atomic.Bool // a View is stopping: mark the ring's empty moments

	stopOnce  sync.Once
	stopErr   error
	closeOnce sync.Once
	closeErr  error
}

// Open probes the kernel, loads the program and attaches every tracepoint.
// Nothing is traced until a target is added (or the launcher execs).
func Open(cfg Config) (*Tracer, error) { return open(cfg, nil) }

// open is Open; a Shared gives onExec.
func open(cfg Config, onExec func(pid uint32, cgroup uint64)) (_ *Tracer, err error) {
	if err := Probe(Tracepoints()); err != nil {
		return nil, err
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raising the memlock limit: %w", err)
	}
	spec, err := newSpec(cfg, false)
	if err != nil {
		return nil, err
	}
	if cfg.QueueLen == 0 {
		cfg.QueueLen = 4096
	}

	t := &Tracer{
		events:     make(chan *event.Batch, max(1, cfg.QueueLen/event.BatchLen)),
		readerDone: make(chan struct{}),
		clock:      nowClock(),
		http:       httpreq.Options{KeepQueryValues: cfg.KeepQueryValues},
		conns:      httpreq.NewConns(httpreq.Options{KeepQueryValues: cfg.KeepQueryValues}),
		shared:     onExec != nil,
		onExec:     onExec,
	}
	if err := loadObjects(spec, &t.objs); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			ve = verifierErrorWithLines(cfg, ve)
			return nil, fmt.Errorf("the kernel's verifier refused memdiag's BPF program (please report this with your kernel version): %+v", ve)
		}
		return nil, fmt.Errorf("loading BPF objects: %w", err)
	}
	defer func() {
		if err != nil {
			t.objs.Close()
			t.bits.close()
		}
	}()
	// Loading left garbage (the program's spec, the kernel types read;
	// several MB when cilium/ebpf decoded the kernel's BTF): give it all
	// back before attaching, so memdiag's peak is the load's alone and not
	// the load's plus the pages attaching touches.
	runtime.GC()
	debug.FreeOSMemory()
	if t.bits, err = mapTargetBits(t.objs.TargetBits); err != nil {
		return nil, err
	}

	if cfg.Cgroup != "" {
		dir, err := os.Open(cfg.Cgroup)
		if err != nil {
			return nil, fmt.Errorf("opening cgroup %s: %w", cfg.Cgroup, err)
		}
		err = t.objs.TargetCgroup.Update(uint32(0), uint32(dir.Fd()), ebpf.UpdateAny)
		dir.Close()
		if err != nil {
			return nil, fmt.Errorf("following cgroup %s (it must be a cgroup v2 directory): %w", cfg.Cgroup, err)
		}
	}
	overflow := memdiagBucketKey{Kind: uint32(event.BucketOverflow)}
	if err := t.objs.Buckets.Update(&overflow, &memdiagCounters{}, ebpf.UpdateNoExist); err != nil {
		return nil, fmt.Errorf("creating the overflow bucket: %w", err)
	}

	for _, a := range attachments {
		l, err := link.AttachTracing(link.TracingOptions{Program: a.prog(&t.objs)})
		if err != nil {
			t.closeLinks()
			return nil, fmt.Errorf("attaching tracepoint %s: %w", a.Tracepoint, err)
		}
		t.links = append(t.links, l)
	}
	t.ring, err = newRing(t.objs.Events)
	if err != nil {
		t.closeLinks()
		return nil, fmt.Errorf("opening the ring buffer: %w", err)
	}
	go t.read()
	return t, nil
}

// newSpec reads the embedded program and sizes it for cfg. Without
// sourceLines the instructions lose their C source lines: those are only
// for the verifier's log, and they and their copies were 0.7 MiB of
// memdiag's peak RSS while loading (BENCHMARKS.md).
func newSpec(cfg Config, sourceLines bool) (*ebpf.CollectionSpec, error) {
	spec, err := loadMemdiag()
	if err != nil {
		return nil, fmt.Errorf("reading the embedded BPF program: %w", err)
	}
	if !sourceLines {
		for _, p := range spec.Programs {
			for i := range p.Instructions {
				p.Instructions[i] = p.Instructions[i].WithSource(nil)
			}
		}
	}
	if err := setCPUs(spec); err != nil {
		return nil, err
	}
	if cfg.Launcher != 0 {
		if err := spec.Variables["launcher_tgid"].Set(uint32(cfg.Launcher)); err != nil {
			return nil, fmt.Errorf("setting launcher_tgid: %w", err)
		}
	}
	if cfg.Cgroup != "" {
		if err := spec.Variables["follow_cgroup"].Set(uint32(1)); err != nil {
			return nil, fmt.Errorf("setting follow_cgroup: %w", err)
		}
	}
	if cfg.StackSampleBytes != 0 {
		if err := spec.Variables["stack_sample_bytes"].Set(cfg.StackSampleBytes); err != nil {
			return nil, fmt.Errorf("setting stack_sample_bytes: %w", err)
		}
	} else {
		// Never sampled: the stack tables (8 MiB preallocated) shrink to
		// one entry.
		spec.Maps["stacks"].MaxEntries = 1
		spec.Maps["stack_growths"].MaxEntries = 1
	}
	if cfg.RingbufBytes == 0 {
		cfg.RingbufBytes = DefaultRingbufBytes
	}
	if cfg.RingbufBytes < unix.Getpagesize() || cfg.RingbufBytes&(cfg.RingbufBytes-1) != 0 {
		return nil, fmt.Errorf("ring buffer size %d: want a power of two of at least %d bytes", cfg.RingbufBytes, unix.Getpagesize())
	}
	spec.Maps["events"].MaxEntries = uint32(cfg.RingbufBytes)
	if cfg.MaxBuckets != 0 {
		spec.Maps["buckets"].MaxEntries = uint32(cfg.MaxBuckets)
		// Live ops have slots of their own, as many (a power of two:
		// the slot is the low bits of the op's id).
		slots := opSlots(cfg.MaxBuckets)
		spec.Maps["op_slots"].MaxEntries = slots
		if err := spec.Variables["op_slot_mask"].Set(slots - 1); err != nil {
			return nil, fmt.Errorf("setting op_slot_mask: %w", err)
		}
	}
	if cfg.MaxOutstanding != 0 {
		spec.Maps["outstanding"].MaxEntries = uint32(cfg.MaxOutstanding)
	}
	return spec, nil
}

// verifierErrorWithLines loads the program again, with its C source
// lines, to report the verifier's refusal with them; ve when that load
// does not fail the same way.
func verifierErrorWithLines(cfg Config, ve *ebpf.VerifierError) *ebpf.VerifierError {
	spec, err := newSpec(cfg, true)
	if err != nil {
		return ve
	}
	var objs memdiagObjects
	err = spec.LoadAndAssign(&objs, nil)
	if err == nil {
		objs.Close()
	}
	var lined *ebpf.VerifierError
	if errors.As(err, &lined) {
		return lined
	}
	return ve
}

func nowClock() Clock {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return NewClock(time.Duration(ts.Nano()), time.Now())
}

// AddTarget traces the process pid, which was running before attach.
func (t *Tracer) AddTarget(pid int) error {
	key := uint32(pid)
	val := memdiagTarget{State: stateAttached}
	if err := t.objs.Targets.Update(&key, &val, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("adding target %d: %w", pid, err)
	}
	t.bits.set(key)
	return nil
}

// TLSSymbol is the function of Node.js's HTTP parser that --tls probes.
const TLSSymbol = "llhttp_execute"

// AttachTLS attaches the uprobes that name HTTPS requests, for process pid
// only (a uprobe traps on every call, about 20 µs on these VMs, so no
// other process must pay it): llhttp_execute when the binary at path has
// it (Node.js: one hit per chunk parsed), else SSL_read and SSL_read_ex
// (entry and return) in the OpenSSL libssl the process maps (Python,
// Ruby, nginx…: two hits per read). For a running process path is
// /proc/PID/exe, which also reaches into containers; memdiag run gives the
// command's binary before the exec, so nothing is missed.
func (t *Tracer) AttachTLS(pid int, path string) error {
	syms, err := lookupSymbols(path, TLSSymbol)
	if err != nil {
		return fmt.Errorf("--tls: %w", err)
	}
	if sym, ok := syms[TLSSymbol]; ok && sym.Offset != 0 {
		if err := t.attachAt(pid, path, t.objs.OnLlhttpExecute, sym.Offset, "uprobe "+TLSSymbol); err != nil {
			return fmt.Errorf("--tls: %w", err)
		}
		return nil
	}
	lib, lerr := MappedLibrary(pid, "libssl.so")
	if lerr != nil {
		target, rerr := os.Readlink(path)
		if rerr != nil {
			target = path
		}
		return fmt.Errorf("--tls: %s has no %s symbol and process %d maps no libssl: --tls names HTTPS requests of Node.js binaries and of processes linked with OpenSSL; run without --tls", target, TLSSymbol, pid)
	}
	return t.attachOpenSSL(pid, lib)
}

// OpenSSLSymbols are the functions of OpenSSL's libssl --tls probes in a
// process that is not Node.js: their entry saves the buffer, their return
// hands the cleartext read over.
var OpenSSLSymbols = []string{"SSL_read", "SSL_read_ex"}

// attachOpenSSL attaches the OpenSSL uprobes to the libssl at lib (a path
// in the process's mount namespace) for pid only.
func (t *Tracer) attachOpenSSL(pid int, lib string) error {
	path := filepath.Join("/proc", strconv.Itoa(pid), "root", lib)
	syms, err := lookupSymbols(path, OpenSSLSymbols...)
	if err != nil {
		return fmt.Errorf("--tls: %w", err)
	}
	at := make([]uint64, len(OpenSSLSymbols))
	for i, name := range OpenSSLSymbols {
		sym, ok := syms[name]
		if !ok || sym.Offset == 0 {
			return fmt.Errorf("--tls: attaching uprobe %s in %s to process %d: %w", name, lib, pid, errSymbolNotFound)
		}
		at[i] = sym.Offset
	}
	ex, err := link.OpenExecutable(path)
	if err != nil {
		return fmt.Errorf("--tls: opening %s: %w", lib, err)
	}
	for i, prog := range []*ebpf.Program{t.objs.OnSslRead, t.objs.OnSslReadEx} {
		l, err := ex.UprobeMulti(nil, prog, &link.UprobeMultiOptions{PID: uint32(pid), Addresses: at[i : i+1]})
		if err != nil {
			return fmt.Errorf("--tls: attaching uprobe %s in %s to process %d: %w", OpenSSLSymbols[i], lib, pid, err)
		}
		t.links = append(t.links, l)
	}
	l, err := ex.UretprobeMulti(nil, t.objs.OnSslReadReturn, &link.UprobeMultiOptions{PID: uint32(pid), Addresses: at})
	if err != nil {
		return fmt.Errorf("--tls: attaching uretprobes %v in %s to process %d: %w", OpenSSLSymbols, lib, pid, err)
	}
	t.links = append(t.links, l)
	return nil
}

// MappedLibrary returns the path (in the process's mount namespace) of the
// first file mapped by pid whose name starts with prefix, as
// /proc/PID/maps lists it.
func MappedLibrary(pid int, prefix string) (string, error) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "maps"))
	if err != nil {
		return "", fmt.Errorf("reading the mappings of process %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasPrefix(f[5], "/") {
			continue
		}
		if strings.HasPrefix(filepath.Base(f[5]), prefix) {
			return f[5], nil
		}
	}
	return "", fmt.Errorf("process %d maps no %s*", pid, prefix)
}

// Events returns the lifecycle events, in batches in the order they were
// read (event.Batch); it is closed after Close drained it. Whoever takes a
// batch hands it back (Recycle, or Release once its events are recycled).
func (t *Tracer) Events() <-chan *event.Batch { return t.events }

// read moves ring buffer records into the events channel until the ring
// is flushed or interrupted. Records are decoded into a batch, sent once
// the ring has no more or it holds event.BatchLen: a channel send per
// record (its lock, and the consumer's wakeup) was a tenth of memdiag's CPU
// in record storms.
func (t *Tracer) read() {
	defer close(t.readerDone)
	defer close(t.events)
	t.batch = event.NewBatch()
	flushed := false
	for {
		var at time.Time // shared mode: when the ring was last looked at
		if t.shared {
			at = t.clock.Wall(monotonicNow())
		}
		n, busy, err := t.ring.read(event.BatchLen-len(t.batch.Events), t.deliverRecord)
		if err != nil {
			t.decodeErrors.Add(1) // the records written are dropped
		}
		switch {
		case len(t.batch.Events) >= event.BatchLen:
			t.send()
			continue
		case busy && n == 0:
			runtime.Gosched() // a record is being written
			continue
		case n > 0 || busy:
			continue // more may have come meanwhile
		}
		// The ring is empty.
		if len(t.batch.Events) > 0 {
			t.send()
		}
		if flushed {
			return
		}
		// The kernel side wakes the reader only when the ring fills up
		// (a wakeup per record costs the traced service a self-IPI), so
		// the reader also looks every readPoll.
		timedOut, fl, closed, err := t.ring.wait(readPoll)
		switch {
		case closed:
			return
		case fl:
			flushed = true // read what is left, then stop
		case err != nil:
			time.Sleep(readPoll) // not seen; do not spin on it
		case timedOut && t.shared && t.wantMarks.Load():
			// Nothing made before at is left: behind every record sent.
			t.batch.Events = append(t.batch.Events, ringEmpty{at})
		}
	}
}

// deliverRecord decodes one ring buffer record into the batch: an
// EV_OP_PAIR record is two.
func (t *Tracer) deliverRecord(raw []byte) {
	if end, begin, ok := pairParts(raw); ok {
		t.deliver(end)
		if begin != nil {
			t.deliver(begin)
		}
		return
	}
	t.deliver(raw)
}

// send sends the batch on and starts the next. Block rather than drop: an
// op's end carries bytes the kernel no longer holds. A slow consumer fills
// the ring buffer instead, where a record that finds no room is counted and
// its bytes stay in the kernel's tables.
func (t *Tracer) send() {
	t.events <- t.batch
	t.batch = event.NewBatch()
}

// deliver decodes one record into the batch.
func (t *Tracer) deliver(raw []byte) {
	t.records.Add(1)
	ev, err := decode(raw, t.clock, t.http, t.conns, t.batch)
	if err != nil {
		t.decodeErrors.Add(1)
		return
	}
	if ev == nil {
		return // bytes that only feed the naming state
	}
	if _, ok := ev.(*event.Exec); ok && t.onExec != nil {
		t.onExec(ev.(*event.Exec).PID, execCgroup(raw))
	}
	t.batch.Events = append(t.batch.Events, ev)
}

// Snapshot reads every bucket, the group totals and the health counters.
func (t *Tracer) Snapshot() (*event.Snapshot, error) {
	// Round(0): wall time only, as events and recordings carry it, so a
	// replay computes the same durations.
	s := &event.Snapshot{Time: time.Now().Round(0)}
	var (
		key memdiagBucketKey
		val memdiagCounters
	)
	// The kernel deletes buckets while this iterates (ops ending), which
	// can restart the walk: keep each key once, and walk again if the
	// kernel aborted it.
	var freed []memdiagBucketKey
	seen := map[memdiagBucketKey]int{}
	for attempt := 0; ; attempt++ {
		it := t.objs.Buckets.Iterate()
		for it.Next(&key, &val) {
			if key.Kind == uint32(event.BucketFreed) {
				if _, dup := seen[key]; !dup {
					seen[key] = -1
					freed = append(freed, key)
				}
				continue
			}
			b := event.Bucket{
				Key:      bucketKey(key.Tgid, key.Kind, key.Id),
				Counters: counters(&val),
			}
			if i, dup := seen[key]; dup {
				s.Buckets[i] = b
				continue
			}
			seen[key] = len(s.Buckets)
			s.Buckets = append(s.Buckets, b)
		}
		err := it.Err()
		if err == nil {
			break
		}
		if !errors.Is(err, ebpf.ErrIterationAborted) || attempt == 2 {
			return nil, fmt.Errorf("reading buckets: %w", err)
		}
	}
	if err := t.opBuckets(s); err != nil {
		return nil, err
	}
	// Freed buckets are taken, atomically, so a give-back that lands after
	// the read starts a new bucket instead of being lost.
	for _, k := range freed {
		if err := t.objs.Buckets.LookupAndDelete(&k, &val); err == nil {
			s.Freed = append(s.Freed, event.Bucket{
				Key:      bucketKey(k.Tgid, k.Kind, k.Id),
				Counters: counters(&val),
			})
		}
	}
	slices.SortFunc(s.Buckets, func(a, b event.Bucket) int {
		return cmp.Or(cmp.Compare(a.Key.PID, b.Key.PID), cmp.Compare(a.Key.Kind, b.Key.Kind), cmp.Compare(a.Key.ID, b.Key.ID))
	})
	procs := map[uint32]*event.ProcessMemory{}
	var (
		mmID uint64
		mm   memdiagMmState
	)
	mit := t.objs.MmStates.Iterate()
	for mit.Next(&mmID, &mm) {
		p := procs[mm.Tgid]
		if p == nil {
			p = &event.ProcessMemory{PID: mm.Tgid}
			procs[mm.Tgid] = p
		}
		// A process has one mm, two while an exec replaces it: the
		// current one is the larger by then, peaks are per mm.
		p.Current = max(p.Current, mm.Total)
		p.Peak = max(p.Peak, mm.Peak)
	}
	if err := mit.Err(); err != nil {
		return nil, fmt.Errorf("reading mm states: %w", err)
	}
	// A process whose mm is gone (it exited, and the mm's id went to
	// another process before this read) keeps its peak and its live
	// ArrayBuffers: a short-lived target is reported whole.
	proc := func(pid uint32) *event.ProcessMemory {
		p := procs[pid]
		if p == nil {
			p = &event.ProcessMemory{PID: pid}
			procs[pid] = p
		}
		return p
	}
	var (
		gonePID  uint32
		gonePeak int64
	)
	git := t.objs.GonePeaks.Iterate()
	for git.Next(&gonePID, &gonePeak) {
		p := proc(gonePID)
		p.Peak = max(p.Peak, gonePeak)
	}
	if err := git.Err(); err != nil {
		return nil, fmt.Errorf("reading the peaks of freed mms: %w", err)
	}
	var (
		abPID  uint32
		abLive int64
	)
	ait := t.objs.AbLive.Iterate()
	for ait.Next(&abPID, &abLive) {
		proc(abPID).ArrayBuffers = abLive
	}
	if err := ait.Err(); err != nil {
		return nil, fmt.Errorf("reading live ArrayBuffer bytes: %w", err)
	}
	for _, p := range procs {
		s.Processes = append(s.Processes, *p)
	}
	slices.SortFunc(s.Processes, func(a, b event.ProcessMemory) int { return cmp.Compare(a.PID, b.PID) })
	var g memdiagGroupTotal
	if err := t.objs.Group.Lookup(uint32(0), &g); err != nil {
		return nil, fmt.Errorf("reading group total: %w", err)
	}
	s.Total, s.Peak = g.Total, g.Peak
	stat := func(idx uint32) (uint64, error) {
		var perCPU []uint64
		if err := t.objs.Stats.Lookup(idx, &perCPU); err != nil {
			return 0, fmt.Errorf("reading stat %d: %w", idx, err)
		}
		var sum uint64
		for _, v := range perCPU {
			sum += v
		}
		return sum, nil
	}
	var err error
	for idx, dst := range map[uint32]*uint64{
		statLost:                &s.Stats.LostEvents,
		statBucketOverflow:      &s.Stats.BucketOverflow,
		statMMOverflow:          &s.Stats.MMOverflow,
		statTargetOverflow:      &s.Stats.TargetOverflow,
		statPendingOverflow:     &s.Stats.PendingOverflow,
		statSocketOverflow:      &s.Stats.SocketOverflow,
		statThreadOverflow:      &s.Stats.ThreadOverflow,
		statRegionOverflow:      &s.Stats.RegionOverflow,
		statOutstandingOverflow: &s.Stats.OutstandingOverflow,
		statUnmapSplit:          &s.Stats.UnmapSplit,
		statFramesLost:          &s.Stats.FramesLost,
	} {
		if *dst, err = stat(idx); err != nil {
			return nil, err
		}
	}
	s.Stats.DecodeErrors = t.decodeErrors.Load()
	s.Stats.Records = t.records.Load()
	return s, nil
}

// Forget deletes buckets that attribution has folded away for good, and the
// kernel state of processes that are gone, keeping the tables bounded.
func (t *Tracer) Forget(buckets []event.BucketKey, deadPIDs []uint32) error {
	var errs []error
	ops := map[uint64]bool{}
	for _, k := range buckets {
		if k.Kind == event.BucketOp {
			ops[k.ID] = true
			continue
		}
		key := memdiagBucketKey{Tgid: k.PID, Kind: uint32(k.Kind), Id: k.ID}
		if err := t.objs.Buckets.Delete(&key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("deleting bucket %v: %w", k, err))
		}
	}
	if len(ops) > 0 {
		errs = append(errs, t.freeOpSlots(func(o *memdiagOpSlot) bool { return ops[opSeq(o.OpId)] }))
	}
	if len(deadPIDs) == 0 {
		return errors.Join(errs...)
	}
	dead := make(map[uint32]bool, len(deadPIDs))
	for _, p := range deadPIDs {
		dead[p] = true
	}
	errs = append(errs, deleteWhere(t.objs.MmStates, "mm states", func(_ uint64, st memdiagMmState) bool { return dead[st.Tgid] }))
	for _, p := range deadPIDs {
		if err := t.objs.GonePeaks.Delete(&p); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("deleting a kept peak: %w", err))
		}
	}
	if err := t.ForgetProcess(deadPIDs...); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// closeLinks detaches every program. The raw tracepoint links go at once;
// a uprobe link (--tls, --exact-external, heap sampling) waits for an RCU
// grace period, so the links are closed in parallel: the waits overlap
// instead of adding up.
func (t *Tracer) closeLinks() error {
	errs := make([]error, len(t.links))
	var wg sync.WaitGroup
	for i, l := range t.links {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = l.Close()
		}()
	}
	wg.Wait()
	t.links = nil
	return errors.Join(errs...)
}

// Stop detaches every tracepoint and drains the ring buffer into Events,
// which is closed once drained. The maps stay readable, so the final
// Snapshot comes after Stop. Safe to call more than once.
func (t *Tracer) Stop() error {
	t.stopOnce.Do(func() {
		var errs []error
		if err := t.closeLinks(); err != nil {
			errs = append(errs, fmt.Errorf("detaching: %w", err))
		}
		// Nothing new can be written now: let the reader take what is
		// left, then stop.
		if err := t.ring.Flush(); err != nil {
			errs = append(errs, fmt.Errorf("flushing the ring buffer: %w", err))
			t.ring.Interrupt()
		}
		<-t.readerDone
		t.stopErr = errors.Join(errs...)
	})
	return t.stopErr
}

// Close stops the tracer if needed, then closes the ring buffer reader and
// frees the kernel objects. Safe to call more than once.
func (t *Tracer) Close() error {
	t.closeOnce.Do(func() {
		errs := []error{t.Stop()}
		if err := t.ring.close(); err != nil {
			errs = append(errs, fmt.Errorf("closing the ring buffer reader: %w", err))
		}
		if err := t.bits.close(); err != nil {
			errs = append(errs, fmt.Errorf("unmapping the target bitmap: %w", err))
		}
		if err := t.objs.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing BPF objects: %w", err))
		}
		t.closeErr = errors.Join(errs...)
	})
	return t.closeErr
}

// Symbols of node::NodeArrayBufferAllocator that --exact-external probes.
const (
	abAllocate              = "_ZN4node24NodeArrayBufferAllocator8AllocateEm"
	abAllocateUninitialized = "_ZN4node24NodeArrayBufferAllocator21AllocateUninitializedEm"
	abFree                  = "_ZN4node24NodeArrayBufferAllocator4FreeEPvm"
)

// AttachExact attaches the ArrayBuffer allocator uprobes (entry and return
// of Allocate and AllocateUninitialized, entry of Free) to the binary at
// path, for process pid only. path is the binary the process runs or will
// run (memdiag run attaches before the exec, so nothing is missed).
func (t *Tracer) AttachExact(pid int, path string) error {
	syms, err := lookupSymbols(path, abAllocate, abAllocateUninitialized, abFree)
	if err != nil {
		return fmt.Errorf("--exact-external: %w", err)
	}
	for _, name := range []string{abAllocate, abAllocateUninitialized, abFree} {
		if sym, ok := syms[name]; !ok || sym.Offset == 0 {
			target, rerr := os.Readlink(path)
			if rerr != nil {
				target = path
			}
			return fmt.Errorf("--exact-external: %s has no node::NodeArrayBufferAllocator symbols: it works with Node.js binaries that export them; run without --exact-external", target)
		}
	}
	freeAt, err := probeOffset(path, abFree, syms[abFree].Value)
	if err != nil {
		return fmt.Errorf("--exact-external: %w", err)
	}
	ex, err := link.OpenExecutable(path)
	if err != nil {
		return fmt.Errorf("--exact-external: opening %s: %w", path, err)
	}
	// uprobe_multi links filter by process, all its threads (V8 frees
	// backing stores on its own threads); a classic uprobe's pid is one
	// thread's.
	allocs := []uint64{syms[abAllocate].Offset, syms[abAllocateUninitialized].Offset}
	for _, p := range []struct {
		at   []uint64
		ret  bool
		prog *ebpf.Program
	}{
		{allocs, false, t.objs.OnAbAllocate},
		{allocs, true, t.objs.OnAbAllocateRet},
		{[]uint64{syms[abFree].Offset + freeAt}, false, t.objs.OnAbFree},
	} {
		opts := &link.UprobeMultiOptions{PID: uint32(pid), Addresses: p.at}
		var l link.Link
		if p.ret {
			l, err = ex.UretprobeMulti(nil, p.prog, opts)
		} else {
			l, err = ex.UprobeMulti(nil, p.prog, opts)
		}
		if err != nil {
			return fmt.Errorf("--exact-external: attaching to %s: %w", path, err)
		}
		t.links = append(t.links, l)
	}
	return nil
}

// StackSample is the RSS growth the kernel charged to one user stack.
type StackSample struct {
	PID     uint32
	Stack   []uint64 // user return addresses, leaf first
	Bytes   int64
	Samples uint64
}

// StackSamples reads the sampled growth by user stack of process pid.
func (t *Tracer) StackSamples(pid uint32) ([]StackSample, error) {
	var (
		k    memdiagStackKey
		v    memdiagStackGrowth
		keys []memdiagStackKey
		vals []memdiagStackGrowth
	)
	it := t.objs.StackGrowths.Iterate()
	for it.Next(&k, &v) {
		if k.Tgid == pid {
			keys, vals = append(keys, k), append(vals, v)
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading stack growth: %w", err)
	}
	out := make([]StackSample, 0, len(keys))
	for i, k := range keys {
		var frames [64]uint64
		if err := t.objs.Stacks.Lookup(uint32(k.StackId), &frames); err != nil {
			continue // evicted by a newer stack with the same hash
		}
		s := StackSample{PID: pid, Bytes: vals[i].Bytes, Samples: vals[i].Samples}
		for _, f := range frames {
			if f == 0 {
				break
			}
			s.Stack = append(s.Stack, f)
		}
		out = append(out, s)
	}
	return out, nil
}
