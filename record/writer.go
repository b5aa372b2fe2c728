package record

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/memdiag/memdiag/event"

	"github.com/memdiag/memdiag/safefile"
)

// level is the gzip level recordings are written with: the fastest, as the
// writer runs on the traced host (see BenchmarkWrite for what it costs).
const level = gzip.BestSpeed

// frameHead is room left before a frame's kind byte for its length prefix.
const frameHead = binary.MaxVarintLen64

// Writer writes a recording. It buffers: call Flush regularly (memdiag
// does after every snapshot) so that a crash loses at most what came after
// the last flush. A Writer is not safe for concurrent use.
type Writer struct {
	f    *os.File // nil when writing to a plain io.Writer (tests)
	path string
	bw   *bufio.Writer
	zw   *gzip.Writer
	enc  encoder
	buf  []byte
	err  error // sticky: the first write error
	done bool
}

// Create creates a recording at path and writes its header. The file must
// not exist: Create never overwrites and never follows a symlink. It is
// created 0600, and missing parent directories 0700.
func Create(path string, h Header) (*Writer, error) {
	h.Format = Version
	if _, err := marshalHeader(h); err != nil {
		return nil, err
	}
	if err := safefile.MkdirPrivate(filepath.Dir(path)); err != nil {
		return nil, err
	}
	// O_EXCL: never an existing file, and (POSIX) never a symlink, even a
	// dangling one; O_NOFOLLOW says so twice.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) || errors.Is(err, syscall.ELOOP) {
			if fi, lerr := os.Lstat(path); lerr == nil && fi.Mode()&fs.ModeSymlink != 0 {
				return nil, fmt.Errorf("%s is a symlink: refusing to write through it", path)
			}
			return nil, fmt.Errorf("%s: %w", path, ErrExists)
		}
		return nil, fmt.Errorf("creating the recording: %w", err)
	}
	w, err := newWriter(f, h, level)
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	w.f, w.path = f, path
	return w, nil
}

// newWriter writes the magic, the version and the header frame to dst.
func newWriter(dst io.Writer, h Header, level int) (*Writer, error) {
	h.Format = Version
	hdr, err := marshalHeader(h)
	if err != nil {
		return nil, err
	}
	bw := bufio.NewWriterSize(dst, 64<<10)
	bw.WriteString(Magic)
	bw.WriteByte(Version)
	zw, err := gzip.NewWriterLevel(bw, level)
	if err != nil {
		return nil, err
	}
	w := &Writer{bw: bw, zw: zw, enc: encoder{newCodecState()}, buf: make([]byte, 0, 4096)}
	if err := w.frame(kindHeader, hdr); err != nil {
		return nil, err
	}
	return w, nil
}

func marshalHeader(h Header) ([]byte, error) {
	data, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("encoding the recording header: %w", err)
	}
	return data, nil
}

// Write appends one event: *event.Fork, *event.Exec, *event.Exit,
// *event.OpBegin, *event.OpEnd, *event.TLSSeen or *event.Snapshot. An event
// it cannot encode (another type, a time outside 1678–2262, a frame over
// MaxFrame, a snapshot over MaxEntries) is refused with an error and leaves the recording as it was;
// an error writing the file sticks: every later call returns it.
func (w *Writer) Write(ev event.Event) error {
	if w.err != nil {
		return w.err
	}
	if w.done {
		return ErrClosed
	}
	clock := w.enc.clock
	b := append(w.buf[:frameHead], 0) // the kind byte, set below
	kind, b, err := w.enc.appendEvent(b, ev)
	if err == nil {
		b[frameHead] = kind
		err = w.writeFrame(b)
	}
	if cap(b) <= 1<<20 { // keep a buffer for the next event, not a giant one
		w.buf = b[:0]
	}
	if err != nil {
		w.enc.clock = clock
		return err
	}
	if kind == kindSnapshot {
		w.enc.commitSnapshot()
	}
	return w.err
}

// frame writes a frame of kind with payload.
func (w *Writer) frame(kind byte, payload []byte) error {
	b := append(w.buf[:frameHead], kind)
	b = append(b, payload...)
	return w.writeFrame(b)
}

// writeFrame writes the frame whose kind and payload are b[frameHead:],
// putting its length before and its CRC after. It returns an error for a
// payload over MaxFrame without writing anything.
func (w *Writer) writeFrame(b []byte) error {
	n := len(b) - frameHead - 1
	if n > MaxFrame {
		return fmt.Errorf("%s frame of %d bytes exceeds the %d-byte limit of recordings", kindName(b[frameHead]), n, MaxFrame)
	}
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[frameHead:], castagnoli()))
	var lenBuf [binary.MaxVarintLen64]byte
	k := binary.PutUvarint(lenBuf[:], uint64(n))
	start := frameHead - k
	copy(b[start:], lenBuf[:k])
	if _, err := w.zw.Write(b[start:]); err != nil {
		w.err = fmt.Errorf("writing the recording: %w", err)
	}
	return w.err
}

// Flush hands everything written so far to the operating system, as a
// complete compressed block: a reader of the file (even one cut off right
// after, by a crash) gets every event written before the Flush. It does not
// fsync: use Sync for that.
func (w *Writer) Flush() error {
	if w.err != nil {
		return w.err
	}
	if w.done {
		return ErrClosed
	}
	if err := w.zw.Flush(); err != nil {
		w.err = fmt.Errorf("writing the recording: %w", err)
		return w.err
	}
	if err := w.bw.Flush(); err != nil {
		w.err = fmt.Errorf("writing the recording: %w", err)
	}
	return w.err
}

// Sync flushes and then fsyncs the file, so what was written survives a
// crash of the machine too.
func (w *Writer) Sync() error {
	if err := w.Flush(); err != nil {
		return err
	}
	if w.f != nil {
		if err := w.f.Sync(); err != nil {
			w.err = fmt.Errorf("writing the recording: %w", err)
		}
	}
	return w.err
}

// Close writes the trailer, ends the compressed stream, fsyncs and closes
// the file. It closes the file even after an error, and returns the first
// error of the recording's life.
func (w *Writer) Close(t Trailer) error {
	if w.done {
		return ErrClosed
	}
	w.done = true
	err := w.err
	if err == nil {
		data, merr := json.Marshal(t)
		if merr != nil {
			err = fmt.Errorf("encoding the recording trailer: %w", merr)
		} else {
			err = w.frame(kindTrailer, data)
		}
	}
	if err == nil {
		if zerr := w.zw.Close(); zerr != nil {
			err = fmt.Errorf("writing the recording: %w", zerr)
		}
	}
	if err == nil {
		if ferr := w.bw.Flush(); ferr != nil {
			err = fmt.Errorf("writing the recording: %w", ferr)
		}
	}
	if w.f != nil {
		if err == nil {
			if serr := w.f.Sync(); serr != nil {
				err = fmt.Errorf("writing the recording: %w", serr)
			}
		}
		if cerr := w.f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("writing the recording: %w", cerr)
		}
	}
	if w.err == nil {
		w.err = err
	}
	return err
}
