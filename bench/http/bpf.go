package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// The benchmark asks bpftool, not the bpf(2) syscall, about BPF programs:
// which are memdiag's (to notice other memdiag instances on this shared
// machine, whose programs run on every syscall of the service whoever
// traces it) and, with statistics on, how long each program runs.

// prog is one BPF program as `bpftool prog show -j` lists it. The run
// counters are there only while kernel.bpf_stats_enabled is 1.
type prog struct {
	ID        uint32 `json:"id"`
	Name      string `json:"name"`
	RunTimeNS uint64 `json:"run_time_ns"`
	RunCnt    uint64 `json:"run_cnt"`
}

// tracerProgName is the name of memdiag's program on kmem/rss_stat: one
// per memdiag loaded.
const tracerProgName = "on_rss_stat"

// progs lists every BPF program loaded on the machine.
func (b *bench) progs() ([]prog, error) {
	out, err := exec.Command(b.bpftool, "prog", "show", "-j").Output()
	if err != nil {
		return nil, fmt.Errorf("bpftool prog show: %w", err)
	}
	var ps []prog
	if err := json.Unmarshal(out, &ps); err != nil {
		return nil, fmt.Errorf("decoding bpftool's list: %w", err)
	}
	return ps, nil
}

// progIDs returns the ids of the BPF programs process pid holds, from the
// prog_id lines of its file descriptors' fdinfo (programs and links).
func progIDs(pid int) (map[uint32]bool, error) {
	dir := fmt.Sprintf("/proc/%d/fdinfo", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	ids := map[uint32]bool{}
	for _, e := range ents {
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed since
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "prog_id:"); ok {
				if id, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32); err == nil {
					ids[uint32(id)] = true
				}
			}
		}
		f.Close()
	}
	if len(ids) == 0 {
		return nil, errors.New("no BPF programs among its file descriptors")
	}
	return ids, nil
}

// foreignTracers returns how many memdiag instances other than the one
// holding ours are loaded, or -1 when that cannot be told.
func (b *bench) foreignTracers(ours map[uint32]bool) int {
	if b.bpftool == "" {
		return -1
	}
	ps, err := b.progs()
	if err != nil {
		return -1
	}
	n := 0
	for _, p := range ps {
		if p.Name == tracerProgName && !ours[p.ID] {
			n++
		}
	}
	return n
}

// enableBPFStats turns kernel.bpf_stats_enabled on and returns what puts
// the old value back. The setting is global: while on, every BPF program
// on the machine pays two clock reads per run, so it is on only for the
// profiling pass.
func enableBPFStats() (restore func(), err error) {
	const path = "/proc/sys/kernel/bpf_stats_enabled"
	old, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if strings.TrimSpace(string(old)) == "1" {
		return func() {}, nil
	}
	if err := os.WriteFile(path, []byte("1"), 0); err != nil {
		return nil, fmt.Errorf("enabling BPF statistics: %w", err)
	}
	return func() { _ = os.WriteFile(path, old, 0) }, nil
}

// progDelta is one program's runs between two listings.
type progDelta struct {
	Name          string
	Runs, TotalNS uint64
}

// NSPerRun is the mean run time of the program.
func (d progDelta) NSPerRun() float64 {
	if d.Runs == 0 {
		return 0
	}
	return float64(d.TotalNS) / float64(d.Runs)
}

// progDeltas returns the runs of the programs with ids in ours between
// the listings before and after, summed by program name.
func progDeltas(before, after []prog, ours map[uint32]bool) map[string]progDelta {
	was := map[uint32]prog{}
	for _, p := range before {
		was[p.ID] = p
	}
	out := map[string]progDelta{}
	for _, p := range after {
		if !ours[p.ID] {
			continue
		}
		b := was[p.ID]
		d := out[p.Name]
		d.Name = p.Name
		d.Runs += p.RunCnt - b.RunCnt
		d.TotalNS += p.RunTimeNS - b.RunTimeNS
		out[p.Name] = d
	}
	return out
}
