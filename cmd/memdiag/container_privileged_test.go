//go:build privileged

package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sys/unix"

	"github.com/memdiag/memdiag/container"
)

// fakeContainer is a container emulated with namespaces and cgroups: a
// directory named like docker's in the v2 hierarchy (and the v1 memory
// one, when the host has it), and processes in their own pid, mount and
// net namespaces.
type fakeContainer struct {
	id      string
	v2, v1  string
	initPID int // host pid of the container's first process
}

func newFakeContainer(t *testing.T, id string) *fakeContainer {
	t.Helper()
	if id == "" {
		b := make([]byte, 32)
		rand.Read(b)
		id = hex.EncodeToString(b)
	}
	c := &fakeContainer{id: id}
	roots := container.DefaultRoots()
	if roots.V2 == "" {
		t.Skip("no cgroup v2 hierarchy on this host")
	}
	name := "docker-" + c.id + ".scope"
	c.v2 = filepath.Join(roots.V2, "system.slice", name)
	if err := os.MkdirAll(c.v2, 0o755); err != nil {
		t.Fatal(err)
	}
	if roots.V1Memory != "" {
		c.v1 = filepath.Join(roots.V1Memory, "system.slice", name)
		if err := os.MkdirAll(c.v1, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, d := range []string{c.v2, c.v1} {
			if d == "" {
				continue
			}
			if data, err := os.ReadFile(filepath.Join(d, "cgroup.procs")); err == nil {
				for _, f := range strings.Fields(string(data)) {
					var pid int
					fmt.Sscan(f, &pid)
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		deadline := time.Now().Add(10 * time.Second)
		for _, d := range []string{c.v2, c.v1} {
			for d != "" && os.Remove(d) != nil && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond) // the kernel frees a cgroup once its last process is reaped
			}
		}
	})
	return c
}

// enter returns the shell prefix that moves a shell into the container's
// cgroups before it execs.
func (c *fakeContainer) enter() string {
	s := fmt.Sprintf("echo $$ > %s/cgroup.procs", c.v2)
	if c.v1 != "" {
		s += fmt.Sprintf(" && echo $$ > %s/cgroup.procs", c.v1)
	}
	return s
}

// start runs argv as the container's first process, in new pid, mount
// and net namespaces with loopback up, and waits for its "listening" line.
func (c *fakeContainer) start(t *testing.T, env []string, argv ...string) {
	t.Helper()
	inner := "ip link set lo up && exec " + strings.Join(argv, " ")
	cmd := exec.Command("sh", "-c", c.enter()+" && exec unshare --pid --mount --net --fork --mount-proc sh -c '"+inner+"'")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitListening(t, out)
	pids, err := container.Procs(c.v2)
	if err != nil || len(pids) == 0 {
		t.Fatalf("no process in the container: %v", err)
	}
	// The service is the deepest process: unshare's child.
	c.initPID = pids[len(pids)-1]
}

// netnsClient returns an HTTP client whose connections are made inside
// the network namespace of process pid.
func netnsClient(t *testing.T, pid int) *http.Client {
	t.Helper()
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			runtime.LockOSThread() // the thread stays in the namespace: never unlocked, it exits
			fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/net", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				ch <- result{nil, err}
				return
			}
			defer unix.Close(fd)
			if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
				ch <- result{nil, err}
				return
			}
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: dial, MaxIdleConnsPerHost: 4}}
}

// TestContainer: memdiag attach --container with a 12-character prefix
// finds an emulated container, traces its service and names its routes,
// follows a process started in it later, and serves Prometheus metrics
// that agree with its JSON report.
func TestContainer(t *testing.T) {
	requireRoot(t)
	c := newFakeContainer(t, "")
	c.start(t, []string{"PORT=3000", "SYNC_INTERVAL_MS=0"}, "node", filepath.Join(repoRoot, "examples", "leaky-service", "server.js"))
	hc := netnsClient(t, c.initPID)
	base := "http://127.0.0.1:3000"
	get(t, hc, "GET", base+"/api/records", nil)

	metricsPort := freePort(t)
	dumps := filepath.Join(t.TempDir(), "dumps")
	st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.initPID))
	var rssKB int64
	for _, line := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(v, "kB")), &rssKB)
		}
	}
	r := startMemdiag(t, nil, "attach", "--container", c.id[:12], "--interval", "1h",
		"--metrics-addr", fmt.Sprintf("127.0.0.1:%d", metricsPort),
		"--dump-at", fmt.Sprintf("%dKB", rssKB+4<<10), "--dumps-dir", dumps)
	const n = 200
	for i := 0; i < n; i++ {
		get(t, hc, "GET", base+"/api/records", nil)
		get(t, hc, "GET", fmt.Sprintf("%s/api/voice/%d", base, i), nil)
	}
	hc.CloseIdleConnections()

	// The growth crossed the threshold: the dump's heap snapshot was
	// taken through the inspector inside the container's network
	// namespace.
	log := waitLog(t, r.log, "[DUMP] written to", r.done)
	if !strings.Contains(log, "heap snapshot of") || !strings.Contains(log, "closed again") {
		t.Errorf("no heap snapshot across the container's network namespace:\n%s", log)
	}

	// A process started in the container after attach is traced too.
	late := exec.Command("sh", "-c", c.enter()+fmt.Sprintf(" && exec nsenter -t %d -p -n -m node -e \"const b = Buffer.alloc(24 << 20, 1); console.log('listening', process.pid, b.length); setTimeout(() => {}, 60000)\"", c.initPID))
	lateOut, _ := late.StdoutPipe()
	if err := late.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { late.Process.Kill(); late.Wait() })
	waitListening(t, lateOut)

	// Metrics: wait (bounded) until they show the ops, then compare.
	var fams map[string]*dto_MetricFamily
	deadline := time.Now().Add(30 * time.Second)
	for {
		fams = scrape(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort))
		if metricValue(fams, "memdiag_category_ops_total", "category", "GET /api/records") >= n && metricValue(fams, "memdiag_category_ops_total", "category", "GET /api/voice/:id") >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics never showed %d ops per route", n)
		}
		time.Sleep(200 * time.Millisecond) // the exporter updates every 5 s
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.wait(t); code != 0 {
		t.Fatalf("memdiag exit %d: %s", code, r.stderr.String())
	}
	rep := r.readReport(t)
	if rep.Target.Container != c.id {
		t.Errorf("report container = %q, want %s", rep.Target.Container, c.id)
	}
	for _, name := range []string{"GET /api/records", "GET /api/voice/:id"} {
		cat, ok := category(rep, name)
		if !ok {
			t.Fatalf("route %s not named in %+v", name, rep.Categories)
		}
		opsWithin(t, name, cat.Ops, n)
		if got := metricValue(fams, "memdiag_category_ops_total", "category", name); int(got) != cat.Ops {
			t.Errorf("metrics say %v ops for %s, the report %d", got, name, cat.Ops)
		}
	}
	if got := metricValue(fams, "memdiag_lost_events_total", "", ""); got != float64(rep.LostEvents) {
		t.Errorf("metrics lost events %v, report %d", got, rep.LostEvents)
	}
	var lateSeen bool
	for _, p := range rep.Processes {
		// nsenter forks node into the container's pid namespace.
		if (p.PID == uint32(late.Process.Pid) || p.Parent == uint32(late.Process.Pid)) && p.RSSBytes >= 20<<20 {
			lateSeen = true
		}
	}
	if rep.Target.Comm != "node" {
		t.Errorf("report target = %+v, want the container's pid 1 (node)", rep.Target)
	}
	if !lateSeen {
		t.Errorf("the process started in the container later (%d, 24 MiB) is not in the report's processes: %+v", late.Process.Pid, rep.Processes)
	}
}

