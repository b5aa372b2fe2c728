package main

import (
	"testing"
	"time"
)

func TestParseResult(t *testing.T) {
	r, err := parseResult("result mode=fault iterations=2 bytes=4194304 elapsed_ns=1500000000 faults=2048 faults_per_sec=1365 syscalls=4 syscalls_per_sec=3 cpu_ns=1400000000")
	if err != nil {
		t.Fatal(err)
	}
	want := result{Elapsed: 1500 * time.Millisecond, CPU: 1400 * time.Millisecond, Faults: 2048, Syscalls: 4}
	if r != want {
		t.Errorf("got %+v, want %+v", r, want)
	}
	for _, bad := range []string{
		"",
		"ready 42",
		"result mode=fault elapsed_ns=1 faults=2 syscalls=3",           // no cpu_ns
		"result elapsed_ns=0 cpu_ns=0 faults=0 syscalls=0",             // no elapsed time
		"result elapsed_ns=x cpu_ns=1 faults=1 syscalls=1 elapsed_ns=", // unparsable
	} {
		if _, err := parseResult(bad); err == nil {
			t.Errorf("parseResult(%q) succeeded", bad)
		}
	}
}

func TestCPUTicks(t *testing.T) {
	// The command name may hold spaces and parentheses.
	stat := "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 9 0 123 456 789"
	n, err := cpuTicks(stat)
	if err != nil {
		t.Fatal(err)
	}
	if n != 22 {
		t.Errorf("got %d ticks, want 17+5", n)
	}
	if _, err := cpuTicks("4242 (short) S 1"); err == nil {
		t.Error("short stat line accepted")
	}
}

func TestVmHWM(t *testing.T) {
	n, err := vmHWM("Name:\tmemdiag\nVmPeak:\t 1000 kB\nVmHWM:\t   14012 kB\nVmRSS:\t 13000 kB\n")
	if err != nil {
		t.Fatal(err)
	}
	if n != 14012<<10 {
		t.Errorf("got %d, want %d", n, 14012<<10)
	}
	if _, err := vmHWM("Name:\tkthreadd\n"); err == nil {
		t.Error("status without VmHWM accepted")
	}
}

func TestParseClientResult(t *testing.T) {
	r, err := parseClientResult("result mode=client requests=150000 conns=4 depth=1 rate=50000 elapsed_ns=3000414003 requests_per_sec=49993 cpu_ns=636519000")
	if err != nil {
		t.Fatal(err)
	}
	if want := (clientResult{requests: 150000, elapsed: 3000414003}); r != want {
		t.Errorf("got %+v, want %+v", r, want)
	}
	for _, bad := range []string{
		"",
		"ready 42 port=80",
		"result mode=fault iterations=2 elapsed_ns=1",    // faultstorm's
		"result mode=client requests=0 elapsed_ns=1",     // no requests
		"result mode=client requests=10 elapsed_ns=zero", // no elapsed time
	} {
		if _, err := parseClientResult(bad); err == nil {
			t.Errorf("parseClientResult(%q) succeeded", bad)
		}
	}
}

func TestParseRates(t *testing.T) {
	got, err := parseRates("25000, 50000,,75000")
	if err != nil || len(got) != 3 || got[0] != 25000 || got[2] != 75000 {
		t.Errorf("parseRates = %v, %v", got, err)
	}
	for _, bad := range []string{"0", "-5", "fast", "1000,x"} {
		if _, err := parseRates(bad); err == nil {
			t.Errorf("parseRates(%q) succeeded", bad)
		}
	}
}
