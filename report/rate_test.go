package report

import (
	"math"
	"testing"
	"time"
)

// TestRecentRate: the growth-rate card reads the trend of the run's second
// half. A one-time warm-up step (python3 -m http.server: 468 KB in its
// first seconds) showed as a steady "+2.1 MB/min" when the whole run's
// growth was divided by its length; its trend is flat. A steady leak's
// trend is its rate, and a timeline too short for a trend says so.
func TestRecentRate(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	report := func(growth func(sec int) int64) *Report {
		r := &Report{StartedAt: t0, DurationSec: 120}
		for sec := 0; sec <= 120; sec += 10 {
			r.Timeline = append(r.Timeline, TimelineJSON{Time: t0.Add(time.Duration(sec) * time.Second), RSSBytes: growth(sec)})
		}
		r.Growth.RSS = growth(120)
		return r
	}
	step := report(func(sec int) int64 {
		if sec >= 10 {
			return 468 << 10
		}
		return 0
	})
	if rate, _, ok := recentRate(step); !ok || rate != 0 {
		t.Errorf("warm-up step then flat: rate %v (ok %v), want 0", rate, ok)
	}
	leak := report(func(sec int) int64 { return int64(sec) * (1 << 20) / 60 }) // 1 MiB a minute
	if rate, over, ok := recentRate(leak); !ok || math.Abs(rate-(1<<20)) > 1 || over != time.Minute {
		t.Errorf("steady leak: rate %v over %v (ok %v), want 1 MiB/min over 1m", rate, over, ok)
	}
	short := &Report{StartedAt: t0, DurationSec: 5, Timeline: []TimelineJSON{{Time: t0.Add(4 * time.Second), RSSBytes: 1 << 20}}}
	if _, _, ok := recentRate(short); ok {
		t.Error("one point: want no trend")
	}
	if cs := cards(step); cs[3].Value != "0 B" || cs[3].Sub != "RSS trend over the last 1m 00s (whole run +234 KiB/min)" {
		t.Errorf("growth-rate card = %+v", cs[3])
	}
}
