package target

import (
	"fmt"
	"os"

	"github.com/memdiag/memdiag/dump"
	"github.com/memdiag/memdiag/session"
	"github.com/memdiag/memdiag/tracer"
)

// Probes says where a trace attaches.
type Probes struct {
	Launcher   int    // memdiag run: the launcher's pid, a target from its exec; 0 for attach
	Cgroup     string // attach --container/--cgroup: follow new processes of this cgroup v2 directory
	Main       int    // the process reports name
	PIDs       []int  // attach: every process to trace now, Main among them
	Exe        string // the binary uprobes (--tls, --exact-external) go on, for process UprobePID
	UprobePID  int    // the process uprobes are for
	TLS        bool   // attach the uprobe that names HTTPS requests (--tls)
	Exact      bool   // attach the ArrayBuffer allocator uprobes (--exact-external)
	NativeHeap bool   // attach the malloc/free uprobes (--native-heap)
}

// Open is the one open/attach sequence of attach and run: load the BPF
// program, make the processes targets and learn their mappings, attach
// the opt-in uprobes. The tracer's Close goes to onClose as soon as it is
// open, so the caller closes it, in its own order, on every path out.
// traced lists the pids of p.PIDs other than Main that are traced (some
// may have exited).
func Open(cfg tracer.Config, p Probes, onClose func(func() error)) (tr *tracer.Tracer, traced []int, err error) {
	tr, err = tracer.Open(cfg)
	if err != nil {
		return nil, nil, err
	}
	onClose(tr.Close)
	for _, pid := range p.PIDs {
		if err := tr.AddTarget(pid); err != nil {
			return nil, nil, err
		}
		if _, err := tr.LearnProcess(pid, true); err != nil {
			if pid == p.Main {
				return nil, nil, fmt.Errorf("process %d exited while memdiag was attaching (%v)", pid, err)
			}
			continue // a container process that just exited
		}
		if pid != p.Main {
			traced = append(traced, pid)
		}
	}
	if p.TLS {
		if err := tr.AttachTLS(p.UprobePID, p.Exe); err != nil {
			return nil, nil, Input(err)
		}
	}
	if p.Exact {
		if err := tr.AttachExact(p.UprobePID, p.Exe); err != nil {
			return nil, nil, Input(err)
		}
	}
	if p.NativeHeap {
		libc := "" // attach: the library the process maps
		if p.Launcher != 0 {
			libc = hostLibc() // run: attached before the exec
		}
		if err := tr.AttachNativeHeap(p.UprobePID, libc); err != nil {
			return nil, nil, Input(err)
		}
	}
	return tr, traced, nil
}

// Stacks reads a tracer's sampled growth by user stack, for dumps
// (session.Config.Stacks).
func Stacks(tr *tracer.Tracer) func(uint32) ([]dump.StackSample, error) {
	return func(pid uint32) ([]dump.StackSample, error) {
		raw, err := tr.StackSamples(pid)
		if err != nil {
			return nil, err
		}
		out := make([]dump.StackSample, 0, len(raw))
		for _, r := range raw {
			out = append(out, dump.StackSample{PID: r.PID, Stack: r.Stack, Bytes: r.Bytes, Pages: int64(r.Samples)})
		}
		return out, nil
	}
}

// Sampler adapts the tracer to the session's runtime heap samplers
// (session.Sampler).
type Sampler struct{ *tracer.Tracer }

// AttachGo attaches the Go memory profiler's uprobes, turning the
// profiler on where the linker turned it off.
func (s Sampler) AttachGo(pid int, exe string) (session.GoProfiler, error) {
	gs, err := s.AttachGoSampler(pid, exe, true)
	return session.GoProfiler{Version: gs.GoVersion, Rate: gs.Rate, TurnedOn: gs.TurnedOn, Assumed: gs.Assumed}, err
}

// AttachV8 attaches V8's SampleObject uprobe.
func (s Sampler) AttachV8(pid int, exe string) error { return s.AttachV8Sampler(pid, exe) }

// hostLibc is the C library a dynamically linked program memdiag run
// starts will load: the first of the usual places that exists.
func hostLibc() string {
	for _, p := range []string{"/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6", "/usr/lib64/libc.so.6", "/lib/libc.so.6"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "/lib/x86_64-linux-gnu/libc.so.6"
}
