// Package target turns what a user names on memdiag's command line into
// traced processes: a pid, a pid inside a container, a container or a
// cgroup becomes host pids (Resolve), each refused with what to do when
// memdiag cannot trace it (Check), watched for its exit through a pidfd
// (Watch), measured for the baseline (Baseline), and put in the kernel's
// target table with the opt-in uprobes attached (Open).
//
// Attach and Run are the sequences of `memdiag attach` and `memdiag run` up
// to the live loop, and Options.Opener fleet mode's for one container:
// outputs checked before anything is traced, then the tracer opened with
// the flags' tables (Options). Everything opened goes into a Closers, which
// the command closes in reverse on every path out, after the session ran;
// cmd/memdiag keeps only the flags, the signals and the exit codes.
//
// Errors that come from what the user gave (no such pid, a container with
// no processes, --tls on a binary without the symbol) wrap ErrInput, so
// cmd/memdiag, the one place exit codes are picked, exits 2 for them; the
// wording of each stays here, next to the check it explains.
package target
