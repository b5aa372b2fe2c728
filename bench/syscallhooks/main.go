// Command syscallhooks measures, side by side, the two ways memdiag can hook
// syscalls: a perf-event tracepoint per syscall (syscalls:sys_enter_read and
// sys_exit_read), or one BTF-free raw tracepoint pair on every syscall
// (raw_syscalls sys_enter/sys_exit) that dispatches on the syscall number.
// Each program does what memdiag's hooks do first: one test of the target
// bitmap, and for a target one hash lookup. It reports the CPU time each
// syscall of a workload gains, per arm, for a process that is not traced
// (a bystander) and for one that is.
//
//	sudo go run ./bench/syscallhooks [-rounds 7] [-n 400000]
//
// It needs root and gcc (it builds bench/workloads/faultstorm.c), and writes
// a markdown table on stdout.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/memdiag/memdiag/bench/benchkit"
)

const bitmapWords = 2048 // memdiag's target bitmap: 65536 bits

// readNR is __NR_read on x86_64; the raw programs dispatch on it.
const readNR = 0

// hooks holds one arm's loaded programs.
type hooks struct {
	bits    *ebpf.Map
	targets *ebpf.Map
	progs   []*ebpf.Program
	attach  func() ([]link.Link, error)
}

// earlyExit emits: tgid = current tgid; if its bit is clear, return 0;
// else look it up in targets and return 0. For the raw pair (nr: 1 at
// sys_enter, 2 at sys_exit) a set bit is followed by the dispatch: the
// syscall number (sys_enter's args[1]; at sys_exit, regs->orig_ax, read
// with bpf_probe_read_kernel), and only read goes on to the lookup.
func earlyExit(bits, targets *ebpf.Map, nr int) asm.Instructions {
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R9, asm.R1),
		asm.FnGetCurrentPidTgid.Call(),
		asm.RSh.Imm(asm.R0, 32),
		asm.Mov.Reg(asm.R6, asm.R0),
		asm.StoreImm(asm.R10, -4, 0, asm.Word),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, bits.FD()),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.RSh.Imm(asm.R1, 5),
		asm.And.Imm(asm.R1, bitmapWords-1),
		asm.LSh.Imm(asm.R1, 2),
		asm.Add.Reg(asm.R0, asm.R1),
		asm.LoadMem(asm.R0, asm.R0, 0, asm.Word),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.And.Imm(asm.R1, 31),
		asm.RSh.Reg32(asm.R0, asm.R1),
		asm.And.Imm(asm.R0, 1),
		asm.JEq.Imm(asm.R0, 0, "out"),
	}
	switch nr {
	case 1:
		insns = append(insns,
			asm.LoadMem(asm.R7, asm.R9, 8, asm.DWord), // args[1]: the syscall number
			asm.JNE.Imm(asm.R7, readNR, "out"))
	case 2:
		insns = append(insns,
			asm.LoadMem(asm.R3, asm.R9, 0, asm.DWord), // args[0]: struct pt_regs *
			asm.Add.Imm(asm.R3, 15*8),                 // orig_ax
			asm.Mov.Reg(asm.R1, asm.R10),
			asm.Add.Imm(asm.R1, -16),
			asm.Mov.Imm(asm.R2, 8),
			asm.FnProbeReadKernel.Call(),
			asm.LoadMem(asm.R7, asm.R10, -16, asm.DWord),
			asm.JNE.Imm(asm.R7, readNR, "out"))
	}
	insns = append(insns,
		asm.StoreMem(asm.R10, -8, asm.R6, asm.Word),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -8),
		asm.LoadMapPtr(asm.R1, targets.FD()),
		asm.FnMapLookupElem.Call(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	)
	return insns
}

func newHooks(raw bool) (*hooks, error) {
	bits, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: bitmapWords * 4, MaxEntries: 1, Flags: unix.BPF_F_MMAPABLE})
	if err != nil {
		return nil, fmt.Errorf("bitmap: %w", err)
	}
	targets, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 16, MaxEntries: 8192})
	if err != nil {
		return nil, fmt.Errorf("targets: %w", err)
	}
	h := &hooks{bits: bits, targets: targets}
	typ := ebpf.TracePoint
	if raw {
		typ = ebpf.RawTracepoint
	}
	for i := range 2 {
		nr := 0
		if raw {
			nr = i + 1
		}
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: typ, License: "GPL", Instructions: earlyExit(bits, targets, nr)})
		if err != nil {
			return nil, fmt.Errorf("program: %w", err)
		}
		h.progs = append(h.progs, p)
	}
	h.attach = func() ([]link.Link, error) {
		var ls []link.Link
		names := []string{"sys_enter_read", "sys_exit_read"}
		if raw {
			names = []string{"sys_enter", "sys_exit"}
		}
		for i, n := range names {
			var l link.Link
			var err error
			if raw {
				l, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: n, Program: h.progs[i]})
			} else {
				l, err = link.Tracepoint("syscalls", n, h.progs[i], nil)
			}
			if err != nil {
				return ls, fmt.Errorf("attaching %s: %w", n, err)
			}
			ls = append(ls, l)
		}
		return ls, nil
	}
	return h, nil
}

