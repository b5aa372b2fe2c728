//go:build privileged

package report_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto"
	"github.com/chromedp/cdproto/cdp"
	jsonv2 "github.com/chromedp/cdproto/cdp/jsonv2"
	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/cdproto/target"
	"github.com/coder/websocket"

	"github.com/memdiag/memdiag/report"
)

// chromiumDeadline bounds every wait on the browser.
const chromiumDeadline = 30 * time.Second

// screenshotDir is where the test leaves pictures of the report, one per
// width, relative to this package's directory (out/ is ignored by git).
var screenshotDir = filepath.Join("..", "out", "test-artifacts")

// widths are the viewport widths the report is checked at: a laptop, and a
// phone held upright.
var widths = []int64{1280, 420}

// TestHTMLReportInChromium opens the HTML report from a file:// URL in a
// real headless Chromium driven over the DevTools protocol, at each of
// widths, and checks that it loads without errors or any network request,
// that the charts hold the expected categories, and that nothing is cut off
// or pushes the page wider than the viewport. It saves a screenshot per width
// as a test artifact. Then it does the same with an empty report, which shows
// messages, not charts, and with one whose values are as wide as they get.
func TestHTMLReportInChromium(t *testing.T) {
	b := newBrowserPage(t)
	r := sampleHTMLReport()
	r.Target.Cmdline = []string{"node", "--max-old-space-size=4096", "server.js", "--title", "records service"}
	for _, w := range widths {
		b.resize(w)
		dom := b.open("report.html", r)
		want := append(slices.Clone(htmlTop8), "other")
		if !slices.Equal(dom.Timeline, want) {
			t.Errorf("%dpx: timeline chart categories = %q, want %q", w, dom.Timeline, want)
		}
		if !slices.Equal(dom.Categories, want) {
			t.Errorf("%dpx: categories chart = %q, want %q", w, dom.Categories, want)
		}
		if len(dom.Invisible) > 0 {
			t.Errorf("%dpx: series drawn with an empty box: %q", w, dom.Invisible)
		}
		if dom.Markers != len(r.Markers) {
			t.Errorf("%dpx: timeline markers = %d, want %d", w, dom.Markers, len(r.Markers))
		}
		if dom.Hostile != scriptName {
			t.Errorf("%dpx: hostile category shows as %q, want the text %q", w, dom.Hostile, scriptName)
		}
		if dom.Culprit != "GET /api/records" {
			t.Errorf("%dpx: culprit callout names %q", w, dom.Culprit)
		}
		if want := "node --max-old-space-size=4096 server.js --title 'records service'"; dom.Cmdline != want {
			t.Errorf("%dpx: command line shows as %q, want %q", w, dom.Cmdline, want)
		}
		if len(dom.Cards) != 5 {
			t.Errorf("%dpx: %d cards, want 5: %q", w, len(dom.Cards), dom.Cards)
		}
		// The trend of the run's second half (the whole run averages +110).
		if !slices.Contains(dom.Cards, "+113 MiB/min") {
			t.Errorf("%dpx: no growth-rate card reading +113 MiB/min in %q", w, dom.Cards)
		}

		shot := b.screenshot()
		if err := os.MkdirAll(screenshotDir, 0o755); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(screenshotDir, fmt.Sprintf("html-report-%d.png", w))
		if err := os.WriteFile(path, shot, 0o644); err != nil {
			t.Fatal(err)
		}
		abs, _ := filepath.Abs(path)
		t.Logf("screenshot at %dpx: %s", w, abs)

		// The widest values a card shows: a loss of tens of GiB a minute.
		wide := sampleHTMLReport()
		wide.DurationSec = 60
		wide.Growth.RSS, wide.Growth.Anon, wide.Growth.File, wide.Growth.Shmem = -(99<<30 + 900<<20), -(99<<30 + 900<<20), -(999 << 20), -(999 << 20)
		wide.Final.RSS, wide.Peak.RSS, wide.Peak.GroupRSS = 999<<30, 999<<30, 1023<<30
		wide.Timeline = nil // no trend: the whole run's rate, and the longest note under it
		if dom := b.open("wide.html", wide); !slices.Contains(dom.Cards, "-99.9 GiB/min") {
			t.Errorf("%dpx: no growth-rate card reading -99.9 GiB/min in %q", w, dom.Cards)
		}

		empty := b.open("empty.html", &report.Report{})
		if len(empty.Timeline)+len(empty.Categories) > 0 || !slices.Equal(empty.Empty, []string{"timeline", "categories"}) {
			t.Errorf("%dpx: empty report: charts %q %q, messages for %q; want messages for both charts", w, empty.Timeline, empty.Categories, empty.Empty)
		}
	}
}

