package accuracy

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
)

// CategoryTruth is what a service says one category did: the ops it served
// and the bytes it still holds because of them.
type CategoryTruth struct {
	Ops           int64 `json:"ops"`
	RetainedBytes int64 `json:"retained_bytes"`
}

// SelfCheck is a service's measurement of its own memory that does not
// depend on how it computed its truth (a runtime or allocator counter
// after a full GC); Bytes is the figure compared, Method says what it is.
type SelfCheck struct {
	Method string `json:"method"`
	Bytes  int64  `json:"bytes"`
	Error  string `json:"error"`
}

// Truth is a service's ground truth, cumulative since it started (or, after
// Sub, over a measured interval).
type Truth struct {
	Categories map[string]CategoryTruth `json:"categories"`
	SelfCheck  *SelfCheck               `json:"self_check"`
}

// ReadTruth reads a truth file written by a corpus service.
func ReadTruth(path string) (*Truth, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading truth: %w", err)
	}
	var t Truth
	if err := json.Unmarshal(data, &t); err != nil {
		return nil, fmt.Errorf("parsing truth %s: %w", path, err)
	}
	if len(t.Categories) == 0 {
		return nil, fmt.Errorf("truth %s names no category", path)
	}
	return &t, nil
}

// Sub returns t - earlier per category, and of the self-check bytes: what
// happened between two truths of one service.
func (t *Truth) Sub(earlier *Truth) *Truth {
	d := &Truth{Categories: map[string]CategoryTruth{}}
	for name, c := range t.Categories {
		e := earlier.Categories[name]
		d.Categories[name] = CategoryTruth{Ops: c.Ops - e.Ops, RetainedBytes: c.RetainedBytes - e.RetainedBytes}
	}
	if t.SelfCheck != nil && earlier.SelfCheck != nil {
		d.SelfCheck = &SelfCheck{Method: t.SelfCheck.Method, Bytes: t.SelfCheck.Bytes - earlier.SelfCheck.Bytes}
		if t.SelfCheck.Error != "" {
			d.SelfCheck.Error = t.SelfCheck.Error
		}
	}
	return d
}

// Names returns the categories in name order.
func (t *Truth) Names() []string {
	names := make([]string, 0, len(t.Categories))
	for n := range t.Categories {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Retained sums the retained bytes of every category.
func (t *Truth) Retained() int64 {
	var s int64
	for _, c := range t.Categories {
		s += c.RetainedBytes
	}
	return s
}
