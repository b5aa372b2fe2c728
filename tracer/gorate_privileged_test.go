//go:build privileged

package tracer

import (
	"bufio"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/memdiag/memdiag/event"
)

// goAllocator is a Go program that, on each line it reads, allocates 64
// MiB (about 128 samples at the default rate) and answers with its
// runtime.MemProfileRate. With readProfile it also links the memory
// profile's reader (as net/http/pprof does), which keeps the profiler on.
func goAllocator(readProfile bool) string {
	reader := ""
	if readProfile {
		reader = `
	if len(os.Args) > 5 {
		runtime.MemProfile(nil, false)
	}`
	}
	return `package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
)

var keep [][]byte

func main() {` + reader + `
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		for i := 0; i < 256; i++ {
			keep = append(keep, make([]byte, 256<<10))
		}
		keep = keep[:0]
		fmt.Println(runtime.MemProfileRate)
	}
}
`
}

// goProgram is a running goAllocator.
type goProgram struct {
	bin string
	cmd *exec.Cmd
	in  io.Writer
	out *bufio.Reader
}

// startGo builds src with ldflags (and more build flags) and starts it.
func startGo(t *testing.T, src string, ldflags string, more ...string) *goProgram {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "prog")
	build := exec.Command("go", append(append([]string{"build", "-ldflags=" + ldflags}, more...), "-o", bin, "main.go")...)
	build.Dir = dir
	build.Env = append(os.Environ(), "GO111MODULE=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	p := &goProgram{bin: bin, cmd: exec.Command(bin)}
	in, err := p.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.in, p.out = in, bufio.NewReader(stdout)
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close()
		p.cmd.Wait()
	})
	return p
}

// allocate has the program allocate 64 MiB and returns its MemProfileRate.
func (p *goProgram) allocate(t *testing.T) string {
	t.Helper()
	if _, err := p.in.Write([]byte("\n")); err != nil {
		t.Fatal(err)
	}
	line, err := p.out.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(line, "\n")
}

// tracing opens a tracer with p as its target; the returned channel gives
// the number of p's heap samples once the tracer is closed.
func tracing(t *testing.T, p *goProgram) (*Tracer, <-chan int) {
	t.Helper()
	tr := openTracer(t)
	samples := make(chan int, 1)
	go func() {
		n := 0
		for b := range tr.Events() {
			for _, ev := range b.Events {
				if hs, ok := ev.(*event.HeapSample); ok && hs.PID == uint32(p.cmd.Process.Pid) {
					n++
				}
			}
			b.Recycle()
		}
		samples <- n
	}()
	if err := tr.AddTarget(p.cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	return tr, samples
}

// TestGoProfilerTurnedOnAndBack: in a Go binary that never reads the
// memory profile, Go's linker sets runtime.MemProfileRate to 0. Attached
// with turnOn, memdiag sets it to Go's default while it traces — and the
// program's own allocations then reach the profiler's mProf_Malloc, which
// memdiag's uprobe counts — and sets it back to 0 when the tracer closes.
// Without turnOn it leaves the process alone and says why.
func TestGoProfilerTurnedOnAndBack(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads and attaches the BPF program")
	}
	t.Run("executable", func(t *testing.T) { turnOnAndBack(t) })
	// A position-independent binary: the variable is where the loader
	// put it, the load bias added.
	t.Run("PIE", func(t *testing.T) { turnOnAndBack(t, "-buildmode=pie") })
}

func turnOnAndBack(t *testing.T, build ...string) {
	p := startGo(t, goAllocator(false), "", build...)
	if got := p.allocate(t); got != "0" {
		t.Fatalf("the program's MemProfileRate is %s before memdiag: want 0 (the linker turns the profiler off)", got)
	}
	tr, samples := tracing(t, p)
	if _, err := tr.AttachGoSampler(p.cmd.Process.Pid, p.bin, false); !errors.Is(err, ErrNoSampler) {
		t.Fatalf("AttachGoSampler without turnOn on a profiler that is off: %v, want ErrNoSampler", err)
	}
	if got := p.allocate(t); got != "0" {
		t.Fatalf("MemProfileRate is %s after an attach without turnOn: want 0, untouched", got)
	}
	gs, err := tr.AttachGoSampler(p.cmd.Process.Pid, p.bin, true)
	if err != nil {
		t.Fatal(err)
	}
	if !gs.TurnedOn || gs.Rate != GoDefaultRate {
		t.Fatalf("AttachGoSampler = %+v, want turned on at %d", gs, GoDefaultRate)
	}
	if got := p.allocate(t); got != "524288" {
		t.Fatalf("MemProfileRate is %s while traced: want 524288", got)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if n := <-samples; n < 32 {
		t.Errorf("%d heap samples while 64 MiB were allocated at one per 512 KiB: want about 128 (at least 32)", n)
	}
	if got := p.allocate(t); got != "0" {
		t.Fatalf("MemProfileRate is %s after memdiag closed: want 0 again", got)
	}
}

// TestStrippedGoBinary: a binary built with -ldflags=-s has no symbol
// table; its pclntab still names the profiler's functions. Where the
// profile reader is linked, the profiler runs at Go's default and memdiag
// follows it; where it is not, the profiler is off and memdiag, unable to
// find runtime.MemProfileRate, says so and leaves the process alone.
func TestStrippedGoBinary(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads and attaches the BPF program")
	}
	t.Run("profile reader linked", func(t *testing.T) {
		p := startGo(t, goAllocator(true), "-s -w")
		tr, samples := tracing(t, p)
		gs, err := tr.AttachGoSampler(p.cmd.Process.Pid, p.bin, true)
		if err != nil {
			t.Fatal(err)
		}
		if !gs.Assumed || gs.TurnedOn || gs.Rate != GoDefaultRate {
			t.Fatalf("AttachGoSampler = %+v, want the default rate, assumed", gs)
		}
		if got := p.allocate(t); got != "524288" {
			t.Fatalf("MemProfileRate %s: the program should run the profiler at the default", got)
		}
		tr.Close()
		if n := <-samples; n < 32 {
			t.Errorf("%d heap samples while 64 MiB were allocated: want about 128 (at least 32)", n)
		}
	})
	t.Run("profiler off", func(t *testing.T) {
		p := startGo(t, goAllocator(false), "-s -w")
		tr, _ := tracing(t, p)
		_, err := tr.AttachGoSampler(p.cmd.Process.Pid, p.bin, true)
		if !errors.Is(err, ErrNoSampler) || !strings.Contains(err.Error(), "cannot find runtime.MemProfileRate") {
			t.Fatalf("AttachGoSampler on a stripped binary with the profiler off: %v", err)
		}
		if got := p.allocate(t); got != "0" {
			t.Fatalf("MemProfileRate %s: want 0, untouched", got)
		}
	})
}
