//go:build privileged

package accuracy

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/memdiag/memdiag/internal/proctest"
)

const repoRoot = ".."

// Built once by TestMain.
var binDir, memdiagBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "memdiag-accuracy-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	memdiagBin = filepath.Join(dir, "memdiag")
	// Built as make build does.
	if out, err := exec.Command("env", "CGO_ENABLED=0", "go", "build", "-tags", "urfave_cli_no_docs", "-o", memdiagBin, "../cmd/memdiag").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building memdiag: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// TestAccuracy runs memdiag on the corpus and compares its verdict with
// each service's own truth. MEMDIAG_ACCURACY picks the services (see
// Select); MEMDIAG_ACCURACY_VERDICT=log reports verdict failures without
// failing the test (op counts and the truth are always enforced).
func TestAccuracy(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to load memdiag's BPF program: run `sudo make accuracy` or `sudo make test`")
	}
	services, err := Select(Services(), os.Getenv("MEMDIAG_ACCURACY"))
	if err != nil {
		t.Fatal(err)
	}
	outDir := filepath.Join(repoRoot, "out", "accuracy")
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, s := range services {
		t.Run(s.Name, func(t *testing.T) {
			tab, exp := runService(t, s)
			md := tab.Markdown()
			t.Logf("\n%s", md)
			if err := os.WriteFile(filepath.Join(outDir, s.Name+".md"), []byte(md), 0o644); err != nil {
				t.Error(err)
			}
			for _, p := range tab.CheckTruth(exp, selfCheckTol, selfCheckFloor) {
				t.Error(p)
			}
			for _, p := range tab.CheckOps(exp) {
				t.Error(p)
			}
			for _, p := range tab.CheckVerdict() {
				if os.Getenv("MEMDIAG_ACCURACY_VERDICT") == "log" {
					t.Log("not enforced (MEMDIAG_ACCURACY_VERDICT=log): " + p)
				} else {
					t.Error(p)
				}
			}
		})
	}
}

// The self-check (a runtime or allocator counter after a full GC) must
// agree with the truth's retained bytes within 20%, or within 20% of 4 MiB
// for services that retain less than that (the runtimes' own bookkeeping
// moves by a few hundred KiB between two measurements).
const (
	selfCheckTol   = 0.20
	selfCheckFloor = 4 << 20
)

// runService runs one service through warm-up, attach, truth0, load,
// truth1 and memdiag's stop, and compares.
func runService(t *testing.T, s *Service) (*Table, Expect) {
	dir := filepath.Join(repoRoot, s.Dir)
	for _, d := range s.NPM {
		if _, err := os.Stat(filepath.Join(repoRoot, d, "node_modules")); err != nil {
			t.Fatalf("%s has no node_modules: run `npm ci` there (.ci/run does)", d)
		}
	}
	tmp := t.TempDir()
	command := s.Command
	if s.GoBuild {
		bin := filepath.Join(binDir, s.Name)
		build := exec.Command("go", "build", "-tags", s.GoTags, "-o", bin, "./"+s.Dir)
		build.Dir = repoRoot
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("building %s: %v\n%s", s.Dir, err, out)
		}
		command = []string{bin}
	}
	config := filepath.Join(dir, "categories.yaml")
	if s.Config != "" {
		config = filepath.Join(repoRoot, s.Config)
	}
	serviceEnv := s.Env
	if s.HelperPort != 0 {
		// The helpers' port, as the categories file and the environment
		// name it, moved to a free one.
		fixed, free := strconv.Itoa(s.HelperPort), strconv.Itoa(freePort(t))
		move := func(env []string) []string {
			out := make([]string, len(env))
			for i, kv := range env {
				out[i] = strings.ReplaceAll(kv, fixed, free)
			}
			return out
		}
		serviceEnv = move(s.Env)
		data, err := os.ReadFile(config)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), "port: "+fixed) {
			t.Fatalf("%s does not name the helpers' port %s", config, fixed)
		}
		config = filepath.Join(tmp, "categories.yaml")
		if err := os.WriteFile(config, []byte(strings.ReplaceAll(string(data), "port: "+fixed, "port: "+free)), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, h := range s.Helpers {
			startProcess(t, dir, h.Command, move(h.Env), filepath.Join(tmp, "helper.out"))
		}
	} else {
		for _, h := range s.Helpers {
			startProcess(t, dir, h.Command, h.Env, filepath.Join(tmp, "helper.out"))
		}
	}
	port := freePort(t)
	truthFile := filepath.Join(tmp, "truth.json")
	// A Node service's inspector (opened by SIGUSR1 for V8 heap sampling)
	// on a port the kernel picks: other tests of the suite open Node
	// inspectors at the same time, and Node's default port would be taken.
	env := append([]string{fmt.Sprintf("PORT=%d", port), "TRUTH_FILE=" + truthFile, "NODE_OPTIONS=--inspect-port=0"}, serviceEnv...)
	svc := startProcess(t, dir, command, env, filepath.Join(tmp, "service.out"))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := Load(ctx, base, s.Warmup, s.Conns); err != nil {
		t.Fatalf("warm-up: %v", err)
	}

	md := startMemdiag(t, tmp, svc.Process.Pid, config, s.MemdiagArgs...)

	truth0 := takeTruth(t, svc, truthFile, md.done)
	sent, err := Load(ctx, base, s.Load, s.Conns)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	truth1 := takeTruth(t, svc, truthFile, md.done)

	md.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-md.done:
	case <-time.After(90 * time.Second):
		t.Fatalf("memdiag did not exit within 90s of SIGTERM; stderr: %s", md.stderr.String())
	}
	if md.waitErr != nil {
		t.Fatalf("memdiag: %v; stderr: %s", md.waitErr, md.stderr.String())
	}
	rep, err := ReadReport(md.report)
	if err != nil {
		log, _ := os.ReadFile(md.log)
		t.Fatalf("%v\nstderr: %s\nlog: %s", err, md.stderr.String(), log)
	}
	// Keep memdiag's report and log beside the table, for whoever reads it.
	outDir := filepath.Join(repoRoot, "out", "accuracy")
	for src, dst := range map[string]string{md.report: s.Name + ".report.json", md.log: s.Name + ".log"} {
		if data, err := os.ReadFile(src); err == nil {
			os.WriteFile(filepath.Join(outDir, dst), data, 0o644)
		}
	}
	truth := truth1.Sub(truth0)
	exp := s.Expect(sent)
	tab := Compare(s.Name, truth, rep, exp)
	var load []string
	for _, j := range s.Load {
		load = append(load, fmt.Sprintf("%d × %s", j.Count, j.Route.Category))
	}
	tab.Notes = append(tab.Notes, fmt.Sprintf("load: %s over %d keep-alive connections, after a warm-up of %s.",
		strings.Join(load, ", "), s.Conns, describe(s.Warmup)))
	return tab, exp
}