// mark sets (or clears) pid's bit and targets entry.
func (h *hooks) mark(pid uint32, on bool) error {
	mem, err := unix.Mmap(h.bits.FD(), 0, bitmapWords*4, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return err
	}
	defer unix.Munmap(mem)
	w := (*uint32)(unsafe.Pointer(&mem[(pid/32)%bitmapWords*4]))
	if on {
		*w |= 1 << (pid % 32)
		return h.targets.Update(pid, make([]byte, 16), ebpf.UpdateAny)
	}
	*w &^= 1 << (pid % 32)
	return h.targets.Delete(pid)
}

// run runs the workload once and returns its CPU time per syscall (ns).
func run(bin, mode string, n int, before func(pid int) error, after func(pid int)) (float64, error) {
	cmd := exec.Command("taskset", "-c", "1", bin, "-m", mode, "-n", strconv.Itoa(n), "-w")
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer cmd.Wait()
	defer in.Close()
	r := bufio.NewScanner(out)
	if !r.Scan() {
		return 0, fmt.Errorf("workload: no ready line")
	}
	var pid int
	fmt.Sscanf(r.Text(), "ready %d", &pid)
	if err := before(pid); err != nil {
		return 0, err
	}
	defer after(pid)
	fmt.Fprintln(in, "go")
	if !r.Scan() {
		return 0, fmt.Errorf("workload: no result")
	}
	var cpu, calls float64
	for _, f := range strings.Fields(r.Text()) {
		k, v, _ := strings.Cut(f, "=")
		x, _ := strconv.ParseFloat(v, 64)
		switch k {
		case "cpu_ns":
			cpu = x
		case "syscalls":
			calls = x
		}
	}
	return cpu / calls, nil
}

func main() {
	rounds := flag.Int("rounds", 7, "interleaved rounds per arm")
	n := flag.Int("n", 400000, "syscalls per run")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "syscallhooks: needs root (it loads BPF programs): run it with sudo")
		os.Exit(2)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		fmt.Fprintln(os.Stderr, "syscallhooks:", err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "syscallhooks-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "syscallhooks:", err)
		os.Exit(1)
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "faultstorm")
	if out, err := exec.Command("gcc", "-O2", "-o", bin, "bench/workloads/faultstorm.c").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "syscallhooks: building the workload (run from the repository root; needs gcc): %v\n%s", err, out)
		os.Exit(1)
	}
	perf, err := newHooks(false)
	if err != nil {
		fmt.Fprintln(os.Stderr, "syscallhooks: per-syscall tracepoints:", err)
		os.Exit(1)
	}
	raw, err := newHooks(true)
	if err != nil {
		fmt.Fprintln(os.Stderr, "syscallhooks: raw tracepoints:", err)
		os.Exit(1)
	}
	type arm struct {
		name   string
		h      *hooks
		traced bool
	}
	arms := []arm{{"none", nil, false}, {"per-syscall tracepoints", perf, false}, {"raw sys_enter/sys_exit", raw, false}, {"per-syscall tracepoints, traced", perf, true}, {"raw sys_enter/sys_exit, traced", raw, true}}
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "syscallhooks:", err)
		os.Exit(1)
	}
	fmt.Printf("CPU time per syscall of the workload (ns, median of %d interleaved rounds of %d calls; `CPU added` is against no hooks); the programs test the target bitmap, and a target's also looks up its tgid.\n\n", *rounds, *n)
	fmt.Println("| workload | arm | CPU per syscall | CPU added per syscall |")
	fmt.Println("|---|---|---|---|")
	for _, mode := range []string{"read", "getppid"} {
		res := make([][]float64, len(arms))
		for r := 0; r < *rounds; r++ {
			for i := range arms {
				a := arms[(i+r)%len(arms)]
				idx := (i + r) % len(arms)
				var links []link.Link
				v, err := run(bin, mode, *n, func(pid int) error {
					if a.h == nil {
						return nil
					}
					if a.traced {
						if err := a.h.mark(uint32(pid), true); err != nil {
							return err
						}
					}
					var err error
					links, err = a.h.attach()
					return err
				}, func(pid int) {
					for _, l := range links {
						l.Close()
					}
					if a.h != nil && a.traced {
						a.h.mark(uint32(pid), false)
					}
				})
				if err != nil {
					fail(err)
				}
				res[idx] = append(res[idx], v)
				fmt.Fprintf(os.Stderr, "syscallhooks: %s round %d %s: %.0f ns/syscall\n", mode, r+1, a.name, v)
			}
		}
		for i, a := range arms {
			added := "—"
			if i > 0 {
				var d []float64
				for j := range res[i] {
					d = append(d, res[i][j]-res[0][j])
				}
				added = fmt.Sprintf("%+.0f ns", benchkit.Median(d))
			}
			what := mode + " (hooked: read)"
			if mode == "getppid" {
				what = "getppid (hooked by neither)"
			}
			fmt.Printf("| %s | %s | %.0f ns | %s |\n", what, a.name, benchkit.Median(res[i]), added)
		}
	}
}
