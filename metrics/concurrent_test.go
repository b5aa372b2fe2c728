package metrics_test

import (
	"sync"
	"testing"
	"time"
)

// TestScrapesAreConsistent: scrapes while the session updates each see one
// update whole — the growth and the dump count of the same report, never a
// mix — and the last scrape sees the last update. (Run under -race, it also
// checks the exporter's locking.)
func TestScrapesAreConsistent(t *testing.T) {
	e := newExporter()
	r := sampleReport()
	r.Growth.RSS = 0
	e.Update(r, 0)
	url := serveURL(t, e)
	const updates = 200
	var wg sync.WaitGroup
	wg.Go(func() {
		r := sampleReport()
		for i := 1; i < updates; i++ {
			r.EndedAt = t0.Add(time.Duration(i) * time.Second)
			r.Growth.RSS = int64(i) << 20
			e.Update(r, i)
		}
	})
	check := func() (growth, dumps float64) {
		fams := scrapeURL(t, url)
		growth = series(t, fams, "memdiag_target_growth_rss_bytes", nil)
		dumps = series(t, fams, "memdiag_dumps_total", nil)
		if growth != dumps*(1<<20) {
			t.Errorf("a scrape mixed two updates: growth %v bytes with %v dumps (want growth = dumps MiB)", growth, dumps)
		}
		return growth, dumps
	}
	for range 20 {
		check()
	}
	wg.Wait()
	if _, dumps := check(); dumps != updates-1 {
		t.Errorf("after the last update the scrape shows %v dumps, want %d", dumps, updates-1)
	}
}
