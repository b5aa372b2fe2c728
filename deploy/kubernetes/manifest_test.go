// Package kubernetes holds memdiag's Kubernetes manifests; its test checks
// that daemonset.yaml keeps what memdiag needs to trace a node.
package kubernetes

import (
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/memdiag/memdiag/fleet"
)

// object is the part of a Kubernetes object the test reads.
type object struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name        string            `yaml:"name"`
		Namespace   string            `yaml:"namespace"`
		Labels      map[string]string `yaml:"labels"`
		Annotations map[string]string `yaml:"annotations"`
	} `yaml:"metadata"`
	Data                         map[string]string `yaml:"data"` // ConfigMap
	AutomountServiceAccountToken *bool             `yaml:"automountServiceAccountToken"`
	Spec                         struct {
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata struct {
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"metadata"`
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type podSpec struct {
	ServiceAccountName           string            `yaml:"serviceAccountName"`
	AutomountServiceAccountToken *bool             `yaml:"automountServiceAccountToken"`
	HostPID                      bool              `yaml:"hostPID"`
	NodeSelector                 map[string]string `yaml:"nodeSelector"`
	Tolerations                  []map[string]any  `yaml:"tolerations"`
	Containers                   []container       `yaml:"containers"`
	Volumes                      []struct {
		Name     string `yaml:"name"`
		HostPath *struct {
			Path string `yaml:"path"`
		} `yaml:"hostPath"`
	} `yaml:"volumes"`
}

type container struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Env     []struct {
		Name      string `yaml:"name"`
		ValueFrom *struct {
			ConfigMapKeyRef *struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"configMapKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		Privileged   *bool `yaml:"privileged"`
		Capabilities struct {
			Add  []string `yaml:"add"`
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	VolumeMounts []volumeMount `yaml:"volumeMounts"`
}

type volumeMount struct {
	Name      string `yaml:"name"`
	MountPath string `yaml:"mountPath"`
	ReadOnly  bool   `yaml:"readOnly"`
}

// load decodes every document of daemonset.yaml, by kind.
func load(t *testing.T) map[string]object {
	t.Helper()
	f, err := os.Open("daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	objs := map[string]object{}
	dec := yaml.NewDecoder(f)
	for {
		var o object
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("daemonset.yaml: %v", err)
		}
		if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
			t.Fatalf("daemonset.yaml: a document without apiVersion, kind or name: %+v", o)
		}
		if _, dup := objs[o.Kind]; dup {
			t.Fatalf("daemonset.yaml: two %s objects", o.Kind)
		}
		objs[o.Kind] = o
	}
	return objs
}

func TestDaemonSet(t *testing.T) {
	objs := load(t)
	for _, kind := range []string{"Namespace", "ServiceAccount", "ConfigMap", "DaemonSet"} {
		if _, ok := objs[kind]; !ok {
			t.Fatalf("daemonset.yaml has no %s", kind)
		}
	}
	if len(objs) != 4 {
		t.Errorf("daemonset.yaml has %d objects, want only these 4 (no RBAC: memdiag reads nothing from the API)", len(objs))
	}
	ns := objs["Namespace"].Metadata.Name
	for _, kind := range []string{"ServiceAccount", "ConfigMap", "DaemonSet"} {
		if got := objs[kind].Metadata.Namespace; got != ns {
			t.Errorf("%s is in namespace %q, want %q", kind, got, ns)
		}
	}

	ds := objs["DaemonSet"]
	if ds.APIVersion != "apps/v1" {
		t.Errorf("DaemonSet apiVersion %q, want apps/v1", ds.APIVersion)
	}
	tmpl := ds.Spec.Template
	if len(ds.Spec.Selector.MatchLabels) == 0 {
		t.Error("DaemonSet has no selector")
	}
	for k, v := range ds.Spec.Selector.MatchLabels {
		if tmpl.Metadata.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the pod template's labels", k, v)
		}
	}
	pod := tmpl.Spec
	if !pod.HostPID {
		t.Error("hostPID must be true: memdiag traces host PIDs")
	}
	if pod.ServiceAccountName != objs["ServiceAccount"].Metadata.Name {
		t.Errorf("serviceAccountName %q, want the file's ServiceAccount %q", pod.ServiceAccountName, objs["ServiceAccount"].Metadata.Name)
	}
	if pod.NodeSelector["kubernetes.io/os"] != "linux" {
		t.Error("nodeSelector must pick Linux nodes")
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]

	sc := c.SecurityContext
	if sc.Privileged == nil || *sc.Privileged {
		t.Error("securityContext.privileged must be false, explicitly")
	}
	for _, capability := range []string{"BPF", "PERFMON", "SYS_PTRACE", "SYS_ADMIN"} {
		if !slices.Contains(sc.Capabilities.Add, capability) {
			t.Errorf("capabilities.add lacks %s", capability)
		}
	}

	hostPaths := map[string]string{}
	for _, v := range pod.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	mounts := map[string]struct {
		host     string
		readOnly bool
	}{
		"/sys/kernel/tracing": {"/sys/kernel/tracing", false}, // memdiag may mount tracefs here
		"/sys/kernel/btf":     {"/sys/kernel/btf", true},
		"/sys/fs/cgroup":      {"/sys/fs/cgroup", true},
		"/host/proc":          {"/proc", true},
		"/var/log/containers": {"/var/log/containers", true}, // names to ids, read-only
	}
	for path, want := range mounts {
		i := slices.IndexFunc(c.VolumeMounts, func(m volumeMount) bool { return m.MountPath == path })
		if i < 0 {
			t.Errorf("no volume mounted at %s", path)
			continue
		}
		m := c.VolumeMounts[i]
		if got := hostPaths[m.Name]; got != want.host {
			t.Errorf("%s: volume %q is hostPath %q, want %q", path, m.Name, got, want.host)
		}
		if want.readOnly && !m.ReadOnly {
			t.Errorf("%s must be mounted readOnly", path)
		}
	}

	// The metrics port: declared, named, annotated for Prometheus, and the
	// one memdiag is told to listen on.
	port := -1
	for _, p := range c.Ports {
		if p.Name == "metrics" {
			port = p.ContainerPort
		}
	}
	if port != 9464 {
		t.Errorf("metrics containerPort %d, want 9464 named metrics", port)
	}
	ann := tmpl.Metadata.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != "9464" {
		t.Errorf("prometheus.io annotations: %v", ann)
	}
	if got := flag(c.Command, "--metrics-addr"); got != ":9464" {
		t.Errorf("--metrics-addr %q, want :9464", got)
	}
	// The image is the one `make image` builds, and the command runs the
	// binary where the builder puts it.
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	repo := regexp.MustCompile(`(?m)^IMAGE_REPO \?= (\S+)$`).FindSubmatch(mk)
	if repo == nil || !strings.HasPrefix(c.Image, string(repo[1])+":") || strings.HasSuffix(c.Image, ":latest") {
		t.Errorf("image %q, want %s:<a pinned tag> (the Makefile's IMAGE_REPO)", c.Image, repo)
	}
	builder, err := os.ReadFile("../image/main.go")
	if err != nil {
		t.Fatal(err)
	}
	bin := regexp.MustCompile(`BinaryPath = "(\S+)"`).FindSubmatch(builder)
	if bin == nil || len(c.Command) < 2 || c.Command[0] != string(bin[1]) || c.Command[1] != "fleet" {
		t.Errorf("command %q, want %s fleet … (the image's binary, in fleet mode)", c.Command, bin)
	}
	if got := flag(c.Command, "--select"); got != "$(MEMDIAG_SELECT)" {
		t.Errorf("--select %q, want $(MEMDIAG_SELECT)", got)
	}
	// Names, never ids (ids change at every restart), and nothing that
	// needs the CRI socket this file does not mount.
	sel, err := fleet.ParseSelector(objs["ConfigMap"].Data["MEMDIAG_SELECT"])
	if err != nil {
		t.Errorf("MEMDIAG_SELECT: %v", err)
	} else if sel.NeedsPodMetadata() {
		t.Errorf("MEMDIAG_SELECT %q selects by label or annotation: that needs the CRI socket, which this file does not mount", objs["ConfigMap"].Data["MEMDIAG_SELECT"])
	}
	if got := flag(c.Command, "--max-targets"); got != "$(MEMDIAG_MAX_TARGETS)" {
		t.Errorf("--max-targets %q, want $(MEMDIAG_MAX_TARGETS)", got)
	}
	maxTargets, err := strconv.Atoi(objs["ConfigMap"].Data["MEMDIAG_MAX_TARGETS"])
	if err != nil || maxTargets < 1 {
		t.Errorf("MEMDIAG_MAX_TARGETS %q: want a positive number", objs["ConfigMap"].Data["MEMDIAG_MAX_TARGETS"])
	}
	if !slices.Contains(c.Command, "--no-dumps") {
		t.Error("command lacks --no-dumps")
	}

	// Every $(VAR) of the command comes from a key of the ConfigMap.
	cm := objs["ConfigMap"]
	env := map[string]bool{}
	for _, e := range c.Env {
		ref := e.ValueFrom
		if ref == nil || ref.ConfigMapKeyRef == nil {
			continue
		}
		if ref.ConfigMapKeyRef.Name != cm.Metadata.Name {
			t.Errorf("env %s refers to ConfigMap %q, want %q", e.Name, ref.ConfigMapKeyRef.Name, cm.Metadata.Name)
		}
		if _, ok := cm.Data[ref.ConfigMapKeyRef.Key]; !ok {
			t.Errorf("env %s refers to key %q, missing from the ConfigMap", e.Name, ref.ConfigMapKeyRef.Key)
		}
		env[e.Name] = true
	}
	for _, arg := range c.Command {
		for _, m := range regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`).FindAllStringSubmatch(arg, -1) {
			if !env[m[1]] {
				t.Errorf("command uses $(%s), which no env entry from the ConfigMap defines", m[1])
			}
		}
	}

	// Discovery needs no Kubernetes API access and no runtime socket (a
	// CRI socket can start containers: root on the node).
	if objs["ServiceAccount"].AutomountServiceAccountToken == nil || *objs["ServiceAccount"].AutomountServiceAccountToken || pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("automountServiceAccountToken must be false on the ServiceAccount and the pod")
	}
	for _, v := range hostPaths {
		if strings.HasSuffix(v, ".sock") || strings.Contains(v, "containerd") || strings.Contains(v, "crio") || strings.Contains(v, "docker") {
			t.Errorf("hostPath %s: a runtime's socket or state is more than discovery needs", v)
		}
	}

	// The limit holds --max-targets traces: measured (README "Fleet
	// mode"), the one BPF program's maps are 26 MiB whatever the number
	// of targets (the kernel, 5.11+, charges them to memdiag's memory
	// cgroup), memdiag's own RSS 22 MiB, and each target adds about 1 MiB
	// of memdiag's heap at most.
	limit, err := resource(c.Resources.Limits["memory"])
	if need := int64(48<<20 + maxTargets*1<<20); err != nil || limit < need {
		t.Errorf("memory limit %q for %d targets, want at least %d MiB", c.Resources.Limits["memory"], maxTargets, need>>20)
	}
	if c.Resources.Requests["memory"] == "" || c.Resources.Requests["cpu"] == "" {
		t.Errorf("resource requests missing: %v", c.Resources.Requests)
	}
}

// resource reads a Kubernetes memory quantity in Mi or Gi.
func resource(q string) (int64, error) {
	for suffix, unit := range map[string]int64{"Mi": 1 << 20, "Gi": 1 << 30} {
		if n, ok := strings.CutSuffix(q, suffix); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			return v * unit, err
		}
	}
	return 0, fmt.Errorf("quantity %q: want Mi or Gi", q)
}

// flag returns the value following name in args, or "".
func flag(args []string, name string) string {
	i := slices.Index(args, name)
	if i < 0 || i+1 >= len(args) {
		return ""
	}
	return args[i+1]
}
