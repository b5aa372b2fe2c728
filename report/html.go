package report

import (
	"bytes"
	_ "embed"
	"fmt"
	"html/template"
	"sync"
)

// The HTML report is one page that opens offline: inline CSS, inline SVG
// drawn here in Go, no script, and a Content-Security-Policy that forbids
// every fetch, so a copy mailed or attached to an incident shows the same
// thing anywhere. Every name that came from the traced service (category,
// op, detail, comm, exe) goes through html/template's escaping.
//
// Charts carry data-chart ("timeline", "categories") and each series or bar
// group carries data-category with its name, so tests (and users with a
// DOM inspector) can find them.

// topSeries is how many categories the charts draw on their own; the rest
// are summed as "other".
const topSeries = 8

// otherName names the sum of the categories beyond the top ones.
const otherName = "other"

// palette is Okabe & Ito's colour-blind-safe set (black swapped for Tol's
// wine, black being the total line), in the order series are stacked.
var palette = [topSeries]string{"#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#882255"}

// otherColor is the grey of everything beyond the top categories.
const otherColor = "#B4BAC2"

// HTML renders the report as one self-contained HTML page: the target and
// interval, baseline/final/peak/growth, the culprit, RSS growth over time
// stacked by category with markers, per-category bars, the categories and
// their top ops, and what the tracer could not keep.
func (r *Report) HTML() ([]byte, error) {
	var b bytes.Buffer
	if err := htmlPage().Execute(&b, newPageView(r)); err != nil {
		return nil, fmt.Errorf("rendering the HTML report: %w", err)
	}
	return b.Bytes(), nil
}

// pageTemplate is the page: markup and inline CSS, filled from a pageView.
//
//go:embed templates/report.html.tmpl
var pageTemplate string

// htmlPage is pageTemplate parsed, on first use: parsing at start-up cost
// every memdiag process 150 KB of heap and the template parser's pages,
// whether it wrote an HTML report or not.
var htmlPage = sync.OnceValue(func() *template.Template {
	return template.Must(template.New("report").Parse(pageTemplate))
})
