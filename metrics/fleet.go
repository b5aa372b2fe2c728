package metrics

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Fleet serves the metrics of many targets on one endpoint (`memdiag
// fleet`): each target's series carry its labels (namespace, pod,
// container, container_id, pod_uid), memdiag's own series (build info, the
// Go and process collectors) carry none. A target's series appear with Add
// and are gone, with all the state behind them, after Remove. It is safe
// for concurrent use.
type Fleet struct {
	reg     *prometheus.Registry
	handler http.Handler
	version string

	mu      sync.Mutex
	targets map[*Exporter]prometheus.Registerer // the registerer each was added with
}

// NewFleet returns a fleet exporter with its own registry.
func NewFleet(version string) *Fleet {
	f := &Fleet{reg: prometheus.NewRegistry(), version: version, targets: map[*Exporter]prometheus.Registerer{}}
	f.reg.MustRegister(
		buildCollector{version},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	f.handler = promhttp.InstrumentMetricHandler(f.reg, promhttp.HandlerFor(f.reg, promhttp.HandlerOpts{}))
	return f
}

// Add returns the exporter of a new target, whose series carry labels
// (its Version is ignored: memdiag_build_info is the Fleet's). Two
// targets with the same labels are refused.
func (f *Fleet) Add(labels Labels) (*Exporter, error) {
	e := newExporter(f.version, false)
	r := prometheus.WrapRegistererWith(prometheus.Labels{
		"container_id": labels.ContainerID,
		"pod_uid":      labels.PodUID,
		"namespace":    labels.Namespace,
		"pod":          labels.Pod,
		"container":    labels.Container,
	}, f.reg)
	if err := r.Register(collector{e}); err != nil {
		return nil, fmt.Errorf("metrics of %s/%s/%s: %w", labels.Namespace, labels.Pod, labels.Container, err)
	}
	f.mu.Lock()
	f.targets[e] = r
	f.mu.Unlock()
	return e, nil
}

// Remove takes a target's series out; the exporter is not used again.
func (f *Fleet) Remove(e *Exporter) {
	f.mu.Lock()
	r, ok := f.targets[e]
	delete(f.targets, e)
	f.mu.Unlock()
	if ok {
		r.Unregister(collector{e})
	}
}

// Len is the number of targets whose series are exported.
func (f *Fleet) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.targets)
}

// Handler serves the metrics in the Prometheus exposition formats.
func (f *Fleet) Handler() http.Handler { return f.handler }

// ServeListener serves the metrics at /metrics on ln (opened with Listen)
// until ctx ends, as Exporter.ServeListener does.
func (f *Fleet) ServeListener(ctx context.Context, ln net.Listener) error {
	return serve(ctx, ln, f.handler)
}

// buildCollector emits memdiag_build_info.
type buildCollector struct{ version string }

func (buildCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descBuild }

func (b buildCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(descBuild, prometheus.GaugeValue, 1, b.version)
}
