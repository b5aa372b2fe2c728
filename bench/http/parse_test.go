package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseWrk(t *testing.T) {
	out := "Running 10s test @ http://127.0.0.1:1\n  1 threads and 16 connections\n" +
		"BENCH requests=25000 duration_us=10050000 connect=0 read=1 write=0 status=2 timeout=0 p50_us=5880 p99_us=36750\n"
	l, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	want := load{Requests: 25000, Duration: 10050 * time.Millisecond, Errors: 3, P50: 5880 * time.Microsecond, P99: 36750 * time.Microsecond}
	if l != want {
		t.Fatalf("got %+v, want %+v", l, want)
	}
	for _, bad := range []string{"", "BENCH requests=0 duration_us=1 p50_us=1 p99_us=1", "BENCH requests=x", "BENCH requests=1 duration_us=1"} {
		if _, err := parseWrk(bad); err == nil {
			t.Errorf("parseWrk(%q): no error", bad)
		}
	}
}

func TestCPUTicks(t *testing.T) {
	stat := "123 (node (x) y) S 1 123 123 0 -1 4194560 100 0 0 0 1527 417 0 0 20 0 11 0 1 2 3"
	u, s, err := cpuTicks(stat)
	if err != nil || u != 1527 || s != 417 {
		t.Fatalf("got %d %d, %v", u, s, err)
	}
	if _, _, err := cpuTicks("123 (node) S 1"); err == nil {
		t.Fatal("short line: no error")
	}
}

func TestParseStatus(t *testing.T) {
	status := "Name:\tmemdiag\nVmHWM:\t   23988 kB\nVmRSS:\t   19428 kB\nRssAnon:\t    4752 kB\nRssFile:\t   14676 kB\nRssShmem:\t0 kB\n"
	m, err := parseStatus(status)
	if err != nil {
		t.Fatal(err)
	}
	if m != (memory{HWM: 23988 << 10, RSS: 19428 << 10, Anon: 4752 << 10, File: 14676 << 10}) {
		t.Fatalf("got %+v", m)
	}
	if _, err := parseStatus("VmHWM:\t1 kB\n"); err == nil {
		t.Fatal("missing lines: no error")
	}
}

func TestMemleakFailure(t *testing.T) {
	out := `modprobe: FATAL: Module kheaders not found in directory /lib/modules/6.18
Unable to find kernel headers.
Traceback (most recent call last):
  File "/usr/sbin/memleak-bpfcc", line 445, in <module>
    bpf = BPF(text=bpf_source)
Exception: Failed to compile BPF module <text>`
	got := memleakFailure(nil, out)
	want := "memleak-bpfcc exited: modprobe: FATAL: Module kheaders not found in directory /lib/modules/6.18 / Unable to find kernel headers. / Exception: Failed to compile BPF module <text>"
	if got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}

func TestProgDeltas(t *testing.T) {
	before := []prog{{ID: 1, Name: "on_rss_stat", RunCnt: 10, RunTimeNS: 1000}, {ID: 2, Name: "on_ab_free", RunCnt: 5, RunTimeNS: 500}}
	after := []prog{{ID: 1, Name: "on_rss_stat", RunCnt: 30, RunTimeNS: 5000}, {ID: 2, Name: "on_ab_free", RunCnt: 6, RunTimeNS: 600},
		{ID: 3, Name: "on_rss_stat", RunCnt: 99, RunTimeNS: 99}, {ID: 4, Name: "on_ab_free", RunCnt: 4, RunTimeNS: 4000}}
	d := progDeltas(before, after, map[uint32]bool{1: true, 2: true, 4: true})
	if got := d["on_rss_stat"]; got.Runs != 20 || got.TotalNS != 4000 || got.NSPerRun() != 200 {
		t.Errorf("on_rss_stat: %+v (another tracer's program must not count)", got)
	}
	if got := d["on_ab_free"]; got.Runs != 5 || got.TotalNS != 4100 {
		t.Errorf("on_ab_free: %+v (a program loaded in between counts from 0)", got)
	}
}

func TestRatioRange(t *testing.T) {
	rps := func(round int, n uint64) runResult {
		return runResult{Round: round, Load: load{Requests: n, Duration: time.Second}}
	}
	base := []runResult{rps(0, 100), rps(1, 200), rps(2, 100)}
	arm := []runResult{rps(0, 90), rps(1, 220), rps(3, 1)}
	lo, hi, ok := ratioRange(arm, base, func(r runResult) float64 { return r.Load.RPS() })
	if !ok || lo != 0.9 || hi != 1.1 {
		t.Fatalf("got %v %v %v", lo, hi, ok)
	}
}

func TestMixLua(t *testing.T) {
	for _, path := range []string{"/api/records", "/api/voice/", "/media/x", "latency:percentile(99)"} {
		if !strings.Contains(mixLua, path) {
			t.Errorf("the wrk script lost %q", path)
		}
	}
}
