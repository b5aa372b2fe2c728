package accuracy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
)

// Route is one kind of request a load sends, and the category it belongs to.
type Route struct {
	Category    string
	Method      string             // GET when empty
	Path        func(i int) string // the i-th request's path (i from 0)
	Body        []byte
	ContentType string
}

// Job is a number of requests to one route.
type Job struct {
	Route Route
	Count int
}

// Load sends every job's requests to base (http://127.0.0.1:PORT) over
// conns keep-alive connections, interleaved in a fixed pseudo-random order,
// and returns the requests answered 2xx per category. Any failure (a
// transport error, a non-2xx status) stops it with an error: the counts must
// be exact. It closes its connections before it returns.
func Load(ctx context.Context, base string, jobs []Job, conns int) (map[string]int64, error) {
	type req struct {
		route Route
		i     int
	}
	var all []req
	for _, j := range jobs {
		for i := range j.Count {
			all = append(all, req{j.Route, i})
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(all), func(a, b int) { all[a], all[b] = all[b], all[a] })

	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	work := make(chan req)
	var (
		mu    sync.Mutex
		done  = map[string]int64{}
		first error
		wg    sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		if first == nil {
			first = err
		}
		mu.Unlock()
		cancel()
	}
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range work {
				if err := send(ctx, client, base, r.route, r.i); err != nil {
					fail(err)
					continue
				}
				mu.Lock()
				done[r.route.Category]++
				mu.Unlock()
			}
		}()
	}
feed:
	for _, r := range all {
		select {
		case work <- r:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	return done, first
}

func send(ctx context.Context, client *http.Client, base string, r Route, i int) error {
	method := r.Method
	if method == "" {
		method = http.MethodGet
	}
	var body io.Reader
	if r.Body != nil {
		body = bytes.NewReader(r.Body)
	}
	path := r.Path(i)
	req, err := http.NewRequestWithContext(ctx, method, base+path, body)
	if err != nil {
		return err
	}
	if r.ContentType != "" {
		req.Header.Set("Content-Type", r.ContentType)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: status %d", method, path, resp.StatusCode)
	}
	return nil
}

// Fixed returns a Path that always gives p.
func Fixed(p string) func(int) string { return func(int) string { return p } }
