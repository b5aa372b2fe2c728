// Package metrics serves what memdiag found as Prometheus metrics
// (`--metrics-addr`), so a fleet can run memdiag as a Kubernetes DaemonSet
// and aggregate in Prometheus.
//
// An Exporter keeps its own series (there is no global registry). The
// session feeds it report snapshots with Update; WriteTo and ServeListener expose the
// latest one at /metrics, in the Prometheus text format (version 0.0.4),
// written by hand in expose.go rather than with client_golang, and served
// by a small HTTP/1.1 server (serve.go) rather than net/http: their
// initializers cost every memdiag process about 1 and 3 MiB of resident
// memory, serving metrics or not.
// Until the first Update only memdiag_build_info and memdiag's own Go and
// process series are exported: go_goroutines, go_threads, go_info,
// go_memstats_heap_alloc_bytes, go_memstats_sys_bytes,
// process_cpu_seconds_total, process_resident_memory_bytes,
// process_virtual_memory_bytes, process_start_time_seconds,
// process_open_fds and process_max_fds, named, described and typed as
// client_golang's Go and process collectors do (the other series of those
// collectors, and promhttp's, are not exported).
//
// Every series, the Go and process series included, carries two
// constant labels naming the traced target, since the scraped pod is memdiag's
// own and not the target's:
//
//	container_id  the target's container ID, 64 hex digits (ContainerID); "" when unknown
//	pod_uid       the target's Kubernetes pod UID (PodUID); "" when unknown
//
// In fleet mode (`memdiag fleet`, Fleet) one endpoint serves every traced
// container: each container's series carry five labels instead of two,
//
//	namespace, pod, container   the Kubernetes names of the container
//	container_id, pod_uid       as above
//
// and memdiag's own series (memdiag_build_info, the Go and process
// series) carry none. A container's series appear when its trace
// starts and are removed when it ends.
//
// memdiag's series (values from report.Report, whose fields README.md
// documents):
//
//	memdiag_target_rss_bytes{pid}                          gauge   final.rss_bytes: resident memory now (baseline + growth); pid is target.pid
//	memdiag_target_growth_rss_bytes                        gauge   growth.rss_bytes: change since tracing began, target and children
//	memdiag_growth_rate_rss_bytes_per_minute               gauge   RSS growth per minute over the last minute of snapshots (since the start while tracing is younger)
//	memdiag_category_rss_bytes{category,kind}              gauge   categories[].rss_bytes
//	memdiag_category_external_bytes{category,kind}         gauge   categories[].external_bytes
//	memdiag_category_retained_bytes{category,kind}         gauge   categories[].retained_bytes: allocated by the category's ops and still live
//	memdiag_category_ops_total{category,kind}              counter categories[].ops: operations completed
//	memdiag_lost_events_total                              counter lost_events
//	memdiag_dumps_total                                    counter dumps taken at RSS thresholds
//	memdiag_culprit_info{category}                         gauge   1 for verdict.culprit, the category measured to keep most; absent when none
//	memdiag_suspect_info{category,heap}                    gauge   1 for verdict.suspect (a mapping estimate of the native or runtime heap, not a measurement); absent when none
//	memdiag_build_info{version}                            gauge   1, with memdiag's version
//
// kind is the category's kind: http, outbound, unknown, idle, background or
// process.
//
// Cardinality is bounded: the MaxCategories (200) categories with the largest
// |rss_bytes| are exported by name, the others are summed into one series
// labelled category="other", kind="other" (a kind no real category has).
//
// memdiag_category_ops_total is a true counter: each Update adds the ops a
// category completed since the previous one to the series it is exported
// in now, so the series never go down, even when a category moves in or out
// of the "other" sum or a new session starts from zero. While a category
// keeps its own series, its value equals the report's ops.
//
// deploy/prometheus has recording and alerting rules for these series, and
// deploy/grafana a dashboard; prometheus_privileged_test.go checks that a real
// Prometheus scraping memdiag stores what memdiag's report says.
package metrics
