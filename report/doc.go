// Package report writes what memdiag found: the live log in the classic
// line format, and the text, JSON and HTML reports. It is pure Go, fed with
// attribution's summaries, and writes files only through its safe-file
// helpers (0600 files in 0700 directories, never through symlinks, never
// over an existing file).
//
// The HTML report is built in three layers: view.go computes a view model
// (pageView: every string the page shows), charts.go the geometry of its SVG
// charts, and templates/report.html.tmpl (embedded) is the markup and CSS.
// format.go holds the formatters for people (bytes, durations, counts).
package report