// inspection is what the page's DOM says once loaded.
type inspection struct {
	URL        string   `json:"url"`
	Timeline   []string `json:"timeline"`   // data-category in the timeline chart
	Categories []string `json:"categories"` // data-category in the categories chart
	Empty      []string `json:"empty"`      // charts replaced by a message
	Invisible  []string `json:"invisible"`  // series or bar groups that draw nothing
	Markers    int      `json:"markers"`
	Scripts    int      `json:"scripts"`
	Width      float64  `json:"width"`
	Culprit    string   `json:"culprit"`
	Hostile    string   `json:"hostile"`  // the legend entry of the <script> category
	Cmdline    string   `json:"cmdline"`  // the target's command line in the header
	Cards      []string `json:"cards"`    // each card's value as shown
	Overflow   []string `json:"overflow"` // boxes whose content is cut off or sticks out of the viewport
	Viewport   float64  `json:"viewport"` // the viewport's width
}

const inspectScript = `(() => {
  const names = sel => [...new Set(Array.from(document.querySelectorAll(sel), e => e.getAttribute('data-category')))];
  const invisible = Array.from(document.querySelectorAll('svg[data-chart] [data-category]'))
    .filter(e => { const b = e.getBBox(); return b.width <= 0 && b.height <= 0; })
    .map(e => e.closest('svg').dataset.chart + ':' + e.dataset.category);
  const legend = Array.from(document.querySelectorAll('.legend .nm'), e => e.textContent);
  return {
    url: document.URL,
    timeline: names('svg[data-chart="timeline"] [data-category]'),
    categories: names('svg[data-chart="categories"] [data-category]'),
    empty: Array.from(document.querySelectorAll('[data-chart-empty]'), e => e.dataset.chartEmpty),
    invisible: invisible,
    markers: document.querySelectorAll('svg[data-chart="timeline"] [data-marker]').length,
    scripts: document.scripts.length,
    width: document.documentElement.scrollWidth,
    culprit: (document.querySelector('[data-culprit] .what code') || {}).textContent || '',
    hostile: legend.find(s => s.startsWith('<script>')) || '',
    cmdline: (document.querySelector('[data-cmdline]') || {}).textContent || '',
    cards: Array.from(document.querySelectorAll('.card .value'), e => e.textContent),
    overflow: Array.from(document.querySelectorAll('.card, .card .value, .card .sub, .callout, .panel, header.hero .meta'))
      .filter(e => { const r = e.getBoundingClientRect(); return e.scrollWidth > e.clientWidth + 1 || r.left < 0 || r.right > window.innerWidth + 0.5; })
      .map(e => e.className + ': ' + e.textContent.trim().slice(0, 40)),
    viewport: window.innerWidth,
  };
})()`

// browserPage is one page of a headless Chromium started for the test.
type browserPage struct {
	t     *testing.T
	ctx   context.Context
	dir   string
	conn  *cdpConn
	tab   *cdpSession
	width int64 // the viewport's width
}

// newBrowserPage starts Chromium, or skips the test when it cannot, and
// opens a page with the Page, Runtime, Network and Log domains enabled.
func newBrowserPage(t *testing.T) *browserPage {
	if os.Geteuid() != 0 {
		t.Skip("privileged test: run as root (sudo make test); Chromium runs with --no-sandbox")
	}
	bin := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome-headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		t.Skip("no Chromium binary in PATH (chromium, chromium-browser, google-chrome): apt-get install chromium")
	}
	b := &browserPage{t: t, ctx: t.Context(), dir: t.TempDir()}
	wsURL := startChromium(t, bin, filepath.Join(b.dir, "profile"))
	b.conn = dialCDP(t, b.ctx, wsURL)
	browser := &cdpSession{conn: b.conn}

	// A fresh page, attached in flat mode: its commands and events carry
	// the session id on the browser's one websocket.
	ctx, cancel := context.WithTimeout(b.ctx, chromiumDeadline)
	defer cancel()
	created, err := cdp.Call(ctx, browser, target.CreateTarget, target.CreateTargetParams{URL: "about:blank"})
	b.must("Target.createTarget", err)
	attached, err := cdp.Call(ctx, browser, target.AttachToTarget, target.AttachToTargetParams{TargetID: created.TargetID, Flatten: new(true)})
	b.must("Target.attachToTarget", err)
	b.tab = &cdpSession{conn: b.conn, id: attached.SessionID}
	_, err = cdp.Call(ctx, b.tab, page.Enable, page.EnableParams{})
	b.must("Page.enable", err)
	_, err = cdp.Call(ctx, b.tab, runtime.Enable, cdp.Empty{})
	b.must("Runtime.enable", err)
	_, err = cdp.Call(ctx, b.tab, network.Enable, network.EnableParams{})
	b.must("Network.enable", err)
	_, err = cdp.Call(ctx, b.tab, cdplog.Enable, cdp.Empty{})
	b.must("Log.enable", err)
	b.resize(1280)
	return b
}

