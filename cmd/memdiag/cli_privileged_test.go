//go:build privileged

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestVersion: --version and version print the same one line.
func TestVersion(t *testing.T) {
	t.Parallel()
	var outs []string
	for _, arg := range []string{"--version", "version"} {
		out, err := exec.Command(memdiagBin, arg).Output()
		if err != nil {
			t.Fatalf("memdiag %s: %v", arg, err)
		}
		if !regexp.MustCompile(`^memdiag \S+ \(go\S+, linux/\w+\)\n$`).Match(out) {
			t.Errorf("memdiag %s printed %q", arg, out)
		}
		outs = append(outs, string(out))
	}
	if outs[0] != outs[1] {
		t.Errorf("--version %q and version %q differ", outs[0], outs[1])
	}
}

// TestHelpExitStatus: the help lists the exit statuses, 126 and 127 among them.
func TestHelpExitStatus(t *testing.T) {
	t.Parallel()
	out, err := exec.Command(memdiagBin, "--help").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"EXIT STATUS:", "126  'memdiag run': the command was found but cannot be run", "127  'memdiag run': the command was not found", "--version"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("help lacks %q:\n%s", want, out)
		}
	}
}

// TestRunExecFails: a command found but not runnable by the kernel (a
// broken ELF) makes memdiag run exit 126, with the kernel's reason.
func TestRunExecFails(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	bad := filepath.Join(t.TempDir(), "bad")
	if err := os.WriteFile(bad, []byte("\x7fELF not really"), 0o755); err != nil {
		t.Fatal(err)
	}
	code, stderr := runOnce(t, nil, "run", "--log", filepath.Join(t.TempDir(), "log"), "--", bad)
	if code != 126 || !strings.Contains(stderr, fmt.Sprintf("memdiag: cannot run %q: exec format error", bad)) {
		t.Errorf("exit %d, stderr %q; want 126 and exec format error", code, stderr)
	}
}

