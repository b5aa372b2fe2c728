package container

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"golang.org/x/net/http2/hpack"
)

// scripted is a peer whose answer is written in advance; what the client
// sends is kept.
type scripted struct {
	io.Reader
	sent bytes.Buffer
}

func (s *scripted) Write(b []byte) (int, error) { return s.sent.Write(b) }

// hpackBlock encodes name, value pairs as a header block.
func hpackBlock(fields ...string) []byte {
	var b bytes.Buffer
	e := hpack.NewEncoder(&b)
	for i := 0; i+1 < len(fields); i += 2 {
		e.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return b.Bytes()
}

// TestH2Frames feeds h2Exchange hand-built frames a real gRPC server may
// send (or a wrong peer): each is answered or refused with a message that
// says what happened.
func TestH2Frames(t *testing.T) {
	head := hpackBlock(":status", "200", "content-type", "application/grpc")
	ok := hpackBlock("grpc-status", "0")
	message := []byte{0, 0, 0, 0, 2, 'h', 'i'}
	for _, tc := range []struct {
		name    string
		frames  func(b *bytes.Buffer)
		raw     string // sent instead of frames
		body    string // the answer's body, when no error
		wantErr string
	}{
		{name: "plain answer", frames: func(b *bytes.Buffer) {
			h2AppendFrame(b, h2Headers, h2FlagEndHeaders, 1, head)
			h2AppendFrame(b, h2Data, 0, 1, message)
			h2AppendFrame(b, h2Headers, h2FlagEndHeaders|h2FlagEndStream, 1, ok)
		}, body: string(message)},
		{name: "empty HEADERS then CONTINUATION", frames: func(b *bytes.Buffer) {
			h2AppendFrame(b, h2Headers, 0, 1, nil)
			h2AppendFrame(b, h2Continuation, h2FlagEndHeaders, 1, head)
			h2AppendFrame(b, h2Data, 0, 1, message)
			h2AppendFrame(b, h2Headers, h2FlagEndHeaders|h2FlagEndStream, 1, ok)
		}, body: string(message)},
		{name: "PADDED and PRIORITY headers, padded data, a PING between", frames: func(b *bytes.Buffer) {
			h2AppendFrame(b, h2Headers, h2FlagEndHeaders|h2FlagPadded|h2FlagPriority, 1,
				append(append([]byte{2, 0, 0, 0, 0, 16}, head...), 0, 0))
			h2AppendFrame(b, h2Ping, 0, 0, make([]byte, 8))
			h2AppendFrame(b, h2Data, h2FlagPadded, 1, append(append([]byte{1}, message...), 0))
			h2AppendFrame(b, h2Headers, h2FlagEndHeaders|h2FlagEndStream, 1, ok)
		}, body: string(message)},
		{name: "a frame inside a header block", frames: func(b *bytes.Buffer) {
			h2AppendFrame(b, h2Headers, 0, 1, head[:1])
			h2AppendFrame(b, h2Ping, 0, 0, make([]byte, 8))
		}, wantErr: "header block interrupted"},
		{name: "RST_STREAM", frames: func(b *bytes.Buffer) {
			h2AppendFrame(b, h2RSTStream, 0, 1, []byte{0, 0, 0, 2})
		}, wantErr: "RST_STREAM, code 2"},
		{name: "GOAWAY before our stream", frames: func(b *bytes.Buffer) {
			h2AppendFrame(b, h2GoAway, 0, 0, []byte{0, 0, 0, 0, 0, 0, 0, 11})
		}, wantErr: "GOAWAY, code 11"},
		{name: "answer larger than allowed", frames: func(b *bytes.Buffer) {
			h2AppendFrame(b, h2Headers, h2FlagEndHeaders, 1, head)
			h2AppendFrame(b, h2Data, 0, 1, make([]byte, 200))
		}, wantErr: "answer larger than 100 bytes"},
		{name: "an HTTP/1 socket", raw: "HTTP/1.1 400 Bad Request\r\n\r\n", wantErr: "answers HTTP/1"},
		{name: "cut short", frames: func(b *bytes.Buffer) {
			h2AppendFrame(b, h2Headers, h2FlagEndHeaders, 1, head)
		}, wantErr: "unexpected EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var in bytes.Buffer
			if tc.frames != nil {
				tc.frames(&in)
			} else {
				in.WriteString(tc.raw)
			}
			a, err := h2Exchange(&scripted{Reader: &in}, "/runtime.v1.RuntimeService/Version", nil, 100)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || string(a.body) != tc.body {
				t.Fatalf("body %q, err %v; want %q", a.body, err, tc.body)
			}
		})
	}
}
