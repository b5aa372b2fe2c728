package metrics

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestExpositionEscapes: label values and help text with the characters
// the text format escapes, and the special values, read back by
// Prometheus's own parser as written.
func TestExpositionEscapes(t *testing.T) {
	value := "a \"quoted\"\\path\nline"
	x := newExposition()
	d := newDesc("t_odd", "help with \\ and\nnewline", gaugeType, "v")
	x.add(d, []labelPair{{"z", "last"}, {"a", ""}}, 1.5, value)
	x.add(newDesc("t_inf", "h", counterType), nil, math.Inf(1))
	x.add(newDesc("t_nan", "h", gaugeType), nil, math.NaN())
	var b bytes.Buffer
	x.write(&b)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(b.String()))
	if err != nil {
		t.Fatalf("parsing %q: %v", b.String(), err)
	}
	f := fams["t_odd"]
	if f.GetHelp() != "help with \\ and\nnewline" || len(f.GetMetric()) != 1 || f.GetMetric()[0].GetGauge().GetValue() != 1.5 {
		t.Errorf("t_odd read back as %v", f)
	}
	for _, l := range f.GetMetric()[0].GetLabel() {
		if l.GetName() == "v" && l.GetValue() != value {
			t.Errorf("label v read back as %q, want %q", l.GetValue(), value)
		}
	}
	if v := fams["t_inf"].GetMetric()[0].GetCounter().GetValue(); !math.IsInf(v, 1) {
		t.Errorf("t_inf read back as %v", v)
	}
	if v := fams["t_nan"].GetMetric()[0].GetGauge().GetValue(); !math.IsNaN(v) {
		t.Errorf("t_nan read back as %v", v)
	}
}

// TestParseStat: a /proc/PID/stat line whose comm has spaces and ')'.
func TestParseStat(t *testing.T) {
	line := "4242 (mem diag) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 50 0 0 20 0 9 0 1000 123456789 2048 18446744073709551615\n"
	s, err := parseStat(line, 1_700_000_000, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if s.cpuSeconds != 3 || s.vsizeBytes != 123456789 || s.rssBytes != 2048*4096 || s.startTime != 1_700_000_010 {
		t.Errorf("parseStat = %+v", s)
	}
	if _, err := parseStat("4242 (x) S 1", 0, 4096); err == nil {
		t.Error("a short line parsed")
	}
}
