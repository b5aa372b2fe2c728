// Package report writes what memdiag found: the live log in the classic
// line format, and the JSON report. It is pure Go, fed with attribution's
// summaries, and writes files only through its safe-file helpers (0600 files
// in 0700 directories, never through symlinks, never over an existing file).
package report
