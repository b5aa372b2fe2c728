package accuracy

import (
	"fmt"
	"strings"
)

// Service is one corpus service and the load the harness gives it.
type Service struct {
	Name string
	// Dir is the service's directory, relative to the repository root; it
	// holds categories.yaml unless Config says otherwise.
	Dir    string
	Config string // categories.yaml's path relative to the root ("" = Dir/categories.yaml)
	// Command starts the service in Dir; GoBuild builds Dir as a Go main
	// package first and runs the binary.
	Command []string
	GoBuild bool
	GoTags  string // build tags for GoBuild
	// MemdiagArgs are flags added to memdiag's command line (a mode).
	MemdiagArgs []string
	Env         []string
	// Helpers are processes of their own the service talks to (an
	// upstream, a peer), started first, in Dir.
	Helpers []Helper
	// HelperPort is the port the helpers listen on as Env, Helpers' Env
	// and the categories file name it; the harness moves it to a port the
	// kernel picks (writing a copy of the categories file), so two runs on
	// one machine do not collide.
	HelperPort int
	// NPM names the directories (relative to the root) whose node_modules
	// must be installed (npm ci).
	NPM []string
	// Warmup runs before memdiag attaches; Load between truth0 and truth1.
	Warmup, Load []Job
	Conns        int
	// Leaking lists the categories that retain memory.
	Leaking []string
	// OpsSlack: see Expect.
	OpsSlack map[string]int64
	// CI: part of the default subset (go test -tags privileged ./accuracy):
	// the services whose verdict memdiag gets right today (ACCURACY.md says
	// which fail and why; make accuracy runs them all).
	CI bool
}

// Helper is a process a service needs.
type Helper struct {
	Command []string
	Env     []string
}

// Expect derives what the run must show from the load it sent.
func (s *Service) Expect(sent map[string]int64) Expect {
	e := Expect{Sent: map[string]int64{}, Leaking: s.Leaking, OpsSlack: s.OpsSlack}
	for k, v := range sent {
		e.Sent[k] = v
	}
	return e
}

func get(cat, path string) Route { return Route{Category: cat, Path: Fixed(path)} }

func jobs(routes []Route, counts ...int) []Job {
	var js []Job
	for i, r := range routes {
		if counts[i] > 0 {
			js = append(js, Job{Route: r, Count: counts[i]})
		}
	}
	return js
}

// Ports the helpers listen on as the services' categories.yaml name them
// (the harness moves them to free ports: Service.HelperPort).
const (
	referencePeerPort = 47651
	asyncUpstreamPort = 47652
)

