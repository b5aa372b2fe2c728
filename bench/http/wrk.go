package main

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// mixLua is the wrk script: each connection's requests cycle through
// GET /api/records (200 records as JSON), GET /api/voice/N (keeps 2 KiB per
// request: the service's known leak) and GET /media/x (a shared 64 KiB
// Buffer), a third each. done() prints one machine-readable line with the
// numbers the benchmark keeps.
const mixLua = `local n = 0
request = function()
  n = n + 1
  local k = n % 3
  if k == 0 then
    return wrk.format("GET", "/api/records")
  elseif k == 1 then
    return wrk.format("GET", "/api/voice/" .. n)
  end
  return wrk.format("GET", "/media/x")
end
` + doneLua

// doneLua is the end of every wrk script: done() prints one
// machine-readable line with the numbers the benchmark keeps.
const doneLua = `
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH requests=%.0f duration_us=%.0f connect=%.0f read=%.0f write=%.0f status=%.0f timeout=%.0f p50_us=%.0f p99_us=%.0f\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
`

// pipelinedLua writes the same mix five requests at a time on each
// connection, as an HTTP/1.1 pipelining client does (wrk counts every
// response), with mixLua's done().
var pipelinedLua = `local req
init = function(args)
  local r = {}
  for i = 0, 4 do
    local k = i % 3
    if k == 0 then
      r[#r + 1] = wrk.format("GET", "/api/records")
    elseif k == 1 then
      r[#r + 1] = wrk.format("GET", "/api/voice/" .. i)
    else
      r[#r + 1] = wrk.format("GET", "/media/x")
    end
  end
  req = table.concat(r)
end

request = function()
  return req
end
` + mixLua[strings.Index(mixLua, "done = function"):]

// load is what one wrk run measured.
type load struct {
	Requests uint64
	Duration time.Duration
	Errors   uint64 // connect, read, write, timeout errors and non-2xx/3xx answers
	P50, P99 time.Duration
}

// RPS is the throughput: requests per second.
func (l load) RPS() float64 { return float64(l.Requests) / l.Duration.Seconds() }

// runWrk runs wrk with the script lua on url for d with conns
// connections, pinned to cpu.
func (b *bench) runWrk(url, lua string, d time.Duration, cpu int) (load, error) {
	cmd := exec.Command(b.wrk, "-t1", "-c"+strconv.Itoa(b.conns), "-d"+strconv.Itoa(int(d/time.Second))+"s",
		"--latency", "--timeout", "5s", "-s", lua, url)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	p, err := b.kids.spawn(cmd, cpu, "wrk")
	if err != nil {
		return load{}, err
	}
	<-p.exited
	if p.waitErr != nil {
		return load{}, fmt.Errorf("wrk: %v: %s", p.waitErr, strings.TrimSpace(out.String()))
	}
	return parseWrk(out.String())
}

// parseWrk finds the line mixLua's done() printed in wrk's output.
func parseWrk(out string) (load, error) {
	for _, line := range strings.Split(out, "\n") {
		rest, ok := strings.CutPrefix(line, "BENCH ")
		if !ok {
			continue
		}
		v := map[string]uint64{}
		for _, kv := range strings.Fields(rest) {
			k, val, ok := strings.Cut(kv, "=")
			if !ok {
				return load{}, fmt.Errorf("wrk: malformed field %q", kv)
			}
			n, err := strconv.ParseUint(val, 10, 64)
			if err != nil {
				return load{}, fmt.Errorf("wrk: field %q: %w", kv, err)
			}
			v[k] = n
		}
		for _, k := range []string{"requests", "duration_us", "p50_us", "p99_us"} {
			if _, ok := v[k]; !ok {
				return load{}, fmt.Errorf("wrk: no %s in %q", k, line)
			}
		}
		if v["requests"] == 0 || v["duration_us"] == 0 {
			return load{}, fmt.Errorf("wrk made no requests: %q", line)
		}
		return load{
			Requests: v["requests"],
			Duration: time.Duration(v["duration_us"]) * time.Microsecond,
			Errors:   v["connect"] + v["read"] + v["write"] + v["status"] + v["timeout"],
			P50:      time.Duration(v["p50_us"]) * time.Microsecond,
			P99:      time.Duration(v["p99_us"]) * time.Microsecond,
		}, nil
	}
	return load{}, errors.New("wrk printed no result line: " + strings.TrimSpace(out))
}
