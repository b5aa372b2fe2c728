// Package grafana holds memdiag.json, a Grafana dashboard for memdiag's
// Prometheus metrics (import it in Grafana, pick the Prometheus data source).
// Its variables pick the memdiag instance, then, for fleet mode's series,
// the namespace and pod, then the container (by id).
// Its test checks that the JSON parses, that every panel and variable queries
// only metric names memdiag exports or the recording rules in
// deploy/prometheus define, and that every memdiag series has a panel.
package grafana
