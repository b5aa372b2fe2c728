package container

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Named is a container as a runtime names it.
type Named struct {
	ID      string   // the full 64-hex id
	Runtime string   // docker, podman, nerdctl or kubernetes
	Name    string   // the name the runtime shows: docker's without its "/", "namespace/pod/container" for Kubernetes
	Aliases []string // other names it answers to: its Compose service, its Kubernetes container and pod names

	// Kubernetes only.
	Namespace, Pod, PodUID, Container string
	// Labels are the container's labels (docker) or its pod's labels
	// (Kubernetes, through the CRI); Annotations its pod's annotations
	// (CRI only). Nil when the source does not know them.
	Labels, Annotations map[string]string
}

// Sources are where names are looked up. A source that is absent on this
// host is skipped.
type Sources struct {
	Roots   Roots
	Docker  []string // docker data roots, holding containers/<id>/config.v2.json
	Storage []string // containers/storage roots (podman, cri-o), holding *-containers/containers.json
	Nerdctl []string // nerdctl data roots, holding <hash>/names/<namespace>/<name>
	PodLogs []string // the kubelet's links <pod>_<namespace>_<container>-<id>.log
	CRI     []string // CRI sockets (containerd, cri-o)
	// CRITimeout bounds each CRI call; 0 means 5 s.
	CRITimeout time.Duration
}

// DefaultSources are this host's usual places, for root and rootless
// runtimes.
func DefaultSources() Sources {
	s := Sources{
		Roots:   DefaultRoots(),
		Docker:  []string{"/var/lib/docker"},
		Storage: []string{"/var/lib/containers/storage", "/run/containers/storage"},
		Nerdctl: []string{"/var/lib/nerdctl"},
		PodLogs: []string{"/var/log/containers"},
		CRI:     []string{"/run/containerd/containerd.sock", "/run/crio/crio.sock", "/var/run/containerd/containerd.sock", "/var/run/crio/crio.sock"},
	}
	homes, _ := filepath.Glob("/home/*")
	for _, h := range append([]string{"/root"}, homes...) {
		s.Docker = append(s.Docker, filepath.Join(h, ".local/share/docker"))
		s.Storage = append(s.Storage, filepath.Join(h, ".local/share/containers/storage"))
	}
	return s
}

