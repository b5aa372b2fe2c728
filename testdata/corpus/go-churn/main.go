// Command go-churn is a memdiag accuracy corpus service: a Go net/http
// server where GET /churn allocates, writes and drops 1 MiB per request
// and GET /leak keeps 256 KiB per request, next to a cheap GET /ping.
//
// Categories (categories.yaml) and their truth:
//
//	churn  GET /churn  retains nothing
//	leak   GET /leak   retains one 256 KiB []byte per request
//	ping   GET /ping   retains nothing
//
// Env: PORT (required), TRUTH_FILE (SIGUSR2 writes the truth there,
// atomically). Prints "listening <port>" when ready.
package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
)

type category struct {
	Ops           int64 `json:"ops"`
	RetainedBytes int64 `json:"retained_bytes"`
}

var (
	mu   sync.Mutex
	ops  = map[string]int64{}
	kept [][]byte
	sink byte // keeps the churned buffers' writes observable
)

func count(name string) {
	mu.Lock()
	ops[name]++
	mu.Unlock()
}

func fill(b []byte, seed int) []byte {
	for i := range b {
		b[i] = byte(seed + i) // written: every page is touched
	}
	return b
}

// truth: a kept []byte costs its capacity (the slice headers in kept are
// 24 bytes each, not counted: under 0.01% of 256 KiB). self_check is the
// runtime's own count of live heap after two forced GCs.
func writeTruth(path string) error {
	mu.Lock()
	var leaked int64
	for _, b := range kept {
		leaked += int64(cap(b))
	}
	doc := map[string]any{
		"categories": map[string]category{
			"churn": {Ops: ops["churn"]},
			"leak":  {Ops: ops["leak"], RetainedBytes: leaked},
			"ping":  {Ops: ops["ping"]},
		},
	}
	mu.Unlock()
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	doc["self_check"] = map[string]any{
		"method":     "Go runtime.MemStats.HeapAlloc after two runtime.GC()",
		"bytes":      ms.HeapAlloc,
		"heap_alloc": ms.HeapAlloc,
		"heap_sys":   ms.HeapSys,
	}
	data, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(path), fmt.Sprintf(".%s.%d.tmp", filepath.Base(path), os.Getpid()))
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func main() {
	port, err := strconv.Atoi(os.Getenv("PORT"))
	if err != nil || port <= 0 {
		fmt.Fprintln(os.Stderr, "go-churn: set PORT to the port to listen on")
		os.Exit(2)
	}
	http.HandleFunc("/churn", func(w http.ResponseWriter, r *http.Request) {
		count("churn")
		b := fill(make([]byte, 1<<20), int(sink))
		mu.Lock()
		sink ^= b[len(b)-1]
		mu.Unlock()
		fmt.Fprintln(w, "churned")
	})
	http.HandleFunc("/leak", func(w http.ResponseWriter, r *http.Request) {
		b := fill(make([]byte, 256<<10), 1)
		mu.Lock()
		ops["leak"]++
		kept = append(kept, b)
		n := len(kept)
		mu.Unlock()
		fmt.Fprintln(w, "kept", n)
	})
	http.HandleFunc("/ping", func(w http.ResponseWriter, r *http.Request) {
		count("ping")
		fmt.Fprintln(w, "pong")
	})
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGUSR2, syscall.SIGTERM)
	go func() {
		for s := range sigs {
			if s == syscall.SIGTERM {
				os.Exit(0)
			}
			path := os.Getenv("TRUTH_FILE")
			if path == "" {
				fmt.Fprintln(os.Stderr, "go-churn: SIGUSR2 needs TRUTH_FILE set to where the truth goes")
				continue
			}
			if err := writeTruth(path); err != nil {
				fmt.Fprintln(os.Stderr, "go-churn: writing the truth:", err)
			}
		}
	}()
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		fmt.Fprintln(os.Stderr, "go-churn:", err)
		os.Exit(1)
	}
	fmt.Printf("listening %d\n", port)
	if err := http.Serve(ln, nil); err != nil {
		fmt.Fprintln(os.Stderr, "go-churn:", err)
		os.Exit(1)
	}
}