// TestRunTerminalOutput: memdiag run /bin/true says on stderr what it
// traced and found, the log file has those lines and the rest, and
// --quiet leaves the terminal silent.
func TestRunTerminalOutput(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	log := filepath.Join(t.TempDir(), "log")
	code, stderr := runOnce(t, nil, "run", "--log", log, "/bin/true")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	file, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	for _, tag := range []string{"[INIT] Tracing pid", "[SUMMARY] Tracing ended (the target exited)", "[VERDICT] "} {
		if !regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d ` + regexp.QuoteMeta(tag)).MatchString(stderr) {
			t.Errorf("stderr lacks %q:\n%s", tag, stderr)
		}
		if !strings.Contains(string(file), tag) {
			t.Errorf("log lacks %q:\n%s", tag, file)
		}
	}
	// Every terminal line is in the log, in the same order.
	var fromLog []string
	for _, l := range strings.Split(strings.TrimSpace(string(file)), "\n") {
		if tag := regexp.MustCompile(`^\S+ \[(\w+)\] `).FindStringSubmatch(l); tag != nil && consoleTag(tag[1]) {
			fromLog = append(fromLog, l[strings.Index(l, " ")+1:])
		}
	}
	var fromTerm []string
	for _, l := range strings.Split(strings.TrimSpace(stderr), "\n") {
		fromTerm = append(fromTerm, l[strings.Index(l, " ")+1:])
	}
	if strings.Join(fromLog, "\n") != strings.Join(fromTerm, "\n") {
		t.Errorf("terminal lines differ from the log's:\nterminal:\n%s\nlog:\n%s", strings.Join(fromTerm, "\n"), strings.Join(fromLog, "\n"))
	}

	quietLog := filepath.Join(t.TempDir(), "log")
	code, stderr = runOnce(t, nil, "run", "--quiet", "--log", quietLog, "/bin/true")
	if code != 0 || stderr != "" {
		t.Errorf("--quiet: exit %d, stderr %q; want 0 and nothing", code, stderr)
	}
	if file, _ := os.ReadFile(quietLog); !strings.Contains(string(file), "[VERDICT] ") {
		t.Errorf("--quiet log lacks the verdict:\n%s", file)
	}
}

// consoleTag mirrors report.ConsoleTags for the test's reading of the log.
func consoleTag(tag string) bool {
	switch tag {
	case "INIT", "GROWTH", "SUMMARY", "VERDICT", "SAMPLING", "LOST", "ERROR", "OOM", "THRESHOLD", "DUMP", "HEALTH", "TLS", "REPORT":
		return true
	}
	return false
}

// TestReportFlagsAfterFile: `memdiag report FILE --format json` is the
// JSON report, as `memdiag report --format json FILE` is.
func TestReportFlagsAfterFile(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	rec := filepath.Join(t.TempDir(), "run.mdrec")
	if code, stderr := runOnce(t, nil, "run", "--quiet", "--log", filepath.Join(t.TempDir(), "log"), "--record", rec, "/bin/true"); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	before, err := exec.Command(memdiagBin, "report", "--format", "json", rec).Output()
	if err != nil {
		t.Fatal(err)
	}
	after, err := exec.Command(memdiagBin, "report", rec, "--format", "json").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(after), "{") || string(before) != string(after) {
		t.Errorf("report FILE --format json gave %.60q, want the JSON %.60q", after, before)
	}
	html := filepath.Join(t.TempDir(), "r.html")
	if out, err := exec.Command(memdiagBin, "report", rec, "-o", html, "--format=html").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if b, _ := os.ReadFile(html); !strings.Contains(string(b), "<html") {
		t.Errorf("-o after the file wrote %.60q", b)
	}
}

// TestBashCompletion: the bash script from `memdiag completion bash`
// completes subcommands and a subcommand's flags, asking memdiag itself.
func TestBashCompletion(t *testing.T) {
	t.Parallel()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	dir := t.TempDir()
	os.Symlink(memdiagBin, filepath.Join(dir, "memdiag"))
	script := `source <(memdiag completion bash)
complete -p memdiag
COMP_WORDS=(memdiag rep); COMP_CWORD=1; _memdiag_complete; echo "1: ${COMPREPLY[*]}"
COMP_WORDS=(memdiag report --fo); COMP_CWORD=2; _memdiag_complete; echo "2: ${COMPREPLY[*]}"
COMP_WORDS=(memdiag completion ""); COMP_CWORD=2; _memdiag_complete; echo "3: ${COMPREPLY[*]}"
`
	cmd := exec.Command(bash, "--norc", "-c", script)
	cmd.Env = append(os.Environ(), "PATH="+dir+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, want := range []string{"complete -o bashdefault -o default -F _memdiag_complete memdiag", "1: report\n", "2: --format\n"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("completion output lacks %q:\n%s", want, out)
		}
	}
	zsh, err := exec.Command(memdiagBin, "completion", "zsh").Output()
	if err != nil || !strings.HasPrefix(string(zsh), "#compdef memdiag\n") {
		t.Errorf("completion zsh: %v, %.40q", err, zsh)
	}
}

// openPTY opens a pseudo-terminal: the master, and the slave's file.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

// TestLiveView drives --live on a pseudo-terminal: the table is drawn
// (screen cleared, header, the workload's category) while the command
// runs, and the verdict follows once it has exited.
func TestLiveView(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	master, slave := openPTY(t)
	cmd := exec.Command(memdiagBin, "run", "--live", "--log", filepath.Join(t.TempDir(), "log"), "--", memworkBin)
	cmd.Stderr = slave
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	// The terminal's output, read as it comes; EOF once memdiag has exited.
	var mu sync.Mutex
	var screen strings.Builder
	drawn, closed := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(closed)
		buf := make([]byte, 4096)
		var once sync.Once
		for {
			n, err := master.Read(buf)
			mu.Lock()
			screen.Write(buf[:n])
			if strings.Contains(screen.String(), "RETAINED") && strings.Contains(screen.String(), "thread:memwork") {
				once.Do(func() { close(drawn) })
			}
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	fmt.Fprintln(in, "anon 4M")
	select {
	case <-drawn:
	case <-time.After(60 * time.Second): // a failure bound, not a synchronization
		mu.Lock()
		out := screen.String()
		mu.Unlock()
		t.Fatalf("no live table drawn:\n%q", out)
	}
	in.Close() // memwork exits at EOF
	if err := cmd.Wait(); err != nil {
		t.Fatalf("memdiag: %v", err)
	}
	// Once every holder of the terminal has exited, reading it ends (EIO).
	select {
	case <-closed:
	case <-time.After(30 * time.Second): // a failure bound
		t.Fatal("the terminal was not closed after memdiag exited")
	}
	out := screen.String()
	verdict := strings.LastIndex(out, "[VERDICT]")
	last := strings.LastIndex(out, "\x1b[H\x1b[2J")
	if verdict < last || last < 0 {
		t.Fatalf("want the verdict after the last table:\n%q", out)
	}
	table := out[last:]
	for _, want := range []string{"memdiag  pid ", "CATEGORY", "RETAINED", "RATE", "thread:memwork"} {
		if !strings.Contains(table, want) {
			t.Errorf("the last table lacks %q:\n%s", want, table)
		}
	}
}
