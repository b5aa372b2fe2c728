//go:build privileged

package main

import (
	"testing"

	"github.com/memdiag/memdiag/report"
)

// conserved asserts the conservation invariant, exactly: every byte of
// resident change lands in one bucket, so the buckets and the categories
// each sum to the growth, and nothing is unattributed. It is exact by
// construction (the kernel's counters telescope), never a tolerance.
func conserved(t *testing.T, rep *report.Report) {
	t.Helper()
	var buckets, cats int64
	for _, b := range rep.Buckets {
		buckets += b.RSS
	}
	for _, c := range rep.Categories {
		cats += c.RSSBytes
	}
	if buckets != rep.Growth.RSS || cats != rep.Growth.RSS || rep.UnattributedBytes != 0 {
		t.Errorf("conservation: buckets sum to %d, categories to %d, growth.rss_bytes is %d, unattributed %d; want all equal and 0 unattributed",
			buckets, cats, rep.Growth.RSS, rep.UnattributedBytes)
	}
}
