package metrics

import (
	"bytes"
	"io"
	"math"
	"os"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// This file writes the Prometheus text exposition format (version 0.0.4)
// by hand: memdiag's series are a dozen gauges and counters, and
// client_golang with its protobuf, procfs and expfmt dependencies made
// every memdiag process, serving metrics or not, pay about 1 MiB of
// resident memory for their initializers and code.

// Metric types, as the text format's TYPE line names them.
const (
	gaugeType   = "gauge"
	counterType = "counter"
)

// desc describes a metric family: name, HELP text, TYPE and the names of
// its variable labels.
type desc struct {
	name, help, typ string
	labels          []string
}

func newDesc(name, help, typ string, labels ...string) *desc {
	return &desc{name: name, help: help, typ: typ, labels: labels}
}

// labelPair is one label of a series.
type labelPair struct{ name, value string }

// exposition gathers series by family, then writes them.
type exposition struct {
	fams map[string]*family
}

// family is one metric family's series, each with its label set already
// written as `{a="x",b="y"}` (or "").
type family struct {
	d      *desc
	series []seriesValue
}

type seriesValue struct {
	labels string
	v      float64
}

func newExposition() *exposition { return &exposition{fams: map[string]*family{}} }

// add records one series of d: its constant labels, then d's variable
// labels with values, in d.labels' order.
func (x *exposition) add(d *desc, constant []labelPair, v float64, values ...string) {
	f := x.fams[d.name]
	if f == nil {
		f = &family{d: d}
		x.fams[d.name] = f
	}
	pairs := make([]labelPair, 0, len(constant)+len(values))
	pairs = append(pairs, constant...)
	for i, name := range d.labels {
		pairs = append(pairs, labelPair{name, values[i]})
	}
	f.series = append(f.series, seriesValue{labelString(pairs), v})
}

// labelString writes pairs sorted by name, as `{a="x",b="y"}`.
func labelString(pairs []labelPair) string {
	if len(pairs) == 0 {
		return ""
	}
	slices.SortFunc(pairs, func(a, b labelPair) int { return strings.Compare(a.name, b.name) })
	var b strings.Builder
	b.WriteByte('{')
	for i, p := range pairs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(p.name)
		b.WriteString(`="`)
		labelValueEscaper.WriteString(&b, p.value)
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

// The text format's escapes: a label value escapes backslash, double quote
// and newline; HELP text backslash and newline.
var (
	labelValueEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	helpEscaper       = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
)

// write writes every family, sorted by name, its series sorted by labels.
func (x *exposition) write(b *bytes.Buffer) {
	names := make([]string, 0, len(x.fams))
	for name := range x.fams {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		f := x.fams[name]
		slices.SortStableFunc(f.series, func(a, b seriesValue) int { return strings.Compare(a.labels, b.labels) })
		b.WriteString("# HELP " + name + " ")
		helpEscaper.WriteString(b, f.d.help)
		b.WriteString("\n# TYPE " + name + " " + f.d.typ + "\n")
		for _, s := range f.series {
			b.WriteString(name)
			b.WriteString(s.labels)
			b.WriteByte(' ')
			b.WriteString(formatValue(s.v))
			b.WriteByte('\n')
		}
	}
}

// formatValue writes v as the text format wants it.
func formatValue(v float64) string {
	switch {
	case math.IsNaN(v):
		return "NaN"
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// contentType is the text format's media type.
const contentType = "text/plain; version=0.0.4; charset=utf-8"

// writeExposition writes what gather adds, fresh at each call.
func writeExposition(w io.Writer, gather func(x *exposition)) (int64, error) {
	x := newExposition()
	gather(x)
	var b bytes.Buffer
	x.write(&b)
	return b.WriteTo(w)
}

// memdiag's own series: those of client_golang's Go and process collectors
// that say how memdiag itself is doing, with the same names, help and types.
var (
	descGoroutines = newDesc("go_goroutines", "Number of goroutines that currently exist.", gaugeType)
	descThreads    = newDesc("go_threads", "Number of OS threads created.", gaugeType)
	descGoInfo     = newDesc("go_info", "Information about the Go environment.", gaugeType, "version")
	descHeapAlloc  = newDesc("go_memstats_heap_alloc_bytes", "Number of heap bytes allocated and currently in use, same as go_memstats_alloc_bytes. Equals to /memory/classes/heap/objects:bytes.", gaugeType)
	descGoSys      = newDesc("go_memstats_sys_bytes", "Number of bytes obtained from system. Equals to /memory/classes/total:byte.", gaugeType)
	descCPU        = newDesc("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", counterType)
	descResident   = newDesc("process_resident_memory_bytes", "Resident memory size in bytes.", gaugeType)
	descVirtual    = newDesc("process_virtual_memory_bytes", "Virtual memory size in bytes.", gaugeType)
	descStartTime  = newDesc("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", gaugeType)
	descOpenFDs    = newDesc("process_open_fds", "Number of open file descriptors.", gaugeType)
	descMaxFDs     = newDesc("process_max_fds", "Maximum number of open file descriptors.", gaugeType)
)

// userHZ is the unit of /proc/PID/stat's times: USER_HZ, 100 on every
// Linux architecture memdiag runs on.
const userHZ = 100

// addSelf adds memdiag's own series, with the constant labels given.
func addSelf(x *exposition, constant []labelPair) {
	x.add(descGoroutines, constant, float64(runtime.NumGoroutine()))
	threads, _ := runtime.ThreadCreateProfile(nil)
	x.add(descThreads, constant, float64(threads))
	x.add(descGoInfo, constant, 1, runtime.Version())
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/total:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() == metrics.KindUint64 {
		x.add(descHeapAlloc, constant, float64(s[0].Value.Uint64()))
	}
	if s[1].Value.Kind() == metrics.KindUint64 {
		x.add(descGoSys, constant, float64(s[1].Value.Uint64()))
	}
	if st, err := readSelfStat(); err == nil {
		x.add(descCPU, constant, st.cpuSeconds)
		x.add(descResident, constant, st.rssBytes)
		x.add(descVirtual, constant, st.vsizeBytes)
		if st.startTime > 0 {
			x.add(descStartTime, constant, st.startTime)
		}
	}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		x.add(descOpenFDs, constant, float64(len(fds)))
	}
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil {
		x.add(descMaxFDs, constant, float64(lim.Cur))
	}
}

// selfStat is what /proc/self/stat says of memdiag.
type selfStat struct {
	cpuSeconds, rssBytes, vsizeBytes float64
	startTime                        float64 // Unix seconds; 0 when the boot time is unknown
}

func readSelfStat() (selfStat, error) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return selfStat{}, err
	}
	return parseStat(string(b), bootTime(), os.Getpagesize())
}

// parseStat reads utime, stime, starttime, vsize and rss from a
// /proc/PID/stat line; the fields after comm start after its last ')'.
func parseStat(line string, boot float64, pageSize int) (selfStat, error) {
	i := strings.LastIndexByte(line, ')')
	if i < 0 {
		return selfStat{}, syscall.EINVAL
	}
	f := strings.Fields(line[i+1:]) // f[0] is field 3, state
	if len(f) < 22 {
		return selfStat{}, syscall.EINVAL
	}
	num := func(field int) float64 {
		v, _ := strconv.ParseUint(f[field-3], 10, 64)
		return float64(v)
	}
	s := selfStat{
		cpuSeconds: (num(14) + num(15)) / userHZ,
		vsizeBytes: num(23),
		rssBytes:   num(24) * float64(pageSize),
	}
	if boot > 0 {
		s.startTime = boot + num(22)/userHZ
	}
	return s, nil
}

// bootTime is the btime line of /proc/stat (Unix seconds), 0 if unknown.
func bootTime() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			if t, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
				return float64(t)
			}
		}
	}
	return 0
}
