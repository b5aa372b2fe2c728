// Package prometheus holds memdiag's Prometheus rules: memdiag.rules.yml
// (recording rules for leak rates per category and per operation, alerts for
// a growing target, a retaining category, a named culprit, lost events and
// memdiag itself down) and their unit tests, memdiag.rules.test.yml. The Go
// test runs `promtool check rules` and `promtool test rules` on them.
package prometheus
