// Package session is memdiag's engine: it ties one tracer to one account
// and its outputs for the length of a trace, and rebuilds the same account
// from a recording.
//
// A live session (New, then Run: Start, Loop, Finish, with SIGUSR1 and
// SIGUSR2 caught meanwhile) takes the tracer's events as
// they come, reads the kernel's counters every second (a snapshot), applies
// both to an attribution.Account, lets the kernel forget what attribution
// folded away, and writes what the user sees: the live log ([INIT],
// [PERIODIC] with growth rates, [GROWTH], [SUMMARY], [THRESHOLD], [DUMP],
// [DIFF], [LOST]), Prometheus metrics, the recording (--record), dumps when
// RSS crosses a --dump-at threshold or on demand (SIGUSR2), the diff of
// consecutive dumps' heap snapshots (heapdiff.go: `memdiag diff` in a
// child process, one at a time), and the final text, JSON and HTML
// reports.
// With --heap-sampling it also joins the runtime's own allocation sampler
// (Go's memory profiler, V8's sampling heap profiler) with the ops
// (sampling.go), through the Sampler interface.
// Replay rebuilds the account of a recording; its report is byte-for-byte
// the live one.
//
// The engine never imports cilium/ebpf: it drives the tracer through the
// Tracer interface, which *tracer.Tracer satisfies, so its tests feed it
// event slices and recordings without root.
//
// # Shutdown order
//
// Finish ends a session in this order, and nothing else closes the tracer
// first: the loop has returned (cancel: a signal, --duration, the target's
// exit); a dump under way is let finish (it reads the kernel's maps); the
// runtime sampler gives its last profile and closes the inspector it
// opened; Stop
// detaches every probe, so no new charge or record appears, and drains the
// ring buffer into Events, which Finish takes and applies in order; the
// final Snapshot reads the counters, still in the maps; Close closes the
// ring buffer reader, then the maps and programs. Only then are the reports
// written and the log closed.
//
// # Where it departs from the plan on purpose
//
// The tracer's ring buffer reader blocks when the events channel is full
// instead of dropping, as STYLE asks of a reader in general: an op's end
// record carries bytes the kernel no longer holds, so a dropped record
// would lose bytes from the totals. A slow session fills the ring buffer
// instead, where a record that finds no room is counted (lost events,
// [LOST]) and its bytes stay in the kernel's tables. The session therefore
// never blocks on anything slow in its loop: dumps run on their own
// goroutine, one at a time.
package session
