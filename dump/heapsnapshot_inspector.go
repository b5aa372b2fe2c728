package dump

// The client side of the Node.js inspector: connections made inside the
// target's network namespace, its HTTP target list, and a small
// synchronous DevTools-protocol client over its websocket.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// inspectorDialTimeout bounds one connection attempt, within the
// caller's deadline: a connection on loopback is made or refused at once.
const inspectorDialTimeout = 5 * time.Second

// netnsDialer makes TCP connections from inside a network namespace:
// the inspector listens on loopback, which is the target's own.
type netnsDialer struct {
	ns *os.File // the target's /proc/PID/ns/net; nil when memdiag shares it
}

// openNetnsDialer opens pid's network namespace, or returns a plain
// dialer when memdiag is already in it.
func openNetnsDialer(pid int) (*netnsDialer, error) {
	ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return nil, fmt.Errorf("opening the network namespace of pid %d: %w", pid, err)
	}
	var theirs, ours unix.Stat_t
	if err := unix.Fstat(int(ns.Fd()), &theirs); err != nil {
		ns.Close()
		return nil, fmt.Errorf("stat of the network namespace of pid %d: %w", pid, err)
	}
	if err := unix.Stat("/proc/thread-self/ns/net", &ours); err != nil {
		ns.Close()
		return nil, fmt.Errorf("stat of memdiag's network namespace: %w", err)
	}
	if theirs.Dev == ours.Dev && theirs.Ino == ours.Ino {
		ns.Close()
		return &netnsDialer{}, nil
	}
	return &netnsDialer{ns: ns}, nil
}

// Close releases the namespace.
func (d *netnsDialer) Close() error {
	if d.ns == nil {
		return nil
	}
	return d.ns.Close()
}

// DialContext connects to addr, from inside the namespace when it is
// not memdiag's. The socket is made by a goroutine locked to its OS
// thread while that thread is in the target's namespace; a socket stays
// in the namespace it was made in, so it keeps working once the thread is
// back in memdiag's. When the thread cannot go back, it stays locked and
// the runtime ends it with the goroutine, so no other goroutine ever runs
// in the wrong namespace.
func (d *netnsDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	nd := net.Dialer{Timeout: inspectorDialTimeout}
	if d.ns == nil {
		return nd.DialContext(ctx, network, addr)
	}
	type dialed struct {
		c   net.Conn
		err error
	}
	done := make(chan dialed, 1)
	go func() {
		runtime.LockOSThread()
		ours, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- dialed{nil, fmt.Errorf("opening memdiag's network namespace: %w", err)}
			return
		}
		defer ours.Close()
		if err := unix.Setns(int(d.ns.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- dialed{nil, fmt.Errorf("entering the target's network namespace: %w", err)}
			return
		}
		c, err := nd.DialContext(ctx, network, addr)
		if rerr := unix.Setns(int(ours.Fd()), unix.CLONE_NEWNET); rerr != nil {
			// Stay locked: the thread dies with this goroutine.
			if c != nil {
				c.Close()
			}
			done <- dialed{nil, fmt.Errorf("returning to memdiag's network namespace: %w", rerr)}
			return
		}
		runtime.UnlockOSThread()
		done <- dialed{c, err}
	}()
	// The goroutine ends on its own: DialContext is bounded by ctx.
	r := <-done
	return r.c, r.err
}

// inspectorTarget is one entry of the inspector's /json/list.
type inspectorTarget struct {
	ID                   string `json:"id"`
	Type                 string `json:"type"`
	Title                string `json:"title"`
	WebSocketDebuggerURL string `json:"webSocketDebuggerUrl"`
}

// maxTargetList bounds the /json/list answer read: a Node.js process has
// one target (its main thread), a few hundred bytes.
const maxTargetList = 1 << 20

