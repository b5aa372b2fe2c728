package tracer

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/memdiag/memdiag/event"
)

// Config sets the tracer's sizes and mode.
type Config struct {
	// Launcher is the pid of `memdiag run`'s launcher: its exec makes it
	// a target, so nothing the command does is missed. 0 for attach.
	Launcher int
	// RingbufBytes sizes the lifecycle ring buffer (a power of two, at
	// least one page); 0 means 256 KiB.
	RingbufBytes int
	// MaxBuckets bounds the kernel's bucket table; 0 means 16384.
	MaxBuckets int
	// QueueLen bounds the channel between the ring buffer reader and its
	// consumer; records that find it full are dropped and counted. 0 means 4096.
	QueueLen int
}

// Target states, the kernel's enum target_state.
const (
	stateAttached = 1
)

// Stat slots, the kernel's enum stat_index.
const (
	statLost = iota
	statBucketOverflow
	statMMOverflow
	statTargetOverflow
	statPendingOverflow
)

// Tracepoints lists every tracepoint the BPF program attaches to, with the
// program that handles it.
var Tracepoints = []Tracepoint{
	{"kmem", "rss_stat"},
	{"exceptions", "page_fault_user"},
	{"syscalls", "sys_enter_mmap"}, {"syscalls", "sys_exit_mmap"},
	{"syscalls", "sys_enter_munmap"}, {"syscalls", "sys_exit_munmap"},
	{"syscalls", "sys_enter_mremap"}, {"syscalls", "sys_exit_mremap"},
	{"syscalls", "sys_enter_mprotect"}, {"syscalls", "sys_exit_mprotect"},
	{"syscalls", "sys_enter_brk"}, {"syscalls", "sys_exit_brk"},
	{"syscalls", "sys_enter_madvise"}, {"syscalls", "sys_exit_madvise"},
	{"syscalls", "sys_enter_execve"}, {"syscalls", "sys_exit_execve"},
	{"syscalls", "sys_enter_execveat"}, {"syscalls", "sys_exit_execveat"},
	{"sched", "sched_process_fork"},
	{"sched", "sched_process_exec"},
	{"sched", "sched_process_exit"},
	{"task", "task_rename"},
}

func (o *memdiagObjects) program(tp Tracepoint) *ebpf.Program {
	return map[string]*ebpf.Program{
		"rss_stat":           o.OnRssStat,
		"page_fault_user":    o.OnPageFault,
		"sys_enter_mmap":     o.OnEnterMmap,
		"sys_exit_mmap":      o.OnExitMmap,
		"sys_enter_munmap":   o.OnEnterMunmap,
		"sys_exit_munmap":    o.OnExitMunmap,
		"sys_enter_mremap":   o.OnEnterMremap,
		"sys_exit_mremap":    o.OnExitMremap,
		"sys_enter_mprotect": o.OnEnterMprotect,
		"sys_exit_mprotect":  o.OnExitMprotect,
		"sys_enter_brk":      o.OnEnterBrk,
		"sys_exit_brk":       o.OnExitBrk,
		"sys_enter_madvise":  o.OnEnterMadvise,
		"sys_exit_madvise":   o.OnExitMadvise,
		"sys_enter_execve":   o.OnEnterExecve,
		"sys_exit_execve":    o.OnExitExecve,
		"sys_enter_execveat": o.OnEnterExecveat,
		"sys_exit_execveat":  o.OnExitExecveat,
		"sched_process_fork": o.OnFork,
		"sched_process_exec": o.OnExec,
		"sched_process_exit": o.OnExit,
		"task_rename":        o.OnRename,
	}[tp.Name]
}

// Tracer is a loaded and attached BPF program.
type Tracer struct {
	objs        memdiagObjects
	links       []io.Closer // closed in reverse
	reader      *ringbuf.Reader
	events      chan event.Event
	clock       Clock
	dropped     atomic.Uint64 // records dropped because events was full
	undecodable atomic.Uint64
	readerDone  chan struct{}

	stopOnce  sync.Once
	stopErr   error
	closeOnce sync.Once
	closeErr  error
}

// Open probes the kernel, loads the program and attaches every tracepoint.
// Nothing is traced until a target is added (or the launcher execs).
func Open(cfg Config) (_ *Tracer, err error) {
	if err := Probe(Tracepoints); err != nil {
		return nil, err
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raising the memlock limit: %w", err)
	}
	spec, err := loadMemdiag()
	if err != nil {
		return nil, fmt.Errorf("reading the embedded BPF program: %w", err)
	}
	if cfg.Launcher != 0 {
		if err := spec.Variables["launcher_tgid"].Set(uint32(cfg.Launcher)); err != nil {
			return nil, fmt.Errorf("setting launcher_tgid: %w", err)
		}
	}
	if cfg.RingbufBytes != 0 {
		if cfg.RingbufBytes < unix.Getpagesize() || cfg.RingbufBytes&(cfg.RingbufBytes-1) != 0 {
			return nil, fmt.Errorf("ring buffer size %d: want a power of two of at least %d bytes", cfg.RingbufBytes, unix.Getpagesize())
		}
		spec.Maps["events"].MaxEntries = uint32(cfg.RingbufBytes)
	}
	if cfg.MaxBuckets != 0 {
		spec.Maps["buckets"].MaxEntries = uint32(cfg.MaxBuckets)
	}
	if cfg.QueueLen == 0 {
		cfg.QueueLen = 4096
	}

	t := &Tracer{
		events:     make(chan event.Event, cfg.QueueLen),
		readerDone: make(chan struct{}),
		clock:      nowClock(),
	}
	if err := spec.LoadAndAssign(&t.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("the kernel's verifier refused memdiag's BPF program (please report this with your kernel version): %+v", ve)
		}
		return nil, fmt.Errorf("loading BPF objects: %w", err)
	}
	defer func() {
		if err != nil {
			t.objs.Close()
		}
	}()

	overflow := memdiagBucketKey{Kind: uint32(event.BucketOverflow)}
	if err := t.objs.Buckets.Update(&overflow, &memdiagCounters{}, ebpf.UpdateNoExist); err != nil {
		return nil, fmt.Errorf("creating the overflow bucket: %w", err)
	}

	for _, tp := range Tracepoints {
		l, err := link.Tracepoint(tp.Group, tp.Name, t.objs.program(tp), nil)
		if err != nil {
			t.closeLinks()
			return nil, fmt.Errorf("attaching tracepoint %s: %w", tp, err)
		}
		t.links = append(t.links, l)
	}
	t.reader, err = ringbuf.NewReader(t.objs.Events)
	if err != nil {
		t.closeLinks()
		return nil, fmt.Errorf("opening the ring buffer: %w", err)
	}
	go t.read()
	return t, nil
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
	return nil
}

