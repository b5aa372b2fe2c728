package dump

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// hsFakeInspector is an in-process stand-in for Node's inspector: its
// /json/list says list, and its websocket at /session answers
// HeapProfiler commands, streaming chunks before the answer to
// takeHeapSnapshot, with noise in between (an unrelated event, an answer
// to an id never sent).
type hsFakeInspector struct {
	list    string   // the /json/list body
	chunks  []string // the snapshot, in chunks
	failCmd string   // a method answered with an error
	methods chan string
}

func (f *hsFakeInspector) start(t *testing.T) netip.AddrPort {
	t.Helper()
	f.methods = make(chan string, 100)
	srv := httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(srv.Close)
	return netip.MustParseAddrPort(strings.TrimPrefix(srv.URL, "http://"))
}

func (f *hsFakeInspector) serve(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/json/list":
		fmt.Fprint(w, f.list)
		return
	case "/session":
	default:
		http.NotFound(w, r)
		return
	}
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer ws.CloseNow()
	ctx := r.Context()
	send := func(v any) error {
		b, _ := json.Marshal(v)
		return ws.Write(ctx, websocket.MessageText, b)
	}
	for {
		_, data, err := ws.Read(ctx)
		if err != nil {
			return
		}
		var m struct {
			ID     int64           `json:"id"`
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
		}
		if err := json.Unmarshal(data, &m); err != nil {
			return
		}
		f.methods <- m.Method
		if m.Method == f.failCmd {
			if send(map[string]any{"id": m.ID, "error": map[string]any{"code": -32000, "message": "no way"}}) != nil {
				return
			}
			continue
		}
		if m.Method == "HeapProfiler.takeHeapSnapshot" {
			if !bytes.Contains(m.Params, []byte(`"reportProgress":true`)) {
				return
			}
			_ = send(map[string]any{"id": m.ID + 1000, "result": map[string]any{}})
			_ = send(map[string]any{"method": "Runtime.consoleAPICalled", "params": map[string]any{"type": "log"}})
			for i := range 3 {
				_ = send(map[string]any{"method": "HeapProfiler.reportHeapSnapshotProgress", "params": map[string]any{"done": i, "total": 2}})
			}
			for _, c := range f.chunks {
				if send(map[string]any{"method": "HeapProfiler.addHeapSnapshotChunk", "params": map[string]any{"chunk": c}}) != nil {
					return
				}
			}
		}
		if send(map[string]any{"id": m.ID, "result": map[string]any{}}) != nil {
			return
		}
	}
}

// hsFailingWriter fails every write.
type hsFailingWriter struct{}

func (hsFailingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestHeapSnapshotStreamsChunks(t *testing.T) {
	f := &hsFakeInspector{chunks: []string{`{"snapshot":{"meta":`, "{}},\n\"nodes\":[\"\\u00e9\"", "]}"}}
	addr := f.start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var out bytes.Buffer
	var progress [][2]int
	n, err := snapshotThroughInspector(ctx, &netnsDialer{}, listenSocket{Addr: addr}, "/session", &out, func(done, total int) {
		progress = append(progress, [2]int{done, total})
	})
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join(f.chunks, "")
	if out.String() != want || n != int64(len(want)) {
		t.Errorf("wrote %d bytes %q, want %q", n, out.String(), want)
	}
	if !json.Valid(out.Bytes()) {
		t.Errorf("output is not JSON: %q", out.String())
	}
	if !slices.Equal(progress, [][2]int{{0, 2}, {1, 2}, {2, 2}}) {
		t.Errorf("progress %v", progress)
	}
	var methods []string
	for range 3 {
		methods = append(methods, <-f.methods)
	}
	if !slices.Equal(methods, []string{"HeapProfiler.enable", "HeapProfiler.takeHeapSnapshot", "HeapProfiler.disable"}) {
		t.Errorf("methods %q", methods)
	}
}

func TestHeapSnapshotStreamErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	f := &hsFakeInspector{chunks: []string{"a", "b"}, failCmd: "HeapProfiler.takeHeapSnapshot"}
	addr := f.start(t)
	_, err := snapshotThroughInspector(ctx, &netnsDialer{}, listenSocket{Addr: addr}, "/session", &bytes.Buffer{}, nil)
	if err == nil || !strings.Contains(err.Error(), "HeapProfiler.takeHeapSnapshot: no way (-32000)") {
		t.Errorf("error answer: got %v", err)
	}

	f = &hsFakeInspector{chunks: []string{"a", "b"}}
	addr = f.start(t)
	n, err := snapshotThroughInspector(ctx, &netnsDialer{}, listenSocket{Addr: addr}, "/session", hsFailingWriter{}, nil)
	if err == nil || !strings.Contains(err.Error(), "disk full") || n != 0 {
		t.Errorf("failing writer: got %d bytes, %v", n, err)
	}

	_, err = snapshotThroughInspector(ctx, &netnsDialer{}, listenSocket{Addr: addr}, "/elsewhere", &bytes.Buffer{}, nil)
	if err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("no websocket: got %v", err)
	}
}

func TestHeapSnapshotInspectorTargetPath(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name, list, want, err string
	}{
		{"node", `[{"id":"a5b8","type":"node","webSocketDebuggerUrl":"ws://127.0.0.1:1/a5b8"}]`, "/a5b8", ""},
		// A debugger is attached: Node leaves the URL out.
		{"attached", `[{"id":"a5b8","type":"node"}]`, "/a5b8", ""},
		{"empty", `[]`, "", "no target"},
		{"not json", `ok`, "", "not an inspector's target list"},
		{"bad id", `[{"id":"../x","type":"node"}]`, "", "no target"},
		{"not node", `[{"id":"a5b8","name":"a REST API's list"}]`, "", "no target"},
	} {
		f := &hsFakeInspector{list: tc.list}
		addr := f.start(t)
		got, err := inspectorTargetPath(ctx, &netnsDialer{}, addr)
		if got != tc.want || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s: got %q, %v; want %q, error with %q", tc.name, got, err, tc.want, tc.err)
		}
	}
}