// resize sets the page's viewport width (and a fixed height).
func (b *browserPage) resize(width int64) {
	ctx, cancel := context.WithTimeout(b.ctx, chromiumDeadline)
	defer cancel()
	_, err := cdp.Call(ctx, b.tab, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{Width: width, Height: 900, DeviceScaleFactor: 1})
	b.must("Emulation.setDeviceMetricsOverride", err)
	b.width = width
}

func (b *browserPage) must(what string, err error) {
	b.t.Helper()
	if err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// open writes the report's HTML to a file, navigates to it, waits for the
// load event, and fails the test on any exception, console or log error,
// or request for anything but the page itself. It returns what the DOM says.
func (b *browserPage) open(name string, r *report.Report) inspection {
	t := b.t
	t.Helper()
	out, err := r.HTML()
	b.must("HTML", err)
	file := filepath.Join(b.dir, name)
	if err := os.WriteFile(file, out, 0o600); err != nil {
		t.Fatal(err)
	}
	pageURL := (&url.URL{Scheme: "file", Path: file}).String()
	ctx, cancel := context.WithTimeout(b.ctx, chromiumDeadline)
	defer cancel()

	// Subscribe before navigating, so the load event cannot be missed;
	// events seen from here on belong to this page.
	loaded := cdp.Events(ctx, b.tab, page.LoadEventFired)
	mark := b.conn.eventCount()
	nav, err := cdp.Call(ctx, b.tab, page.Navigate, page.NavigateParams{URL: pageURL})
	b.must("Page.navigate", err)
	if nav.ErrorText != "" {
		t.Fatalf("navigating to %s: %s", pageURL, nav.ErrorText)
	}
	for _, err := range loaded {
		b.must("waiting for Page.loadEventFired", err)
		break
	}

	// The answer to this command also flushes the events the page sent
	// before it.
	res, err := cdp.Call(ctx, b.tab, runtime.Evaluate, runtime.EvaluateParams{Expression: inspectScript, ReturnByValue: new(true)})
	b.must("Runtime.evaluate", err)
	if res.ExceptionDetails != nil {
		t.Fatalf("evaluating the inspection script: %s", res.ExceptionDetails.Text)
	}
	var dom inspection
	if err := jsonv2.Unmarshal(res.Result.Value, &dom); err != nil {
		t.Fatalf("decoding %s: %v", res.Result.Value, err)
	}

	requests := 0
	for _, m := range b.conn.eventsSince(mark, b.tab.id) {
		switch m.Method.String() {
		case runtime.ExceptionThrown.Method:
			var e runtime.EventExceptionThrown
			b.must("decoding "+m.Method.String(), jsonv2.Unmarshal(m.Params, &e))
			t.Errorf("%s: exception thrown: %s", name, e.ExceptionDetails.Text)
		case runtime.ConsoleAPICalled.Method:
			var e runtime.EventConsoleAPICalled
			b.must("decoding "+m.Method.String(), jsonv2.Unmarshal(m.Params, &e))
			if e.Type == runtime.ConsoleAPICalledTypeError || e.Type == runtime.ConsoleAPICalledTypeAssert {
				t.Errorf("%s: console.%s: %s", name, e.Type, m.Params)
			}
		case cdplog.EntryAdded.Method:
			var e cdplog.EventEntryAdded
			b.must("decoding "+m.Method.String(), jsonv2.Unmarshal(m.Params, &e))
			if e.Entry.Level == cdplog.EntryLevelError {
				t.Errorf("%s: log error (%s): %s %s", name, e.Entry.Source, e.Entry.Text, e.Entry.URL)
			} else {
				t.Logf("%s: log %s (%s): %s", name, e.Entry.Level, e.Entry.Source, e.Entry.Text)
			}
		case network.RequestWillBeSent.Method:
			var e network.EventRequestWillBeSent
			b.must("decoding "+m.Method.String(), jsonv2.Unmarshal(m.Params, &e))
			requests++
			if u := e.Request.URL; u != pageURL && !strings.HasPrefix(u, "data:") {
				t.Errorf("%s: the page requested %s", name, u)
			}
		}
	}
	if requests == 0 {
		t.Errorf("%s: saw no Network.requestWillBeSent, not even for the page: is the Network domain on?", name)
	}
	if dom.URL != pageURL {
		t.Errorf("document.URL = %q, want %q", dom.URL, pageURL)
	}
	if dom.Scripts != 0 {
		t.Errorf("%s: document.scripts = %d, want 0 (names must stay text)", name, dom.Scripts)
	}
	if dom.Viewport != float64(b.width) {
		t.Errorf("%s: the viewport is %.0fpx wide, want %dpx", name, dom.Viewport, b.width)
	}
	if dom.Width > dom.Viewport {
		t.Errorf("%s: page is %.0fpx wide, wider than the %.0fpx viewport", name, dom.Width, dom.Viewport)
	}
	if len(dom.Overflow) > 0 {
		t.Errorf("%s at %.0fpx: cut off or sticking out of the viewport: %q", name, dom.Viewport, dom.Overflow)
	}
	return dom
}

// screenshot captures the whole page as a PNG.
func (b *browserPage) screenshot() []byte {
	ctx, cancel := context.WithTimeout(b.ctx, chromiumDeadline)
	defer cancel()
	metrics, err := cdp.Call(ctx, b.tab, page.GetLayoutMetrics, cdp.Empty{})
	b.must("Page.getLayoutMetrics", err)
	size := metrics.CSSContentSize
	shot, err := cdp.Call(ctx, b.tab, page.CaptureScreenshot, page.CaptureScreenshotParams{
		Format:                page.CaptureScreenshotFormatPng,
		Clip:                  &page.Viewport{Width: size.Width, Height: size.Height, Scale: 1},
		CaptureBeyondViewport: new(true),
	})
	b.must("Page.captureScreenshot", err)
	if !bytes.HasPrefix(shot.Data, []byte("\x89PNG\r\n\x1a\n")) {
		b.t.Fatalf("screenshot is not a PNG (%d bytes)", len(shot.Data))
	}
	return shot.Data
}

// startChromium starts headless Chromium in its own process group, killed
// with the group when the test ends, and returns its DevTools websocket URL
// from the "DevTools listening on" line of its stderr.
func startChromium(t *testing.T, bin, profile string) string {
	t.Helper()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin,
		"--headless=new", "--no-sandbox", "--remote-debugging-port=0", "--user-data-dir="+profile,
		"--no-first-run", "--no-default-browser-check", "--disable-gpu", "--disable-dev-shm-usage",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-extensions", "--disable-breakpad", "--hide-scrollbars", "--mute-audio",
		"about:blank")
	cmd.Stderr = pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	pw.Close()

	var mu sync.Mutex
	var log strings.Builder
	found := make(chan string, 1)
	readDone := make(chan struct{})
	listening := regexp.MustCompile(`DevTools listening on (ws://\S+)`)
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			mu.Lock()
			log.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		// The whole group: the browser and its zygote, GPU and renderers.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-exited:
		case <-time.After(chromiumDeadline):
			t.Errorf("chromium (pid %d) did not exit after SIGKILL", cmd.Process.Pid)
		}
		pr.Close()
		<-readDone
		if t.Failed() {
			mu.Lock()
			t.Logf("chromium stderr:\n%s", log.String())
			mu.Unlock()
		}
	})
	select {
	case u := <-found:
		return u
	case err := <-exited:
		exited <- err // for the cleanup
		<-readDone
		t.Fatalf("chromium exited before DevTools listened: %v", err)
	case <-time.After(chromiumDeadline):
		t.Fatalf("chromium printed no \"DevTools listening on\" line within %v", chromiumDeadline)
	}
	return ""
}

