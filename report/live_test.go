package report

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// TestLiveView: the table lists categories by retained bytes, marks the
// culprit, clips long names, cuts at liveRows, and keeps the latest
// liveTail log lines under it.
func TestLiveView(t *testing.T) {
	r := &Report{DurationSec: 120}
	r.Verdict.Culprit = "api_voice"
	r.Verdict.Statement = "api_voice retains"
	r.Categories = []CategoryJSON{
		{Name: "small", RetainedBytes: 1 << 10, Ops: 3},
		{Name: "api_voice", RetainedBytes: 8 << 20, Ops: 7},
		{Name: strings.Repeat("x", 40), RetainedBytes: 2 << 10},
	}
	for i := 0; i < liveRows; i++ {
		r.Categories = append(r.Categories, CategoryJSON{Name: fmt.Sprintf("c%d", i)})
	}
	var out bytes.Buffer
	v := NewLiveView(&out)
	for i := 0; i < liveTail+2; i++ {
		fmt.Fprintf(v, "line %d\n", i)
	}
	out.Reset()
	v.Update(r)
	s := out.String()
	voice, small := strings.Index(s, "api_voice "), strings.Index(s, "small ")
	switch {
	case !strings.HasPrefix(s, "\x1b[H\x1b[2J"):
		t.Error("the screen is not cleared first")
	case voice < 0 || small < 0 || voice > small:
		t.Error("categories not ordered by retained bytes")
	case !strings.Contains(s, "<-- culprit") || strings.Count(s, "<-- culprit") != 1:
		t.Error("the culprit is not marked once")
	case !strings.Contains(s, strings.Repeat("x", 27)+"…"):
		t.Error("a long name is not clipped to 28 runes")
	case !strings.Contains(s, "… 3 more categories"):
		t.Error("the table is not cut at liveRows")
	case strings.Contains(s, "line 1\n") || !strings.Contains(s, "line 2\n") || !strings.Contains(s, fmt.Sprintf("line %d\n", liveTail+1)):
		t.Error("not the latest liveTail log lines")
	}
	if t.Failed() {
		t.Log(s)
	}
}
