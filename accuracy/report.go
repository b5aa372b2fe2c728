package accuracy

import (
	"encoding/json"
	"fmt"
	"os"
)

// Report is the part of memdiag's JSON report the harness reads. It is
// decoded here, not imported from memdiag's report package, so the harness
// keeps working while that format grows.
type Report struct {
	Categories []ReportCategory `json:"categories"`
	// Culprit is the first model's culprit (null: none).
	Culprit *string `json:"culprit"`
	// Verdict is the reworked model's verdict, when the report has one.
	Verdict *Verdict `json:"verdict"`
	// LostEvents and Health say whether memdiag saw everything: a lost op
	// begin is an op it cannot count.
	LostEvents int64            `json:"lost_events"`
	Health     map[string]int64 `json:"health"`
}

// ReportCategory is one row of memdiag's categories.
type ReportCategory struct {
	Name               string   `json:"name"`
	Kind               string   `json:"kind"`
	Ops                int64    `json:"ops"`
	RSSBytes           int64    `json:"rss_bytes"`
	RetainedBytes      int64    `json:"retained_bytes"`
	RetainedPerOpBytes *float64 `json:"retained_per_op_bytes"`
}

// Verdict is memdiag's verdict object: Culprit "" (or null) means "nothing
// retains".
type Verdict struct {
	Culprit   *string `json:"culprit"`
	Suspect   string  `json:"suspect"` // a mapping estimate's suspect: not a culprit
	Statement string  `json:"statement"`
}

// ReadReport reads memdiag's JSON report.
func ReadReport(path string) (*Report, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading memdiag's report: %w", err)
	}
	var r Report
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("parsing memdiag's report %s: %w", path, err)
	}
	return &r, nil
}

// CulpritName is the category memdiag names as the culprit, "" for none:
// verdict.culprit when the report has a verdict, else the top-level culprit.
func (r *Report) CulpritName() string {
	if r.Verdict != nil {
		if r.Verdict.Culprit == nil {
			return ""
		}
		return *r.Verdict.Culprit
	}
	if r.Culprit == nil {
		return ""
	}
	return *r.Culprit
}

// Category finds a category by name.
func (r *Report) Category(name string) (ReportCategory, bool) {
	for _, c := range r.Categories {
		if c.Name == name {
			return c, true
		}
	}
	return ReportCategory{}, false
}