// List reads every source and returns the containers they name, one per
// id (a CRI entry, which knows pod labels, wins over the kubelet's links).
// Sources that are absent are skipped; the error joins what could not be
// read from sources that are present.
func (s Sources) List(ctx context.Context) ([]Named, error) {
	var all []Named
	var errs []error
	add := func(n []Named, err error) {
		all = append(all, n...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	for _, sock := range s.CRI {
		if fi, err := os.Stat(sock); err != nil || fi.Mode().Type() != os.ModeSocket {
			continue
		}
		timeout := s.CRITimeout
		if timeout == 0 {
			timeout = 5 * time.Second
		}
		c, cancel := context.WithTimeout(ctx, timeout)
		add(ListCRI(c, sock))
		cancel()
	}
	for _, d := range s.Docker {
		add(listDocker(d))
	}
	for _, d := range s.Storage {
		add(listStorage(d))
	}
	for _, d := range s.Nerdctl {
		add(listNerdctl(d))
	}
	for _, d := range s.PodLogs {
		add(listPodLogs(d))
	}
	seen := map[string]bool{}
	var out []Named
	for _, n := range all {
		if !seen[n.ID] {
			seen[n.ID] = true
			out = append(out, n)
		}
	}
	return out, errors.Join(errs...)
}

// names are the strings a container answers to.
func (n Named) names() []string { return append([]string{n.Name}, n.Aliases...) }

// Matches tells whether a user's name designates this container: its
// name or an alias, or for Kubernetes "namespace/pod/container" where pod
// may be a glob ("shop/web-*/app": container app of any web pod).
func (n Named) Matches(name string) bool {
	if slices.Contains(n.names(), name) {
		return true
	}
	parts := strings.Split(name, "/")
	if n.Runtime != "kubernetes" || len(parts) != 3 || parts[0] != n.Namespace || parts[2] != n.Container {
		return false
	}
	ok, err := path.Match(parts[1], n.Pod)
	return err == nil && ok
}

// String names the container for messages: "docker web (3f2a9c1b0d4e)".
func (n Named) String() string {
	return fmt.Sprintf("%s %s (%s)", n.Runtime, n.Name, n.ID[:12])
}

// Resolve finds the running container a user designates by id, id
// prefix, or name: a Docker or Podman name, a Compose service
// ("oip-gpu", or its container name "project-oip-gpu-1"), a nerdctl name,
// or Kubernetes "namespace/pod/container", "namespace/pod" (a pod with
// one container), a pod's or a container's name alone. A name whose
// container was restarted under a new id finds the one running now.
// A name is tried before an id prefix ("cafe" is both), as docker does.
// Ambiguity and absence are one-line errors listing what matched.
func Resolve(ctx context.Context, name string, src Sources) (Container, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		return Container{}, errors.New("no container given: pass its name or id, as `docker ps` or `kubectl get pods` shows it")
	}
	// As docker does: a full id, then an exact name, then an id prefix.
	lower := strings.ToLower(name)
	if len(lower) == 64 && isIDPrefix(lower) {
		return Find(lower, src.Roots)
	}
	if strings.ContainsAny(name, "\n\x00") || len(name) > 512 {
		return Container{}, fmt.Errorf("container name %q is not a name: give the name or id `docker ps` or `kubectl get pods` shows", name)
	}
	named, listErr := src.List(ctx)
	var matches []Named
	for _, n := range named {
		if n.Matches(name) {
			matches = append(matches, n)
		}
	}
	if len(matches) == 0 {
		msg := fmt.Sprintf("no container named %q", name)
		if isIDPrefix(lower) {
			c, err := Find(lower, src.Roots)
			if err == nil || strings.Contains(err.Error(), "ambiguous") {
				return c, err
			}
			msg = fmt.Sprintf("no container with an id starting or named %q", name)
		}
		msg += fmt.Sprintf(" (%d containers known to %s)", len(named), src.describe())
		if listErr != nil {
			msg += "; some metadata could not be read: " + oneLine(listErr)
		}
		return Container{}, errors.New(msg + ": check the name with `docker ps`, `podman ps` or `kubectl get pods -o wide`, or give the container id")
	}
	cgroups, err := scan(src.Roots)
	if err != nil {
		return Container{}, err
	}
	var running []Named
	for _, n := range matches {
		if cgroups[n.ID] != nil {
			running = append(running, n)
		}
	}
	list := func(ns []Named) string {
		var s []string
		for _, n := range ns {
			s = append(s, n.String())
		}
		slices.Sort(s)
		return strings.Join(s, ", ")
	}
	switch len(running) {
	case 0:
		return Container{}, fmt.Errorf("container %q is not running: %s has no cgroup under %s; start it, or wait for it to start", name, list(matches), strings.Join(nonEmpty(src.Roots.V2, src.Roots.V1Memory), " or "))
	case 1:
		c := *cgroups[running[0].ID]
		c.Name, c.Runtime = running[0].Name, running[0].Runtime
		return c, nil
	}
	return Container{}, fmt.Errorf("container name %q is ambiguous: it matches %s; give the full name (namespace/pod/container in Kubernetes) or the id", name, list(running))
}

// describe lists the sources present on this host, for messages.
func (s Sources) describe() string {
	var present []string
	note := func(what string, dirs []string) {
		for _, d := range dirs {
			if _, err := os.Stat(d); err == nil {
				present = append(present, what+" "+d)
			}
		}
	}
	note("CRI", s.CRI)
	note("docker", s.Docker)
	note("containers/storage", s.Storage)
	note("nerdctl", s.Nerdctl)
	note("kubelet", s.PodLogs)
	if len(present) == 0 {
		return "no runtime: no docker, podman, containerd or kubelet metadata on this host"
	}
	return strings.Join(present, ", ")
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }

// dockerConfig is the part of docker's containers/<id>/config.v2.json
// read here (the format of docker 1.10 to 28).
type dockerConfig struct {
	ID     string
	Name   string // "/name"
	Config struct {
		Labels map[string]string
	}
}

// listDocker reads a docker data root.
func listDocker(root string) ([]Named, error) {
	files, _ := filepath.Glob(filepath.Join(root, "containers", "*", "config.v2.json"))
	var out []Named
	var errs []error
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue // removed while we read
		}
		var c dockerConfig
		if err := json.Unmarshal(data, &c); err != nil {
			errs = append(errs, fmt.Errorf("%s: %v", f, err))
			continue
		}
		if IDOf(c.ID) == "" {
			continue
		}
		n := Named{ID: c.ID, Runtime: "docker", Name: strings.TrimPrefix(c.Name, "/"), Labels: c.Config.Labels}
		// Compose: the service name, and project-service, answer too.
		// `docker compose run` containers (oneoff) are not the service.
		if svc := c.Config.Labels["com.docker.compose.service"]; svc != "" && c.Config.Labels["com.docker.compose.oneoff"] != "True" {
			n.Aliases = append(n.Aliases, svc)
			if p := c.Config.Labels["com.docker.compose.project"]; p != "" {
				n.Aliases = append(n.Aliases, p+"-"+svc, p+"_"+svc)
			}
		}
		out = append(out, n)
	}
	return out, errors.Join(errs...)
}

