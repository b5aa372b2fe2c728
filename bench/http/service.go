package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// serviceDir is the reference service, relative to the repository root.
const serviceDir = "examples/leaky-service"

// freePort returns a loopback TCP port nothing listens on right now. The
// machine is shared: fixed ports would meet other developers' services.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// nodeEnv is the environment for a node process: the benchmark's own, less
// the variables the service reads, plus set.
func nodeEnv(set ...string) []string {
	own := map[string]bool{}
	for _, kv := range set {
		k, _, _ := strings.Cut(kv, "=")
		own[k] = true
	}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "PORT", "PEER_PORT", "SYNC_INTERVAL_MS", "SYNC_RETAIN_BYTES", "VOICE_RETAIN_BYTES",
			"CLASSIC_MIDDLEWARE", "HTTPS", "TLS_CERT", "TLS_KEY", "NODE_OPTIONS":
			continue
		}
		if !own[k] {
			env = append(env, kv)
		}
	}
	return append(env, set...)
}

// service is one running node process: the reference service or its peer.
type service struct {
	p     *proc
	port  int
	https bool
	out   *syncBuffer
}

func (s *service) pid() int { return s.p.pid() }

func (s *service) url() string {
	scheme := "http"
	if s.https {
		scheme = "https"
	}
	return fmt.Sprintf("%s://127.0.0.1:%d", scheme, s.port)
}

// startNode starts one of the service's scripts pinned to serviceCPU and
// waits until it accepts connections.
func (b *bench) startNode(script, what string, https bool, env ...string) (*service, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &service{port: port, https: https, out: newSyncBuffer("")}
	portVar := "PORT"
	if script == "peer.js" {
		portVar = "PEER_PORT"
	}
	argv := []string{b.node, filepath.Join(serviceDir, script)}
	if c, ok := b.corpus[script]; ok {
		argv = c.argv
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = b.repo
	cmd.Env = nodeEnv(append(env, portVar+"="+strconv.Itoa(port))...)
	cmd.Stdout = s.out
	cmd.Stderr = s.out
	if s.p, err = b.kids.spawn(cmd, serviceCPU, what); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(startTimeout)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return s, nil
		}
		if s.p.done() {
			return nil, fmt.Errorf("%s exited before listening (%v): %s", what, s.p.waitErr, s.out)
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("%s did not listen on port %d within %s: %s", what, port, startTimeout, s.out)
		}
		if b.interrupted() {
			s.stop()
			return nil, errInterrupted
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startService starts the reference service as the arm wants it.
func (b *bench) startService(a arm) (*service, error) {
	if a.svc != "" {
		return b.startCorpus(a.svc)
	}
	env := []string{"PEER_PORT=" + strconv.Itoa(b.peer.port), "SYNC_INTERVAL_MS=2000"}
	if a.classic {
		env = append(env, "CLASSIC_MIDDLEWARE=1")
	}
	if a.https {
		env = append(env, "HTTPS=1", "TLS_CERT="+b.cert, "TLS_KEY="+b.key)
	}
	return b.startNode("server.js", "the service", a.https, env...)
}

// stop ends the node process (it exits on SIGTERM) and reaps it.
func (s *service) stop() {
	s.p.stop(syscall.SIGTERM, 5*time.Second)
}

// makeCert writes a self-signed certificate and key for 127.0.0.1 into
// dir, for the HTTPS arms.
func makeCert(openssl, dir string) (cert, key string, err error) {
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	cmd := exec.Command(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
		"-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("making a certificate with openssl: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return cert, key, nil
}

// corpusService is a service of the accuracy corpus the benchmark runs
// besides the reference service, with its own wrk script.
type corpusService struct {
	argv []string
	lua  string // path of its wrk script
}

// corpusLua is the wrk script of the corpus services: GET /churn and GET
// /ping in turn (neither keeps anything, so a long run does not grow).
const corpusLua = `local n = 0
request = function()
  n = n + 1
  if n % 2 == 0 then
    return wrk.format("GET", "/churn")
  end
  return wrk.format("GET", "/ping")
end
` + doneLua

// setupCorpus builds and describes the corpus services the selected arms
// run.
func (b *bench) setupCorpus() error {
	b.corpus = map[string]corpusService{}
	lua := filepath.Join(b.dir, "corpus.lua")
	if err := os.WriteFile(lua, []byte(corpusLua), 0o600); err != nil {
		return err
	}
	if b.needs(func(a arm) bool { return a.svc == "go-churn" }) {
		bin := filepath.Join(b.dir, "go-churn")
		cmd := exec.Command("go", "build", "-o", bin, ".")
		cmd.Dir = filepath.Join(b.repo, "testdata/corpus/go-churn")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("building testdata/corpus/go-churn: %v: %s", err, out)
		}
		b.corpus["go-churn"] = corpusService{argv: []string{bin}, lua: lua}
	}
	if b.needs(func(a arm) bool { return a.svc == "node-plain" }) {
		b.corpus["node-plain"] = corpusService{argv: []string{b.node, "bench/http/plain.js"}, lua: lua}
	}
	if b.needs(func(a arm) bool { return a.svc == "py-arena" }) {
		python, err := exec.LookPath("python3")
		if err != nil {
			return fmt.Errorf("the Python arms need python3: %w", err)
		}
		b.corpus["py-arena"] = corpusService{argv: []string{python, "testdata/corpus/py-arena/server.py"}, lua: lua}
	}
	return nil
}

// startCorpus starts a corpus service.
func (b *bench) startCorpus(name string) (*service, error) {
	return b.startNode(name, "the "+name+" service", false)
}
