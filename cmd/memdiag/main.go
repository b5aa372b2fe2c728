// Command memdiag finds out, from outside a running Linux service, which
// operations make its memory grow.
//
// EXIT STATUS
//
//	0  tracing ended normally (signal, --duration, or the target exited)
//	1  tracing failed (kernel refused, target vanished, I/O error)
//	2  bad usage or input (unknown flag, missing pid, malformed value)
//	126  `memdiag run`: the command was found but cannot be run
//	127  `memdiag run`: the command was not found
//	N  `memdiag run` exits with the command's own status (128+signal if killed)
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/memdiag/memdiag/cliargs"
	"github.com/memdiag/memdiag/launch"
	"github.com/memdiag/memdiag/target"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// exitError carries an exit code through cli's error return.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageErr marks err as bad input (exit 2).
func usageErr(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
}

// onUsageError turns a flag error into one line and exit status 2.
func onUsageError(c *cli.Context, err error, isSubcommand bool) error {
	name := "memdiag"
	if c.Command != nil && c.Command.Name != "" {
		name += " " + c.Command.Name
	}
	flags := c.App.Flags
	if c.Command != nil && c.Command.Name != "" {
		flags = c.Command.Flags
	}
	return usageErr("%v (see '%s --help')", cliargs.FlagHint(err, flags), name)
}

// costText is what each mode costs, from the runs in BENCHMARKS.md; README.md
// ("What it costs") carries the same lines (TestCostTextInREADME).
const costText = `Measured with sudo make bench and go run ./bench/http on a 2-CPU KVM VM (Linux 6.18,
2026-12-08; BENCHMARKS.md has the runs). CPU added per event:
  default mode, the traced service: +116 to +118 ns per page fault (+15% of
    a 0.8 us fault; +116 to +276 ns, +13% to +27%, in earlier runs of the
    same fault path), +151 to +159 ns per mmap or munmap (+29% to +30%; +144
    to +279 ns, +25% to +40%, in earlier runs), +50 to +103 ns per read; the
    reference Node.js service under wrk: 0.943 to 1.006 of untraced
    throughput (medians of 7 rounds, five runs; 0.990 in the latest), p99
    -3.7% to +8.4%; a plain Node.js http server at 85-115k requests/s: +5% to
    +11% CPU per request (0.4-1 us), 0.88-0.93 of untraced throughput and p99
    +40% to +50% with wrk on memdiag's CPU (wrk waits behind memdiag's reads)
  default mode, every other process on the host: +23 to +49 ns per page
    fault (+3% to +5%); every syscall goes through the kernel's syscall-tracing
    slow path and the bit test of memdiag's raw sys_enter/sys_exit pair while
    memdiag runs: +19 to +20 ns per syscall (read, getppid...: +19% of a
    one-byte read), +26 to +52 ns per mmap or munmap
  --exact-external: a uprobe trap per ArrayBuffer allocation or free: -9% to
    -13% throughput on the reference service, +10% to +15% CPU per request
  --tls: a uprobe per HTTPS request parsed: -13% throughput, +15% CPU per
    request (~25 us)
  --heap-sampling v8: +18% CPU per request at the 64 KiB interval, +9% to
    +14% at 1 MiB (a uprobe trap per sample; V8's own profiler a few percent)
  Go's memory profiler (default; turned on where the linker turned it off):
    +2% CPU per request on a Go service allocating 1 MiB per request, default
    mode included
  --native-heap: every malloc and free traps: +230% (Node.js) to +255%
    (Python) CPU per request; a diagnosis mode, for a bounded time
  memdiag itself: 13-14 MiB peak RSS in default mode (14.4-14.8 MiB under
    the HTTP services), 14-17 MiB in the uprobe modes, 1.0-1.3% of a core at
    7,700-11,200 records/s, 5-7% at 100,000-165,000 (0 lost), 0.22-0.34 s of
    CPU to attach (the kernel verifying the programs), under 150 ms to exit
    after SIGTERM (10 ms typical)`

// newApp builds the command line; an unknown command's name goes to
// *unknown (cli offers no error for it), for exitCode to report.
func newApp(unknown *string) *cli.App {
	app := &cli.App{
		Name:    "memdiag",
		Usage:   "find which operations make a Linux service's memory grow, from outside it",
		Version: version,
		Commands: []*cli.Command{
			newAttachCommand(),
			newFleetCommand(),
			newRunCommand(),
			newReportCommand(),
			newVersionCommand(),
			newLaunchCommand(),
			newDiffCommand(),
			newCompletionCommand(),
		},
		EnableBashCompletion: true,
		OnUsageError:         onUsageError,
		CommandNotFound:      func(c *cli.Context, name string) { *unknown = name },
		ExitErrHandler:       func(*cli.Context, error) {},
		CustomAppHelpTemplate: cli.AppHelpTemplate + `
COST:
` + indent(costText, "   ") + `

EXIT STATUS:
   0  tracing ended normally (signal, --duration, or the target exited)
   1  tracing failed (the kernel refused, the target vanished, an I/O error)
   2  bad usage or input (unknown flag, missing pid, malformed value)
   126  'memdiag run': the command was found but cannot be run
   127  'memdiag run': the command was not found
   N  'memdiag run' exits with the command's own status (128+signal if killed)

Flags go before a command's arguments; 'memdiag report FILE --format json'
is read as 'memdiag report --format json FILE'. After 'memdiag run CMD',
every word is CMD's.
`,
	}
	for _, c := range app.Commands {
		c.OnUsageError = onUsageError
	}
	return app
}

// indent prefixes every line of text with pre.
func indent(text, pre string) string {
	return pre + strings.ReplaceAll(text, "\n", "\n"+pre)
}

func init() {
	cli.VersionFlag = &cli.BoolFlag{Name: "version", Usage: "print memdiag's version", DisableDefaultText: true}
	cli.VersionPrinter = func(c *cli.Context) { printVersion(c.App.Writer) }
}

func main() {
	// memdiag sits next to the service it measures: keep its own heap
	// small (a GC is cheap at this heap size), as the RSS budget says:
	// GOGC 25 keeps the heap within a quarter of what is live. The limit
	// is a backstop, not the budget: a limit under the live heap makes the
	// GC run without pause (12 MiB did in a 130k records/s storm, while
	// ended op ids were a map entry each: memdiag at 31% of a core, 20% at
	// 32 MiB; BENCHMARKS.md).
	debug.SetGCPercent(25)
	debug.SetMemoryLimit(32 << 20)
	os.Exit(exitCode(run(os.Args)))
}

// run runs memdiag's command line and returns what exitCode maps.
func run(args []string) error {
	var unknown string
	app := newApp(&unknown)
	err := app.Run(cliargs.Reorder(app, args))
	if unknown != "" {
		return usageErr("unknown command %q (see 'memdiag --help')", unknown)
	}
	return err
}

// exitCode prints err as one line and maps it to the process exit code.
// This is the one place memdiag picks exit codes.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var le *launch.Exit
	if errors.As(err, &le) && le.Err == nil {
		return le.Code // the command's own status: it spoke for itself
	}
	fmt.Fprintf(os.Stderr, "memdiag: %v\n", err)
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &le):
		return le.Code
	case errors.Is(err, target.ErrInput):
		return 2
	}
	return 1
}