// cdpConn is one DevTools websocket. Its reader routes each answer to the
// call waiting for its id and each event to its subscribers, and keeps every
// event so a test can inspect them afterwards.
type cdpConn struct {
	ws   *websocket.Conn
	done chan struct{} // closed when the reader stops
	err  error         // why it stopped; read after done

	mu     sync.Mutex
	nextID int64
	calls  map[int64]chan *cdproto.Message
	subs   map[string][]chan jsonv2.Value // by session id + "/" + method
	events []*cdproto.Message
	full   int // events dropped because a subscriber's buffer was full
}

func dialCDP(t *testing.T, ctx context.Context, wsURL string) *cdpConn {
	t.Helper()
	dial, cancel := context.WithTimeout(ctx, chromiumDeadline)
	defer cancel()
	ws, _, err := websocket.Dial(dial, wsURL, nil)
	if err != nil {
		t.Fatalf("dialing %s: %v", wsURL, err)
	}
	ws.SetReadLimit(256 << 20) // screenshots come back whole, base64 encoded
	c := &cdpConn{ws: ws, done: make(chan struct{}), calls: map[int64]chan *cdproto.Message{}, subs: map[string][]chan jsonv2.Value{}}
	readCtx, stop := context.WithCancel(context.Background())
	go c.read(readCtx)
	t.Cleanup(func() {
		stop()
		ws.Close(websocket.StatusNormalClosure, "")
		<-c.done
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.full > 0 {
			t.Errorf("%d DevTools events dropped: a subscriber fell behind", c.full)
		}
	})
	return c
}

