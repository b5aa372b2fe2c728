package metrics

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
)

// Fleet serves the metrics of many targets on one endpoint (`memdiag
// fleet`): each target's series carry its labels (namespace, pod,
// container, container_id, pod_uid), memdiag's own series (build info, the
// Go and process series) carry none. A target's series appear with Add
// and are gone, with all the state behind them, after Remove. It is safe
// for concurrent use.
type Fleet struct {
	version string

	mu      sync.Mutex
	targets map[*Exporter]string // each target's label set, written as in the exposition
	labels  map[string]bool      // the label sets in use
}

// NewFleet returns a fleet exporter.
func NewFleet(version string) *Fleet {
	return &Fleet{version: version, targets: map[*Exporter]string{}, labels: map[string]bool{}}
}

// Add returns the exporter of a new target, whose series carry labels
// (its Version is ignored: memdiag_build_info is the Fleet's). Two
// targets with the same labels are refused.
func (f *Fleet) Add(labels Labels) (*Exporter, error) {
	e := newExporter(f.version, false)
	e.labels = []labelPair{
		{"container_id", labels.ContainerID},
		{"pod_uid", labels.PodUID},
		{"namespace", labels.Namespace},
		{"pod", labels.Pod},
		{"container", labels.Container},
	}
	key := labelString(e.labels)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.labels[key] {
		return nil, fmt.Errorf("metrics of %s/%s/%s: another target has the same labels %s", labels.Namespace, labels.Pod, labels.Container, key)
	}
	f.labels[key] = true
	f.targets[e] = key
	return e, nil
}

// Remove takes a target's series out; the exporter is not used again.
func (f *Fleet) Remove(e *Exporter) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if key, ok := f.targets[e]; ok {
		delete(f.labels, key)
		delete(f.targets, e)
	}
}

// Len is the number of targets whose series are exported.
func (f *Fleet) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.targets)
}

// WriteTo writes the metrics of every target and memdiag's own in the
// Prometheus text format (version 0.0.4), as /metrics answers them.
func (f *Fleet) WriteTo(w io.Writer) (int64, error) {
	return writeExposition(w, func(x *exposition) {
		x.add(descBuild, nil, 1, f.version)
		addSelf(x, nil)
		f.mu.Lock()
		defer f.mu.Unlock()
		for e := range f.targets {
			e.collect(x)
		}
	})
}

// ServeListener serves the metrics at /metrics on ln (opened with Listen)
// until ctx ends, as Exporter.ServeListener does.
func (f *Fleet) ServeListener(ctx context.Context, ln net.Listener) error {
	return serve(ctx, ln, func(w io.Writer) { f.WriteTo(w) })
}
