// Command loadgen sends a bounded mix of requests to the reference service
// (examples/leaky-service) on loopback, for memdiag's demo.
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

func main() {
	base := flag.String("url", "http://127.0.0.1:3000", "service base URL (loopback only)")
	seconds := flag.Int("seconds", 20, "how long to send")
	conns := flag.Int("conns", 8, "concurrent keep-alive connections")
	flag.Parse()
	u, err := url.Parse(*base)
	if err != nil || (u.Hostname() != "127.0.0.1" && u.Hostname() != "localhost" && u.Hostname() != "::1") {
		fmt.Fprintln(os.Stderr, "loadgen: --url must be a loopback address")
		os.Exit(2)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: *conns}}
	stop := time.Now().Add(time.Duration(*seconds) * time.Second)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		sent int
	)
	for w := 0; w < *conns; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; time.Now().Before(stop); i++ {
				var req *http.Request
				switch i % 5 {
				case 0:
					req, _ = http.NewRequest("GET", fmt.Sprintf("%s/api/records?limit=%d", *base, 10+i%90), nil)
				case 1:
					req, _ = http.NewRequest("GET", fmt.Sprintf("%s/api/voice/%d", *base, w*100000+i), nil)
				case 2:
					req, _ = http.NewRequest("GET", *base+"/api/alfred/ask", nil)
				case 3:
					req, _ = http.NewRequest("POST", *base+"/graphql", strings.NewReader(`{"query":"{ records { id } }"}`))
					req.Header.Set("Content-Type", "application/json")
				default:
					req, _ = http.NewRequest("GET", *base+"/media/logo.png", nil)
				}
				resp, err := client.Do(req)
				if err != nil {
					fmt.Fprintln(os.Stderr, "loadgen:", err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				sent++
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	fmt.Printf("loadgen: %d requests in %ds\n", sent, *seconds)
}