// Services is the corpus, in the order the harness runs it.
func Services() []*Service {
	session := []Route{
		{Category: "login", Method: "POST", Path: Fixed("/login"), Body: []byte(`{}`), ContentType: "application/json"},
		get("feed", "/api/feed"),
		get("health", "/health"),
	}
	buffers := []Route{get("keep", "/keep"), get("churn", "/churn"), get("ping", "/ping")}
	async := []Route{get("enrich", "/enrich"), get("lookup", "/lookup")}
	churn := []Route{get("churn", "/churn"), get("leak", "/leak"), get("ping", "/ping")}
	arena := []Route{get("leak", "/leak"), get("churn", "/churn"), get("ping", "/ping")}
	free := []Route{
		{Category: "item", Path: func(i int) string { return fmt.Sprintf("/item/%d", i%512) }},
		get("render", "/render"), get("blob", "/blob"), get("ping", "/ping"),
	}
	ref := []Route{
		{Category: "api_records", Path: func(i int) string { return fmt.Sprintf("/api/records?limit=%d", 50+i%150) }},
		{Category: "api_voice", Path: func(i int) string { return fmt.Sprintf("/api/voice/%d", i) }},
		{Category: "api_alfred", Path: func(i int) string { return fmt.Sprintf("/api/alfred/q%d", i) }},
		{Category: "graphql_query", Method: "POST", Path: Fixed("/graphql"), Body: []byte(`{"query":"{ records { id name } }"}`), ContentType: "application/json"},
		{Category: "static_media", Path: func(i int) string { return fmt.Sprintf("/media/img%d.png", i%20) }},
	}
	node := []string{"node", "--expose-gc", "server.js"}
	// Node.js services run with V8's heap sampling, which is opt-in.
	v8 := []string{"--heap-sampling", "v8"}
	goChurn := &Service{
		Name: "go-churn", Dir: "testdata/corpus/go-churn", GoBuild: true,
		Warmup:  jobs(churn, 300, 20, 200),
		Load:    jobs(churn, 2000, 200, 1000),
		Conns:   4,
		Leaking: []string{"leak"},
	}
	nodeBuffers := &Service{
		Name: "node-buffers", Dir: "testdata/corpus/node-buffers", Command: node, MemdiagArgs: v8,
		Warmup:  jobs(buffers, 20, 300, 200),
		Load:    jobs(buffers, 120, 600, 1000),
		Conns:   4,
		Leaking: []string{"keep"},
	}
	pyArena := &Service{
		Name: "py-arena", Dir: "testdata/corpus/py-arena", Command: []string{"python3", "server.py"},
		Warmup:  jobs(arena, 50, 200, 100),
		Load:    jobs(arena, 500, 1000, 1000),
		Conns:   4,
		Leaking: []string{"leak"},
	}
	reference := &Service{
		Name: "reference", Dir: "examples/leaky-service", Config: "testdata/corpus/reference/categories.yaml",
		Command: node, NPM: []string{"examples/leaky-service"}, MemdiagArgs: v8,
		Env:        []string{fmt.Sprintf("PEER_PORT=%d", referencePeerPort), "SYNC_INTERVAL_MS=500"},
		HelperPort: referencePeerPort,
		Helpers:    []Helper{{Command: []string{"node", "peer.js"}, Env: []string{fmt.Sprintf("PEER_PORT=%d", referencePeerPort)}}},
		Warmup:     jobs(ref, 500, 200, 200, 200, 200),
		Load:       jobs(ref, 3000, 3000, 500, 500, 500),
		Conns:      4,
		Leaking:    []string{"api_voice", "gun_sync"},
		// Cycles run on the service's timer: one can start between attach
		// and truth0, or between truth1 and memdiag's stop.
		OpsSlack: map[string]int64{"gun_sync": 2},
	}
	nodeSession := &Service{
		Name: "node-session", Dir: "testdata/corpus/node-session", Command: node, CI: true, MemdiagArgs: v8,
		NPM:     []string{"testdata/corpus/node-session"},
		Warmup:  jobs(session, 300, 100, 500),
		Load:    jobs(session, 1500, 300, 2000),
		Conns:   4,
		Leaking: []string{"login"},
	}
	return []*Service{
		nodeSession,
		variant(nodeSession, "node-session-default", func(v *Service) {
			// memdiag's default mode (no V8 sampler: the JS heap is the
			// mapping estimate of V8's own pages), as a user's first run.
			v.MemdiagArgs, v.CI = nil, false
		}),
		nodeBuffers,
		variant(nodeBuffers, "node-buffers-exact", func(v *Service) {
			// The kept Buffers come from the malloc heap, reusing space
			// the churning route freed: only exact ArrayBuffer counting
			// sees which route keeps them.
			v.MemdiagArgs, v.CI = []string{"--exact-external", "--heap-sampling", "v8"}, true
		}),
		{
			Name: "node-async", Dir: "testdata/corpus/node-async", Command: node, MemdiagArgs: v8,
			Env:        []string{fmt.Sprintf("UPSTREAM_PORT=%d", asyncUpstreamPort)},
			HelperPort: asyncUpstreamPort,
			Helpers:    []Helper{{Command: []string{"node", "upstream.js"}, Env: []string{fmt.Sprintf("UPSTREAM_PORT=%d", asyncUpstreamPort)}}},
			Warmup:     jobs(async, 200, 200),
			Load:       jobs(async, 1000, 1000),
			Conns:      4,
			Leaking:    []string{"enrich"},
		},
		goChurn,
		variant(goChurn, "go-pprof", func(v *Service) {
			// Built with net/http/pprof linked, as many Go services are: the
			// Go memory profiler is on, and memdiag joins its samples.
			v.GoTags, v.CI = "pprof", true
		}),
		pyArena,
		variant(pyArena, "py-arena-native", func(v *Service) {
			// With --native-heap: Python objects over 512 B come from
			// glibc's malloc, in arenas that existed before attach.
			v.MemdiagArgs, v.CI = []string{"--native-heap"}, true
		}),
		{
			Name: "leak-free", Dir: "testdata/corpus/leak-free", Command: node, CI: true, MemdiagArgs: v8,
			Warmup: jobs(free, 1024, 100, 100, 100),
			Load:   jobs(free, 2000, 300, 500, 1000),
			Conns:  4,
		},
		reference,
		variant(reference, "reference-exact", func(v *Service) {
			// With --exact-external: the Buffers api_voice keeps come from
			// the malloc heap, where the mapping estimate cannot see them;
			// exact mode counts them, and replaces (never adds to) the
			// native estimate.
			v.MemdiagArgs = []string{"--exact-external", "--heap-sampling", "v8"}
		}),
		variant(reference, "reference-native", func(v *Service) {
			// With --native-heap: malloc followed, Buffers among the rest.
			v.MemdiagArgs = []string{"--native-heap", "--heap-sampling", "v8"}
		}),
	}
}

// variant is a copy of base named name, changed by mod.
func variant(base *Service, name string, mod func(*Service)) *Service {
	v := *base
	v.Name = name
	mod(&v)
	return &v
}

// Select picks services by the MEMDIAG_ACCURACY value: "" for the CI
// subset, "all", or a comma-separated list of names.
func Select(all []*Service, which string) ([]*Service, error) {
	var out []*Service
	switch which {
	case "":
		for _, s := range all {
			if s.CI {
				out = append(out, s)
			}
		}
	case "all":
		out = all
	default:
		byName := map[string]*Service{}
		var names []string
		for _, s := range all {
			byName[s.Name] = s
			names = append(names, s.Name)
		}
		for _, n := range strings.Split(which, ",") {
			s, ok := byName[strings.TrimSpace(n)]
			if !ok {
				return nil, fmt.Errorf("MEMDIAG_ACCURACY: no corpus service %q: use all, or some of %s", n, strings.Join(names, ","))
			}
			out = append(out, s)
		}
	}
	return out, nil
}