func (c *cdpConn) read(ctx context.Context) {
	defer close(c.done)
	for {
		_, b, err := c.ws.Read(ctx)
		if err != nil {
			c.err = err
			return
		}
		m := new(cdproto.Message)
		if err := jsonv2.Unmarshal(b, m); err != nil {
			c.err = fmt.Errorf("decoding %.200s: %w", b, err)
			return
		}
		c.mu.Lock()
		if m.ID != 0 {
			if ch, ok := c.calls[m.ID]; ok {
				ch <- m // buffered: one answer per call
				delete(c.calls, m.ID)
			}
		} else {
			c.events = append(c.events, m)
			for _, ch := range c.subs[string(m.SessionID)+"/"+m.Method.String()] {
				select {
				case ch <- m.Params:
				default:
					c.full++
				}
			}
		}
		c.mu.Unlock()
	}
}

func (c *cdpConn) eventCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.events)
}

// eventsSince returns the events of the session from index from on.
func (c *cdpConn) eventsSince(from int, session target.SessionID) []*cdproto.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*cdproto.Message
	for _, m := range c.events[from:] {
		if m.SessionID == session {
			out = append(out, m)
		}
	}
	return out
}

// cdpSession is the browser (empty id) or one attached target; it
// implements cdp.Session, so cdproto's typed commands run on it.
type cdpSession struct {
	conn *cdpConn
	id   target.SessionID
}

var _ cdp.Session = (*cdpSession)(nil)

// Call sends the command and waits for its answer until ctx ends.
func (s *cdpSession) Call(ctx context.Context, method string, params, result any) error {
	raw, err := jsonv2.Marshal(params)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", method, err)
	}
	answer := make(chan *cdproto.Message, 1)
	s.conn.mu.Lock()
	s.conn.nextID++
	id := s.conn.nextID
	s.conn.calls[id] = answer
	s.conn.mu.Unlock()
	defer func() {
		s.conn.mu.Lock()
		delete(s.conn.calls, id)
		s.conn.mu.Unlock()
	}()
	msg, err := jsonv2.Marshal(&cdproto.Message{ID: id, SessionID: s.id, Method: cdproto.MethodType(method), Params: raw})
	if err != nil {
		return fmt.Errorf("encoding %s: %w", method, err)
	}
	if err := s.conn.ws.Write(ctx, websocket.MessageText, msg); err != nil {
		return fmt.Errorf("sending %s: %w", method, err)
	}
	select {
	case m := <-answer:
		if m.Error != nil {
			return fmt.Errorf("%s: %w", method, m.Error)
		}
		if result == nil || len(m.Result) == 0 {
			return nil
		}
		if err := jsonv2.Unmarshal(m.Result, result); err != nil {
			return fmt.Errorf("decoding the answer to %s: %w", method, err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the answer to %s: %w", method, ctx.Err())
	case <-s.conn.done:
		return fmt.Errorf("waiting for the answer to %s: connection closed: %w", method, errors.Join(s.conn.err))
	}
}

// Subscribe buffers the session's events of the method until cancelled.
func (s *cdpSession) Subscribe(method string) (<-chan jsonv2.Value, func()) {
	ch := make(chan jsonv2.Value, 1024)
	key := string(s.id) + "/" + method
	s.conn.mu.Lock()
	s.conn.subs[key] = append(s.conn.subs[key], ch)
	s.conn.mu.Unlock()
	return ch, func() {
		s.conn.mu.Lock()
		defer s.conn.mu.Unlock()
		s.conn.subs[key] = slices.DeleteFunc(s.conn.subs[key], func(c chan jsonv2.Value) bool { return c == ch })
	}
}
