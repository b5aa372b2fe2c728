// Command verifier loads memdiag's BPF object the way the tracer does and
// prints, per program, what the kernel's verifier did: instructions
// processed, verification time and the program's size, sorted by time.
// Attach time is mostly this (the verifier runs at load, before any
// tracepoint is attached).
//
//	sudo go run ./bench/verifier [-o tracer/memdiag_x86_bpfel.o]
package main

import (
	"flag"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
)

var timeRE = regexp.MustCompile(`verification time (\d+) usec`)
var insnsRE = regexp.MustCompile(`processed (\d+) insns`)

func main() {
	obj := flag.String("o", "tracer/memdiag_x86_bpfel.o", "the BPF object")
	flag.Parse()
	if err := run(*obj); err != nil {
		fmt.Fprintln(os.Stderr, "verifier:", err)
		os.Exit(1)
	}
}

func run(obj string) error {
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("raising the memlock limit: %w", err)
	}
	spec, err := ebpf.LoadCollectionSpec(obj)
	if err != nil {
		return fmt.Errorf("reading %s: %w", obj, err)
	}
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return err
	}
	if v, ok := spec.Variables["nr_cpus"]; ok {
		if err := v.Set(uint32(cpus)); err != nil {
			return err
		}
	}
	start := time.Now()
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{
		Programs: ebpf.ProgramOptions{LogLevel: ebpf.LogLevelStats},
	})
	if err != nil {
		return fmt.Errorf("loading: %w", err)
	}
	wall := time.Since(start)
	defer coll.Close()
	type row struct {
		name        string
		insns, usec int
		size        int
	}
	var rows []row
	var tInsns, tUsec int
	for name, p := range coll.Programs {
		log := p.VerifierLog
		r := row{name: name, size: len(spec.Programs[name].Instructions)}
		if m := insnsRE.FindStringSubmatch(log); m != nil {
			r.insns, _ = strconv.Atoi(m[1])
		}
		if m := timeRE.FindStringSubmatch(log); m != nil {
			r.usec, _ = strconv.Atoi(m[1])
		}
		tInsns += r.insns
		tUsec += r.usec
		rows = append(rows, r)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].usec > rows[j].usec })
	fmt.Printf("| program | instructions (with subprograms) | processed by the verifier | verification time |\n|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Printf("| %s | %d | %d | %.1f ms |\n", r.name, r.size, r.insns, float64(r.usec)/1000)
	}
	fmt.Printf("| **total** (%d programs) | | %d | %.1f ms (load wall time %v) |\n", len(rows), tInsns, float64(tUsec)/1000, wall.Round(time.Millisecond))
	return nil
}
