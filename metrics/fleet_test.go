package metrics_test

import (
	"testing"

	"github.com/memdiag/memdiag/metrics"
)

// TestFleetLabels: two targets on one endpoint, each series labelled with
// its target's namespace, pod, container and ids; memdiag's own series
// with none; a removed target's series gone.
func TestFleetLabels(t *testing.T) {
	f := metrics.NewFleet("v1.2.3")
	a, err := f.Add(metrics.Labels{Namespace: "shop", Pod: "web-0", Container: "app", ContainerID: testContainer, PodUID: testPod})
	if err != nil {
		t.Fatal(err)
	}
	other := "aa" + testContainer[2:]
	b, err := f.Add(metrics.Labels{Namespace: "shop", Pod: "web-1", Container: "app", ContainerID: other, PodUID: "2b2c3d4e-5f60-7890-abcd-ef1234567890"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Add(metrics.Labels{Namespace: "shop", Pod: "web-1", Container: "app", ContainerID: other, PodUID: "2b2c3d4e-5f60-7890-abcd-ef1234567890"}); err == nil {
		t.Error("a second target with the same labels was accepted")
	}
	ra, rb := sampleReport(), sampleReport()
	rb.Final.RSS = 123 << 20
	a.Update(ra, 0)
	b.Update(rb, 0)

	fams := scrape(t, f)
	rss := fams["memdiag_target_rss_bytes"].GetMetric()
	if len(rss) != 2 {
		t.Fatalf("memdiag_target_rss_bytes has %d series, want 2", len(rss))
	}
	byPod := map[string]float64{}
	for _, m := range rss {
		l := labelsOf(m)
		if l["namespace"] != "shop" || l["container"] != "app" || l["pod_uid"] == "" || l["container_id"] == "" {
			t.Errorf("series labelled %v", l)
		}
		byPod[l["pod"]+" "+l["container_id"][:2]] = m.GetGauge().GetValue()
	}
	if byPod["web-0 "+testContainer[:2]] != float64(ra.Final.RSS) || byPod["web-1 aa"] != float64(rb.Final.RSS) {
		t.Errorf("rss by pod %v, want web-0 %d, web-1 %d", byPod, ra.Final.RSS, rb.Final.RSS)
	}
	if ops := fams["memdiag_category_ops_total"].GetMetric(); len(ops) != 2*len(ra.Categories) {
		t.Errorf("%d ops series, want %d", len(ops), 2*len(ra.Categories))
	}
	build := fams["memdiag_build_info"].GetMetric()
	if len(build) != 1 || len(labelsOf(build[0])) != 1 || labelsOf(build[0])["version"] != "v1.2.3" {
		t.Errorf("memdiag_build_info %v, want one series labelled version only", build)
	}
	if g := fams["go_goroutines"].GetMetric(); len(g) != 1 || len(g[0].GetLabel()) != 0 {
		t.Errorf("go_goroutines %v: memdiag's own series carry no target labels", g)
	}

	f.Remove(a)
	if f.Len() != 1 {
		t.Errorf("Len %d after Remove, want 1", f.Len())
	}
	fams = scrape(t, f)
	for name, fam := range fams {
		for _, m := range fam.GetMetric() {
			if labelsOf(m)["pod"] == "web-0" {
				t.Errorf("%s still has a series of the removed target: %v", name, labelsOf(m))
			}
		}
	}
	if n := len(fams["memdiag_target_rss_bytes"].GetMetric()); n != 1 {
		t.Errorf("%d rss series after Remove, want 1", n)
	}
	// The same target can come back (a container restarted under its id).
	if _, err := f.Add(metrics.Labels{Namespace: "shop", Pod: "web-0", Container: "app", ContainerID: testContainer, PodUID: testPod}); err != nil {
		t.Errorf("adding a removed target again: %v", err)
	}
}