func describe(js []Job) string {
	var parts []string
	for _, j := range js {
		parts = append(parts, fmt.Sprintf("%d × %s", j.Count, j.Route.Category))
	}
	return strings.Join(parts, ", ")
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startProcess starts command in dir, in a process group of its own, and
// waits for its "listening" line; the group is killed at cleanup. Its
// output goes to outFile after that line.
func startProcess(t *testing.T, dir string, command, env []string, outFile string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(command[0], command[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := os.Create(outFile + fmt.Sprint(time.Now().UnixNano()))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = out
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %v: %v", command, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		out.Close()
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "listening") {
				lines <- sc.Text()
				break
			}
		}
		// Keep draining so the process never blocks on a full pipe.
		for sc.Scan() {
		}
	}()
	select {
	case <-lines:
	case <-exited:
		stderr, _ := os.ReadFile(out.Name())
		t.Fatalf("%v in %s exited before listening: %s", command, dir, stderr)
	case <-time.After(30 * time.Second):
		t.Fatalf("%v in %s did not print a listening line within 30s", command, dir)
	}
	return cmd
}

// memdiagRun is a running memdiag attach.
type memdiagRun struct {
	cmd         *exec.Cmd
	report, log string
	stderr      strings.Builder
	done        <-chan struct{}
	waitErr     error
}

func startMemdiag(t *testing.T, tmp string, pid int, config string, extra ...string) *memdiagRun {
	t.Helper()
	r := &memdiagRun{report: filepath.Join(tmp, "r.json"), log: filepath.Join(tmp, "log")}
	ready := filepath.Join(tmp, "ready")
	r.cmd = exec.Command(memdiagBin, "attach", "--pid", fmt.Sprint(pid), "--config", config,
		"--report-json", r.report, "--ready-file", ready, "--log", r.log, "--no-dumps",
		// A larger ring than the default: the suite runs packages in
		// parallel on two cores, and a lost op begin is an op not counted
		// (the default ring's losses under bursts are a known limit,
		// ACCURACY.md).
		"--ringbuf-size", "4194304")
	r.cmd.Args = append(r.cmd.Args, extra...)
	r.cmd.Stderr = &r.stderr
	r.done = proctest.Start(t, r.cmd, &r.waitErr)
	if err := proctest.WaitFile(ready, 60*time.Second, r.done); err != nil {
		t.Fatalf("%v; memdiag stderr: %s", err, r.stderr.String())
	}
	return r
}

// takeTruth asks the service for its truth (SIGUSR2) and reads it once the
// service has renamed it into place.
func takeTruth(t *testing.T, svc *exec.Cmd, path string, memdiagDone <-chan struct{}) *Truth {
	t.Helper()
	os.Remove(path)
	if err := svc.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatalf("SIGUSR2 to the service: %v", err)
	}
	if err := proctest.WaitFile(path, 30*time.Second, memdiagDone); err != nil {
		t.Fatalf("truth: %v", err)
	}
	tr, err := ReadTruth(path)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}
