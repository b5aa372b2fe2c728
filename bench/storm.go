package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/memdiag/memdiag/bench/benchkit"
)

// Record storms (issue #15): does the ring buffer lose records at 100k
// records/s? reqstorm's server is traced; its client, untraced, sends
// keep-alive requests paced at a rate, and every request makes two records
// (its op's begin, and its end at the next request). memdiag's report says
// how many records it read (ring_records) and how many the kernel could not
// reserve (lost_events).

// stormConns is how many keep-alive connections (and server threads) a
// storm uses.
const stormConns = 4

// stormResult is one record storm.
type stormResult struct {
	rate     int           // requests/s asked of the client
	requests uint64        // requests the client sent (and had answered)
	elapsed  time.Duration // the client's wall time
	ops      uint64        // ops of the report's "GET /storm" category
	records  uint64        // ring_records of the report
	lost     uint64        // lost_events of the report
	overflow uint64        // health.bucket_overflow: ops that got no bucket
	usage    usage         // memdiag's, during the storm
	load     string        // 1-minute load average before the storm
}

// recordsPerSec is the rate the ring carried during the client's work.
func (r stormResult) recordsPerSec() float64 { return float64(r.records) / r.elapsed.Seconds() }

// compileReqstorm builds reqstorm into dir and returns its path.
func compileReqstorm(dir string) (string, error) {
	bin := filepath.Join(dir, "reqstorm")
	cmd := exec.Command("gcc", "-O2", "-Wall", "-Werror", "-pthread", "-o", bin, "-x", "c", "-")
	cmd.Stdin = bytes.NewReader(reqstormSource)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("compiling bench/workloads/reqstorm.c: %w\n%s", err, out)
	}
	return bin, nil
}

// stormServer is a started `reqstorm serve`; closing its stdin ends it.
type stormServer struct {
	*piped
	pid  int
	port int
}

// startStormServer starts reqstorm's server pinned to cpu and reads its
// pid and port.
func startStormServer(bin string, cpu int) (*stormServer, error) {
	p, err := startPiped(exec.Command(bin, "serve", "-t", strconv.Itoa(stormConns)), cpu, "reqstorm serve")
	if err != nil {
		return nil, err
	}
	s := &stormServer{piped: p}
	line, err := s.line()
	if err != nil {
		s.kill()
		return nil, fmt.Errorf("reqstorm serve did not get ready (%v): %s", err, strings.TrimSpace(s.stderr.String()))
	}
	if _, err := fmt.Sscanf(line, "ready %d port=%d", &s.pid, &s.port); err != nil {
		s.kill()
		return nil, fmt.Errorf("reqstorm serve said %q: %w", line, err)
	}
	return s, nil
}

// clientResult is reqstorm client's account of its work.
type clientResult struct {
	requests uint64
	elapsed  time.Duration
}

// parseClientResult reads reqstorm client's "result k=v ..." line.
func parseClientResult(line string) (clientResult, error) {
	fields := strings.Fields(line)
	if len(fields) < 2 || fields[0] != "result" || fields[1] != "mode=client" {
		return clientResult{}, fmt.Errorf("want a client result line from reqstorm, got %q", line)
	}
	vals := map[string]uint64{}
	for _, f := range fields[2:] {
		k, v, _ := strings.Cut(f, "=")
		if n, err := strconv.ParseUint(v, 10, 64); err == nil {
			vals[k] = n
		}
	}
	r := clientResult{requests: vals["requests"], elapsed: time.Duration(vals["elapsed_ns"])}
	if r.requests == 0 || r.elapsed <= 0 {
		return clientResult{}, fmt.Errorf("reqstorm's result %q has no requests or elapsed time", line)
	}
	return r, nil
}

