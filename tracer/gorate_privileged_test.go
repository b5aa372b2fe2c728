//go:build privileged

package tracer

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/memdiag/memdiag/event"
)

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
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	// The program reports its MemProfileRate on each line it reads, and
	// allocates 64 MiB in between (about 128 samples at the default rate).
	if err := os.WriteFile(src, []byte(`package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
)

var keep [][]byte

func main() {
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		for i := 0; i < 256; i++ {
			keep = append(keep, make([]byte, 256<<10))
		}
		keep = keep[:0]
		fmt.Println(runtime.MemProfileRate)
	}
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "noprof")
	build := exec.Command("go", "build", "-o", bin, src)
	build.Dir = dir
	build.Env = append(os.Environ(), "GO111MODULE=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	out := bufio.NewReader(stdout)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer in.Close()
	rate := func() string {
		t.Helper()
		if _, err := in.Write([]byte("\n")); err != nil {
			t.Fatal(err)
		}
		line, err := out.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		return line[:len(line)-1]
	}
	if got := rate(); got != "0" {
		t.Fatalf("the program's MemProfileRate is %s before memdiag: want 0 (the linker turns the profiler off)", got)
	}

	tr, err := Open(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	samples := make(chan int, 1)
	go func() {
		n := 0
		for ev := range tr.Events() {
			if hs, ok := ev.(*event.HeapSample); ok && hs.PID == uint32(cmd.Process.Pid) {
				n++
			}
		}
		samples <- n
	}()
	if err := tr.AddTarget(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.AttachGoSampler(cmd.Process.Pid, bin, false); !errors.Is(err, ErrNoSampler) {
		t.Fatalf("AttachGoSampler without turnOn on a profiler that is off: %v, want ErrNoSampler", err)
	}
	if got := rate(); got != "0" {
		t.Fatalf("MemProfileRate is %s after an attach without turnOn: want 0, untouched", got)
	}
	gs, err := tr.AttachGoSampler(cmd.Process.Pid, bin, true)
	if err != nil {
		t.Fatal(err)
	}
	if !gs.TurnedOn || gs.Rate != GoDefaultRate {
		t.Fatalf("AttachGoSampler = %+v, want turned on at %d", gs, GoDefaultRate)
	}
	if got := rate(); got != "524288" {
		t.Fatalf("MemProfileRate is %s while traced: want 524288", got)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if n := <-samples; n < 32 {
		t.Errorf("%d heap samples while 64 MiB were allocated at one per 512 KiB: want about 128 (at least 32)", n)
	}
	if got := rate(); got != "0" {
		t.Fatalf("MemProfileRate is %s after memdiag closed: want 0 again", got)
	}
}