// TestContainerPrefixErrors: an unknown or ambiguous prefix is a one-line
// error that lists what matched.
func TestContainerPrefixErrors(t *testing.T) {
	requireRoot(t)
	a := newFakeContainer(t, "")
	shared := a.id[:6] + strings.Repeat("e", 58) // shares a's first 6 characters
	if shared == a.id {
		shared = a.id[:6] + strings.Repeat("d", 58)
	}
	newFakeContainer(t, shared)
	code, stderr := runOnce(t, nil, "attach", "--container", a.id[:6])
	if code != 2 || !strings.Contains(stderr, "ambiguous") || !strings.Contains(stderr, a.id[:12]) || !strings.Contains(stderr, shared[:12]) || strings.Count(stderr, "\n") != 1 {
		t.Errorf("ambiguous prefix: exit %d, %q", code, stderr)
	}
	code, stderr = runOnce(t, nil, "attach", "--container", "0123456789ab")
	if code != 2 || !strings.Contains(stderr, "no container") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("unknown prefix: exit %d, %q", code, stderr)
	}
}

type dto_MetricFamily = struct {
	Name   string
	Values map[string]float64 // "label=value" (or "") -> value
}

// scrape fetches and parses a Prometheus text exposition.
func scrape(t *testing.T, url string) map[string]*dto_MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	p := expfmt.NewTextParser(model.UTF8Validation)
	parsed, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("metrics do not parse: %v", err)
	}
	out := map[string]*dto_MetricFamily{}
	for name, mf := range parsed {
		f := &dto_MetricFamily{Name: name, Values: map[string]float64{}}
		for _, m := range mf.GetMetric() {
			var v float64
			switch {
			case m.GetCounter() != nil:
				v = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				v = m.GetGauge().GetValue()
			default:
				continue
			}
			f.Values[""] = v
			for _, l := range m.GetLabel() {
				f.Values[l.GetName()+"="+l.GetValue()] = v
			}
		}
		out[name] = f
	}
	return out
}

// metricValue finds a series' value by one label (or the only series).
func metricValue(fams map[string]*dto_MetricFamily, name, label, value string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
	key := ""
	if label != "" {
		key = label + "=" + value
	}
	v, ok := f.Values[key]
	if !ok {
		return -1
	}
	return v
}

func containerRoots() container.Roots { return container.DefaultRoots() }

// TestInContainerPID: --pid N --in-container ID finds the host pid of the
// process that is N inside the container's pid namespace.
func TestInContainerPID(t *testing.T) {
	requireRoot(t)
	c := newFakeContainer(t, "")
	c.start(t, []string{"PORT=3001", "SYNC_INTERVAL_MS=0"}, "node", filepath.Join(repoRoot, "examples", "leaky-service", "server.js"))
	r := startMemdiag(t, nil, "attach", "--pid", "1", "--in-container", c.id[:12], "--interval", "1h", "--no-dumps")
	r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.wait(t); code != 0 {
		t.Fatalf("exit %d: %s", code, r.stderr.String())
	}
	rep := r.readReport(t)
	if rep.Target.PID != uint32(c.initPID) || rep.Target.Comm != "node" {
		t.Errorf("target = %+v, want host pid %d (node, pid 1 in the container)", rep.Target, c.initPID)
	}
	code, stderr := runOnce(t, nil, "attach", "--pid", "4242", "--in-container", c.id[:12])
	if code != 2 || !strings.Contains(stderr, "no process 4242 in container") {
		t.Errorf("unknown pid in the container: exit %d, %q", code, stderr)
	}
}