// inspectorTargetPath returns the websocket path of the Node.js
// inspector that listens on addr (reached through d), from its
// /json/list: the first target of type "node". Its webSocketDebuggerUrl
// gives the path; older Node versions leave it out while a debugger is
// attached, but take more sessions at /<id>.
func inspectorTargetPath(ctx context.Context, d *netnsDialer, addr netip.AddrPort) (string, error) {
	u := "http://" + addr.String() + "/json/list"
	h, body, err := d.httpGet(ctx, addr, "/json/list", maxTargetList)
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", u, err)
	}
	if h.code != 200 {
		return "", fmt.Errorf("GET %s: %s", u, h.status)
	}
	var targets []inspectorTarget
	if err := json.Unmarshal(body, &targets); err != nil {
		return "", fmt.Errorf("GET %s: not an inspector's target list: %w", u, err)
	}
	for _, t := range targets {
		if t.Type != "node" {
			continue // not Node's: a service's own /json/list, say
		}
		if t.WebSocketDebuggerURL != "" {
			if wu, err := url.Parse(t.WebSocketDebuggerURL); err == nil && wu.Path != "" {
				return wu.EscapedPath(), nil // as sent in the request line
			}
		}
		if t.ID != "" && !strings.ContainsAny(t.ID, "/?#%") {
			return "/" + t.ID, nil
		}
	}
	return "", fmt.Errorf("GET %s: no target to attach to", u)
}

// cdpReadLimit bounds one DevTools message: snapshot chunks are about
// 100 KiB of JSON text, and memdiag asks nothing with a larger answer.
const cdpReadLimit = 64 << 20

// cdpConn is one DevTools-protocol session on the inspector's websocket.
// It is synchronous: call sends a command, then reads messages until the
// command's answer, handing every event met on the way to a callback,
// so events stream with no goroutine and no buffering.
type cdpConn struct {
	ws     *wsConn
	nextID int64
}

// dialCDP opens a session at path on the inspector at addr.
func dialCDP(ctx context.Context, d *netnsDialer, addr netip.AddrPort, path string) (*cdpConn, error) {
	u := "ws://" + addr.String() + path
	ws, err := dialWebSocket(ctx, d, addr, path, cdpReadLimit)
	if err != nil {
		return nil, fmt.Errorf("opening the inspector's websocket %s: %w", u, err)
	}
	return &cdpConn{ws: ws}, nil
}

// Close closes the connection at once, with no closing handshake: the
// inspector takes that as the end of the session.
func (c *cdpConn) Close() error {
	return c.ws.Close()
}

// cdpMessage is a DevTools-protocol message: an answer has ID, an event
// has Method.
type cdpMessage struct {
	ID     int64           `json:"id,omitempty"`
	Method string          `json:"method,omitempty"`
	Params json.RawMessage `json:"params,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *cdpError       `json:"error,omitempty"`
}

// cdpError is the error of an answer.
type cdpError struct {
	Code    int64  `json:"code"`
	Message string `json:"message"`
	Data    string `json:"data,omitempty"`
}

func (e *cdpError) Error() string {
	if e.Data != "" {
		return fmt.Sprintf("%s (%d): %s", e.Message, e.Code, e.Data)
	}
	return fmt.Sprintf("%s (%d)", e.Message, e.Code)
}

// errCDPClosed is returned when the inspector ends the connection before
// a command's answer.
var errCDPClosed = errors.New("the inspector closed the connection")

// call sends method with params (nil for none) and waits for its answer,
// passing the events that come first to onEvent (nil to drop them); an
// error from onEvent ends the call. When ctx ends, the websocket
// closes its connection: the session is over.
func (c *cdpConn) call(ctx context.Context, method string, params any, onEvent func(method string, params json.RawMessage) error) (json.RawMessage, error) {
	c.nextID++
	id := c.nextID
	msg := struct {
		ID     int64  `json:"id"`
		Method string `json:"method"`
		Params any    `json:"params,omitempty"`
	}{id, method, params}
	b, err := json.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("encoding %s: %w", method, err)
	}
	if err := c.ws.WriteText(ctx, b); err != nil {
		return nil, fmt.Errorf("sending %s: %w", method, err)
	}
	for {
		data, err := c.ws.Read(ctx)
		if err != nil {
			if errors.Is(err, errWSClosed) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("%w: %w", errCDPClosed, err)
			}
			return nil, fmt.Errorf("waiting for the answer to %s: %w", method, err)
		}
		var m cdpMessage
		if err := json.Unmarshal(data, &m); err != nil {
			return nil, fmt.Errorf("waiting for the answer to %s: decoding %.100q: %w", method, data, err)
		}
		switch {
		case m.ID == id:
			if m.Error != nil {
				return nil, fmt.Errorf("%s: %w", method, m.Error)
			}
			return m.Result, nil
		case m.ID == 0 && m.Method != "" && onEvent != nil:
			if err := onEvent(m.Method, m.Params); err != nil {
				return nil, err
			}
		}
		// Anything else answers an earlier call that gave up: dropped.
	}
}