// Events returns the lifecycle events; it is closed after Close drained it.
func (t *Tracer) Events() <-chan event.Event { return t.events }

// read moves ring buffer records into the events channel until the reader
// is flushed or closed.
func (t *Tracer) read() {
	defer close(t.readerDone)
	defer close(t.events)
	var rec ringbuf.Record
	for {
		if err := t.reader.ReadInto(&rec); err != nil {
			if errors.Is(err, ringbuf.ErrClosed) || errors.Is(err, ringbuf.ErrFlushed) {
				return
			}
			continue
		}
		ev, err := Decode(rec.RawSample, t.clock)
		if err != nil {
			t.undecodable.Add(1)
			continue
		}
		select {
		case t.events <- ev:
		default:
			t.dropped.Add(1)
		}
	}
}

// Snapshot reads every bucket, the group totals and the health counters.
func (t *Tracer) Snapshot() (*event.Snapshot, error) {
	s := &event.Snapshot{Time: time.Now()}
	var (
		key memdiagBucketKey
		val memdiagCounters
	)
	it := t.objs.Buckets.Iterate()
	for it.Next(&key, &val) {
		s.Buckets = append(s.Buckets, event.Bucket{
			Key:      event.BucketKey{PID: key.Tgid, Kind: event.BucketKind(key.Kind), ID: key.Id},
			Counters: counters(&val),
		})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading buckets: %w", err)
	}
	slices.SortFunc(s.Buckets, func(a, b event.Bucket) int {
		return cmp.Or(cmp.Compare(a.Key.PID, b.Key.PID), cmp.Compare(a.Key.Kind, b.Key.Kind), cmp.Compare(a.Key.ID, b.Key.ID))
	})
	procs := map[uint32]*event.ProcessMemory{}
	var (
		mmID uint32
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
		statLost:            &s.Stats.LostEvents,
		statBucketOverflow:  &s.Stats.BucketOverflow,
		statMMOverflow:      &s.Stats.MMOverflow,
		statTargetOverflow:  &s.Stats.TargetOverflow,
		statPendingOverflow: &s.Stats.PendingOverflow,
	} {
		if *dst, err = stat(idx); err != nil {
			return nil, err
		}
	}
	s.Stats.DroppedEvents = t.dropped.Load() + t.undecodable.Load()
	return s, nil
}

// Forget deletes buckets that attribution has folded away for good, and the
// kernel state of processes that are gone, keeping the tables bounded.
func (t *Tracer) Forget(buckets []event.BucketKey, deadPIDs []uint32) error {
	var errs []error
	for _, k := range buckets {
		key := memdiagBucketKey{Tgid: k.PID, Kind: uint32(k.Kind), Id: k.ID}
		if err := t.objs.Buckets.Delete(&key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("deleting bucket %v: %w", k, err))
		}
	}
	if len(deadPIDs) == 0 {
		return errors.Join(errs...)
	}
	dead := make(map[uint32]bool, len(deadPIDs))
	for _, p := range deadPIDs {
		dead[p] = true
	}
	var (
		id    uint32
		st    memdiagMmState
		stale []uint32
	)
	it := t.objs.MmStates.Iterate()
	for it.Next(&id, &st) {
		if dead[st.Tgid] {
			stale = append(stale, id)
		}
	}
	if err := it.Err(); err != nil {
		errs = append(errs, fmt.Errorf("reading mm states: %w", err))
	}
	for _, id := range stale {
		if err := t.objs.MmStates.Delete(&id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("deleting mm state: %w", err))
		}
	}
	return errors.Join(errs...)
}

func (t *Tracer) closeLinks() error {
	var errs []error
	for i := len(t.links) - 1; i >= 0; i-- {
		if err := t.links[i].Close(); err != nil {
			errs = append(errs, err)
		}
	}
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
		if err := t.reader.Flush(); err != nil {
			errs = append(errs, fmt.Errorf("flushing the ring buffer: %w", err))
			t.reader.Close()
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
		if err := t.reader.Close(); err != nil && !errors.Is(err, ringbuf.ErrClosed) {
			errs = append(errs, fmt.Errorf("closing the ring buffer reader: %w", err))
		}
		if err := t.objs.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing BPF objects: %w", err))
		}
		t.closeErr = errors.Join(errs...)
	})
	return t.closeErr
}