// storageContainer is an entry of containers/storage's containers.json
// (podman, buildah, cri-o; the format of containers/storage 1.x).
type storageContainer struct {
	ID       string   `json:"id"`
	Names    []string `json:"names"`
	Metadata string   `json:"metadata"`
}

// listStorage reads a containers/storage root: every
// <driver>-containers/containers.json.
func listStorage(root string) ([]Named, error) {
	files, _ := filepath.Glob(filepath.Join(root, "*-containers", "containers.json"))
	var out []Named
	var errs []error
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var cs []storageContainer
		if err := json.Unmarshal(data, &cs); err != nil {
			errs = append(errs, fmt.Errorf("%s: %v", f, err))
			continue
		}
		for _, c := range cs {
			if IDOf(c.ID) == "" || len(c.Names) == 0 {
				continue
			}
			// cri-o names its containers k8s_<container>_<pod>_<ns>_<uid>_<attempt>
			// here; the kubelet's links name them better.
			if strings.HasPrefix(c.Names[0], "k8s_") {
				continue
			}
			out = append(out, Named{ID: c.ID, Runtime: "podman", Name: c.Names[0], Aliases: c.Names[1:]})
		}
	}
	return out, errors.Join(errs...)
}

// listNerdctl reads nerdctl's <root>/<address hash>/names/<namespace>/<name>
// files, each holding a container id.
func listNerdctl(root string) ([]Named, error) {
	files, _ := filepath.Glob(filepath.Join(root, "*", "names", "*", "*"))
	var out []Named
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		id := strings.TrimSpace(string(data))
		if IDOf(id) == "" {
			continue
		}
		out = append(out, Named{ID: id, Runtime: "nerdctl", Name: filepath.Base(f)})
	}
	return out, nil
}

// listPodLogs reads the kubelet's /var/log/containers: a link
// <pod>_<namespace>_<container>-<id>.log per container it started (the
// last exited one of each container is kept too, until collected).
func listPodLogs(dir string) ([]Named, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil
	}
	var out []Named
	for _, e := range entries {
		base, ok := strings.CutSuffix(e.Name(), ".log")
		if !ok || len(base) < 66 || base[len(base)-65] != '-' {
			continue
		}
		id := base[len(base)-64:]
		parts := strings.Split(base[:len(base)-65], "_")
		if IDOf(id) == "" || len(parts) != 3 {
			continue
		}
		pod, ns, ctr := parts[0], parts[1], parts[2]
		n := Named{ID: id, Runtime: "kubernetes", Namespace: ns, Pod: pod, Container: ctr}
		if target, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil {
			// /var/log/pods/<ns>_<pod>_<uid>/<container>/<attempt>.log
			if f := strings.Split(filepath.Base(filepath.Dir(filepath.Dir(target))), "_"); len(f) == 3 && f[0] == ns && f[1] == pod {
				n.PodUID = f[2]
			}
		}
		out = append(out, kubeNamed(n))
	}
	return out, nil
}

// kubeNamed fills a Kubernetes container's name and aliases.
func kubeNamed(n Named) Named {
	n.Name = n.Namespace + "/" + n.Pod + "/" + n.Container
	n.Aliases = []string{n.Namespace + "/" + n.Pod, n.Pod, n.Container}
	return n
}
