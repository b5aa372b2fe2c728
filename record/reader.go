package record

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"slices"

	"github.com/memdiag/memdiag/event"
)

// Reader reads a recording back. It checks every frame and stops at the
// first damage with a *CorruptError, having returned only intact events.
// A Reader is not safe for concurrent use.
type Reader struct {
	path    string
	closer  io.Closer
	src     *countingReader // the file, counted: what the decompressor consumed
	zr      *gzip.Reader
	br      *bufio.Reader // the decompressed frame stream
	dec     eventDecoder
	header  Header
	trailer Trailer
	hasTrl  bool
	events  int
	buf     []byte
	err     error // sticky: io.EOF, or the damage
}

// Open opens the recording at path and reads its header. A file that is
// not a recording gives ErrNotRecording, one newer than this package reads
// ErrVersion, one damaged before its header ends a *CorruptError (all
// errors.Is-able).
func Open(path string) (*Reader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening the recording: %w", err)
	}
	r, err := newReader(f, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	r.closer = f
	return r, nil
}

// NewReader reads a recording from src (stdin, a buffer) as Open does
// from a file. Closing the Reader does not close src.
func NewReader(src io.Reader) (*Reader, error) {
	return newReader(src, "")
}

func newReader(src io.Reader, path string) (*Reader, error) {
	r := &Reader{path: path, src: &countingReader{r: bufio.NewReaderSize(src, 64<<10)}, dec: eventDecoder{newCodecState()}}
	var magic [len(Magic) + 1]byte
	n, err := io.ReadFull(r.src, magic[:])
	switch {
	case err != nil && !bytes.HasPrefix([]byte(Magic), magic[:n]):
		return nil, r.notRecording()
	case err != nil:
		// A prefix of the magic: a recording cut off at its first bytes.
		return nil, r.corrupt(io.ErrUnexpectedEOF)
	case string(magic[:len(Magic)]) != Magic:
		return nil, r.notRecording()
	case magic[len(Magic)] == 0:
		return nil, r.corrupt(errors.New("format version 0"))
	case magic[len(Magic)] > Version:
		return nil, &versionError{path: path, version: magic[len(Magic)]}
	}
	if r.zr, err = gzip.NewReader(r.src); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, r.corrupt(err)
	}
	r.zr.Multistream(false)
	r.br = bufio.NewReaderSize(r.zr, 64<<10)

	kind, payload, err := r.frame()
	if err == io.EOF {
		err = errors.New("no header")
	}
	if err == nil && kind != kindHeader {
		err = fmt.Errorf("the first frame is %s, not the header", kindName(kind))
	}
	if err == nil {
		err = json.Unmarshal(payload, &r.header)
	}
	if err == nil && r.header.Format != int(magic[len(Magic)]) {
		err = fmt.Errorf("the header says format %d, the file %d", r.header.Format, magic[len(Magic)])
	}
	if err != nil {
		return nil, r.corrupt(fmt.Errorf("reading the header: %w", err))
	}
	r.header.CreatedAt = r.header.CreatedAt.UTC()
	return r, nil
}

func (r *Reader) notRecording() error {
	if r.path == "" {
		return ErrNotRecording
	}
	return fmt.Errorf("%s: %w", r.path, ErrNotRecording)
}

// corrupt makes the damage error, counting what was read so far.
func (r *Reader) corrupt(err error) *CorruptError {
	return &CorruptError{Path: r.path, Offset: r.src.n, Events: r.events, Err: err}
}

// Header returns the recording's header.
func (r *Reader) Header() Header { return r.header }

// Trailer returns the recording's trailer, once Next has read it: it is
// the last frame, so Next has returned io.EOF (or the damage right after
// it). false means the recording was not closed.
func (r *Reader) Trailer() (Trailer, bool) { return r.trailer, r.hasTrl }

// Next returns the next event, io.EOF at the clean end of the recording,
// or a *CorruptError where the recording is truncated or damaged; after
// either it returns the same error again. Events are pointers, fresh for
// each call; their times are UTC; empty slices of a Snapshot are nil.
func (r *Reader) Next() (event.Event, error) {
	for r.err == nil {
		kind, payload, err := r.frame()
		switch {
		case err == io.EOF:
			r.err = r.end()
		case err != nil:
			r.err = r.corrupt(err)
		case kind == kindTrailer:
			var t Trailer
			if err := json.Unmarshal(payload, &t); err != nil {
				r.err = r.corrupt(fmt.Errorf("reading the trailer: %w", err))
				break
			}
			t.EndedAt = t.EndedAt.UTC()
			r.trailer, r.hasTrl = t, true
		case kind == kindHeader:
			r.err = r.corrupt(errors.New("a second header"))
		case kind >= kindFork && kind <= kindSampling: // the last kind this package writes
			ev, err := r.dec.decode(kind, payload)
			if err != nil {
				r.err = r.corrupt(err)
				break
			}
			r.events++
			return ev, nil
		default:
			// A kind from a newer writer: skipped (forward compatibility).
		}
	}
	return nil, r.err
}

// end checks the clean end of the frame stream: the compressed stream
// ended (its checksum verified) and nothing follows it in the file.
func (r *Reader) end() error {
	if _, err := r.src.ReadByte(); err != io.EOF {
		if err == nil {
			err = errors.New("data after the end of the compressed stream")
		}
		return r.corrupt(err)
	}
	return io.EOF
}

// frame reads one frame and checks its CRC: io.EOF when the stream ends
// cleanly before it. The payload is valid until the next call.
func (r *Reader) frame() (byte, []byte, error) {
	n, err := binary.ReadUvarint(r.br)
	if err != nil {
		if err == io.EOF {
			return 0, nil, io.EOF
		}
		return 0, nil, err
	}
	if n > MaxFrame {
		return 0, nil, fmt.Errorf("frame length %d exceeds the %d-byte limit", n, MaxFrame)
	}
	// kind + payload + CRC, read in pieces so that a damaged length costs
	// memory only as the data to fill it actually arrives.
	need := int(n) + 5
	b := r.buf[:0]
	for len(b) < need {
		chunk := min(need-len(b), 64<<10)
		b = slices.Grow(b, chunk)
		m, err := io.ReadFull(r.br, b[len(b):len(b)+chunk])
		b = b[:len(b)+m]
		if err != nil {
			r.buf = b
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, nil, err
		}
	}
	r.buf = b
	body := b[:need-4]
	if crc32.Checksum(body, castagnoli()) != binary.LittleEndian.Uint32(b[need-4:]) {
		return 0, nil, ErrChecksum
	}
	return body[0], body[1:], nil
}

// Close closes the file Open opened.
func (r *Reader) Close() error {
	if r.closer == nil {
		return nil
	}
	err := r.closer.Close()
	r.closer = nil
	return err
}

// countingReader counts the bytes the decompressor consumed, so damage is
// located in the file. It is an io.ByteReader, so gzip reads from it
// directly, without buffering ahead.
type countingReader struct {
	r *bufio.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countingReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.n++
	}
	return b, err
}
