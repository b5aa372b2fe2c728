package main

import (
	"bufio"
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/memdiag/memdiag/bench/benchkit"
)

// faultstormSource is the workload program; the harness compiles it with
// gcc into its temporary directory.
//
//go:embed workloads/faultstorm.c
var faultstormSource []byte

// reqstormSource is the record storm's server and client (storm.go).
//
//go:embed workloads/reqstorm.c
var reqstormSource []byte

// compileFaultstorm builds faultstorm into dir and returns its path.
func compileFaultstorm(dir string) (string, error) {
	if _, err := exec.LookPath("gcc"); err != nil {
		return "", errors.New("gcc not found: the benchmark compiles its workload with gcc (apt-get install gcc libc6-dev)")
	}
	bin := filepath.Join(dir, "faultstorm")
	cmd := exec.Command("gcc", "-O2", "-Wall", "-Werror", "-o", bin, "-x", "c", "-")
	cmd.Stdin = bytes.NewReader(faultstormSource)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("compiling bench/workloads/faultstorm.c: %w\n%s", err, out)
	}
	return bin, nil
}

// workload is one way of running faultstorm: a row of the table.
type workload struct {
	name string   // row name
	desc string   // what one run does
	args []string // faultstorm flags, -w aside
	rate string   // what the throughput counts: "faults" or "syscalls"
}

// result is faultstorm's own account of one run.
type result struct {
	Elapsed  time.Duration // wall time of the work alone
	CPU      time.Duration // user+system CPU time of the work (BPF programs run in it)
	Faults   uint64        // minor faults during the work
	Syscalls uint64        // syscalls of the work: mmap and munmap, or reads
}

// count is the run's amount of work in what w counts.
func (r result) count(w workload) uint64 {
	if w.rate == "faults" {
		return r.Faults
	}
	return r.Syscalls
}

// perSecond is the run's throughput in what w counts.
func (r result) perSecond(w workload) float64 {
	return float64(r.count(w)) / r.Elapsed.Seconds()
}

// parseResult reads faultstorm's "result k=v ..." line.
func parseResult(line string) (result, error) {
	fields := strings.Fields(line)
	if len(fields) == 0 || fields[0] != "result" {
		return result{}, fmt.Errorf("want a result line from faultstorm, got %q", line)
	}
	vals := map[string]uint64{}
	for _, f := range fields[1:] {
		k, v, _ := strings.Cut(f, "=")
		if n, err := strconv.ParseUint(v, 10, 64); err == nil {
			vals[k] = n
		}
	}
	for _, k := range []string{"elapsed_ns", "cpu_ns", "faults", "syscalls"} {
		if _, ok := vals[k]; !ok {
			return result{}, fmt.Errorf("no %s in faultstorm's result %q", k, line)
		}
	}
	r := result{
		Elapsed:  time.Duration(vals["elapsed_ns"]),
		CPU:      time.Duration(vals["cpu_ns"]),
		Faults:   vals["faults"],
		Syscalls: vals["syscalls"],
	}
	if r.Elapsed <= 0 {
		return result{}, fmt.Errorf("faultstorm's result %q has no elapsed time", line)
	}
	return r, nil
}

// piped is a process started pinned to a CPU, driven through its stdin
// and read a line at a time on its stdout: faultstorm -w, reqstorm serve.
type piped struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Scanner
	stderr bytes.Buffer
}

// startPiped starts cmd pinned to cpu with its stdin and stdout piped;
// what names it in errors.
func startPiped(cmd *exec.Cmd, cpu int, what string) (*piped, error) {
	p := &piped{cmd: cmd}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = &p.stderr
	if err := benchkit.StartPinned(cmd, cpu); err != nil {
		return nil, fmt.Errorf("starting %s: %w", what, err)
	}
	p.in, p.out = in, bufio.NewScanner(out)
	return p, nil
}

// line reads the process's next line.
func (p *piped) line() (string, error) {
	if !p.out.Scan() {
		if err := p.out.Err(); err != nil {
			return "", err
		}
		return "", io.ErrUnexpectedEOF
	}
	return p.out.Text(), nil
}

// kill ends the process and reaps it.
func (p *piped) kill() {
	p.cmd.Process.Kill()
	p.in.Close()
	p.cmd.Wait()
}

// running is a started faultstorm -w, waiting on its stdin.
type running struct {
	*piped
	pid int
}

// startWorkload starts faultstorm pinned to cpu and waits for its "ready"
// line: from then on it only waits for the line that releases it.
func startWorkload(bin string, w workload, cpu int) (*running, error) {
	p, err := startPiped(exec.Command(bin, append(w.args, "-w")...), cpu, "faultstorm")
	if err != nil {
		return nil, err
	}
	r := &running{piped: p}
	line, err := r.line()
	if err == nil {
		_, err = fmt.Sscanf(line, "ready %d", &r.pid)
	}
	if err != nil {
		r.kill()
		return nil, fmt.Errorf("faultstorm did not get ready (%v): %s", err, strings.TrimSpace(r.stderr.String()))
	}
	return r, nil
}

// work releases the workload and returns its result once the work is done.
// The process stays alive until finish.
func (r *running) work() (result, error) {
	if _, err := io.WriteString(r.in, "go\n"); err != nil {
		return result{}, fmt.Errorf("releasing faultstorm: %w", err)
	}
	line, err := r.line()
	if err != nil {
		return result{}, fmt.Errorf("reading faultstorm's result: %w", err)
	}
	return parseResult(line)
}

// finish closes the workload's stdin, which lets it exit, and reaps it.
func (r *running) finish() error {
	r.in.Close()
	if err := r.cmd.Wait(); err != nil {
		return fmt.Errorf("faultstorm: %w", err)
	}
	return nil
}

// kill ends the workload on an error path.