// runClient sends requests requests at rate per second to port from a
// client pinned to cpu.
func runClient(bin string, port, requests, rate, cpu int) (clientResult, error) {
	cmd := exec.Command(bin, "client", "-p", strconv.Itoa(port), "-c", strconv.Itoa(stormConns),
		"-n", strconv.Itoa(requests), "-r", strconv.Itoa(rate))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := benchkit.StartPinned(cmd, cpu); err != nil {
		return clientResult{}, fmt.Errorf("starting reqstorm client: %w", err)
	}
	if err := cmd.Wait(); err != nil {
		return clientResult{}, fmt.Errorf("reqstorm client: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return parseClientResult(strings.TrimSpace(stdout.String()))
}

// storm runs one record storm: the server traced by memdiag (on
// memdiagCPU), the server and its client on workloadCPU, the client paced
// at rate requests/s for seconds.
func (b *bench) storm(rate int, seconds float64, round int) (stormResult, error) {
	srv, err := startStormServer(b.reqstorm, workloadCPU)
	if err != nil {
		return stormResult{}, err
	}
	defer srv.kill()
	tag := fmt.Sprintf("record-storm-%d-%d", rate, round)
	var extra []string
	if b.stormRing != 0 {
		extra = []string{"--ringbuf-size", strconv.Itoa(b.stormRing)}
	}
	tr, _, err := attach(b.memdiag, b.dir, tag, srv.pid, memdiagCPU, readyTimeout, extra...)
	if err != nil {
		return stormResult{}, err
	}
	before, err := tr.usage()
	if err != nil {
		tr.kill()
		return stormResult{}, err
	}
	load := benchkit.Loadavg(1)
	c, err := runClient(b.reqstorm, srv.port, int(float64(rate)*seconds), rate, workloadCPU)
	if err != nil {
		tr.kill()
		return stormResult{}, err
	}
	after, err := tr.usage()
	if err != nil {
		tr.kill()
		return stormResult{}, err
	}
	rep, err := tr.stop(stopTimeout)
	if err != nil {
		return stormResult{}, err
	}
	for _, ext := range []string{".ready", ".json", ".log"} {
		os.Remove(filepath.Join(b.dir, tag+ext))
	}
	r := stormResult{
		rate: rate, requests: c.requests, elapsed: c.elapsed, records: rep.Records,
		lost: rep.LostEvents, overflow: rep.Health["bucket_overflow"], load: load,
		usage: usage{PeakRSS: after.PeakRSS, CPU: after.CPU - before.CPU},
	}
	for _, cat := range rep.Categories {
		if cat.Name == "GET /storm" {
			r.ops += cat.Ops
		}
	}
	return r, nil
}

// storms runs every rate runs times, the rates interleaved.
func (b *bench) storms(rates []int, seconds float64, runs int) error {
	for i := range runs {
		for _, rate := range rates {
			if err := b.interrupted(); err != nil {
				return err
			}
			r, err := b.storm(rate, seconds, i)
			if err != nil {
				return fmt.Errorf("record storm at %d requests/s: %w", rate, err)
			}
			fmt.Fprintf(os.Stderr, "bench: record-storm %d requests/s run %d: %d requests in %.2fs, %s, %d lost, %d ops of %d, bucket_overflow %d, memdiag %.2fs CPU, %s peak, load %s\n",
				rate, i+1, r.requests, r.elapsed.Seconds(), rate2(r.recordsPerSec(), "records"), r.lost, r.ops, r.requests,
				r.overflow, r.usage.CPU.Seconds(), mib(r.usage.PeakRSS), r.load)
			b.stormRows = append(b.stormRows, r)
		}
	}
	return nil
}

// parseRates reads a comma-separated list of positive rates.
func parseRates(s string) ([]int, error) {
	var rates []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("rate %q: want a positive number of requests per second", f)
		}
		rates = append(rates, n)
	}
	return rates, nil
}

// rate2 is rate for counts that may be below a thousand a second.
func rate2(perSec float64, what string) string {
	if perSec < 1e3 {
		return fmt.Sprintf("%.0f %s/s", perSec, what)
	}
	return rate(perSec, what)
}

// printStormTable writes the record storms as a caption and a markdown
// table, one row per storm.
func printStormTable(w io.Writer, rows []stormResult, seconds float64, version string, ring int) {
	ringSize := "memdiag's default ring buffer"
	if ring != 0 {
		ringSize = fmt.Sprintf("--ringbuf-size %d", ring)
	}
	fmt.Fprintf(w, "\nRecord storms (%s, %s): `reqstorm serve` traced, its client paced for %.0f s over %d keep-alive connections; server and client on CPU %d, memdiag on CPU %d; %s.\n\n",
		version, ringSize, seconds, stormConns, workloadCPU, memdiagCPU, machine())
	fmt.Fprintln(w, "| requests/s asked | requests | records read (rate) | lost events | ops seen | bucket_overflow | memdiag CPU | memdiag peak RSS | load average |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
	for _, r := range rows {
		fmt.Fprintf(w, "| %dk | %d | %d (%s) | %d | %d | %d | %.2f s (%.0f%%) | %s | %s |\n",
			r.rate/1000, r.requests, r.records, rate2(r.recordsPerSec(), "records"), r.lost, r.ops, r.overflow,
			r.usage.CPU.Seconds(), 100*r.usage.CPU.Seconds()/r.elapsed.Seconds(), mib(r.usage.PeakRSS), r.load)
	}
}
