package record

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"
	"time"

	"github.com/memdiag/memdiag/safefile"
)

// Magic opens every recording.
const Magic = "MEMDIAG-REC\n"

// Version is the major format version this package writes and the highest
// it reads. Changes that older readers can skip (new frame kinds, fields
// appended to a payload) keep it; any other change increments it.
const Version = 1

// MaxFrame bounds a frame's payload. A writer refuses a larger frame; a
// reader takes a larger length as damage, so a corrupt length never makes
// it allocate more than this.
const MaxFrame = 16 << 20

// MaxEntries bounds each of a snapshot's Buckets, Freed and Processes
// (16 times the kernel's default bucket table). A writer refuses a bigger
// snapshot; a reader takes one as damage. With MaxFrame it bounds what a
// reader allocates for one frame to some 250 MB, even for a crafted file.
const MaxEntries = 1 << 18

// Frame kinds. See doc.go for each payload.
const (
	kindHeader   byte = 0x01
	kindTrailer  byte = 0x02
	kindFork     byte = 0x10
	kindExec     byte = 0x11
	kindExit     byte = 0x12
	kindOpBegin  byte = 0x13
	kindOpEnd    byte = 0x14
	kindTLSSeen  byte = 0x15
	kindSnapshot byte = 0x16
	kindOOM      byte = 0x17
	kindMarker   byte = 0x18
	kindSample   byte = 0x19
	kindFree     byte = 0x1a
	kindGC       byte = 0x1b
	kindLive     byte = 0x1c
	kindSampling byte = 0x1d
)

// castagnoli is the CRC-32C table frames are checked with.
// Made on first use: only a recording needs it.
var castagnoli = sync.OnceValue(func() *crc32.Table { return crc32.MakeTable(crc32.Castagnoli) })

// Header is the first frame of a recording: what was traced and how.
type Header struct {
	// Format is the major format version; Create sets it to Version.
	Format int `json:"format"`
	// Memdiag names the tool that wrote the recording, e.g. "memdiag v0.4.0".
	Memdiag string `json:"memdiag"`
	// CreatedAt is when tracing began: the start time of the account
	// (attribution.New) so that a replay starts from the same instant.
	CreatedAt time.Time `json:"created_at"`
	Target    Target    `json:"target"`
	Baseline  Baseline  `json:"baseline"`
	// Options is the caller's: whatever it needs to rebuild the reports
	// (flags, thresholds, the category config). It must be valid JSON or
	// empty; the record package never looks inside.
	Options json.RawMessage `json:"options,omitempty"`
}

// Target names the traced process, as the JSON report does.
type Target struct {
	PID  uint32 `json:"pid"`
	Comm string `json:"comm"`
	Exe  string `json:"exe,omitempty"`
	Mode string `json:"mode"` // "attach" or "run"
	// Cmdline is its command line, argv[0] first, when known. Recordings
	// made before it was added have none.
	Cmdline []string `json:"cmdline,omitempty"`
	// Container and Cgroup are the container id and cgroup v2 directory
	// followed (attach --container or --cgroup); empty otherwise. Older
	// recordings lack them.
	Container string `json:"container,omitempty"`
	Cgroup    string `json:"cgroup,omitempty"`
}

// Baseline is the target's memory when tracing began, in bytes, as the
// JSON report names it.
type Baseline struct {
	RSS   int64 `json:"rss_bytes"`
	Anon  int64 `json:"rss_anon_bytes"`
	File  int64 `json:"rss_file_bytes"`
	Shmem int64 `json:"rss_shmem_bytes"`
	HWM   int64 `json:"hwm_bytes"`
}

// Trailer is the last frame of a recording that was closed: when and why
// tracing ended. A recording without one was cut short.
type Trailer struct {
	EndedAt time.Time `json:"ended_at"`
	Reason  string    `json:"reason"` // as the [SUMMARY] line says it, e.g. "the target exited"
}

var (
	// ErrCorrupt is what every *CorruptError is (errors.Is).
	ErrCorrupt = errors.New("recording damaged")
	// ErrNotRecording says a file does not begin with Magic.
	ErrNotRecording = errors.New("not a memdiag recording")
	// ErrVersion says a recording's format is newer than this package reads.
	ErrVersion = errors.New("recording format too new")
	// ErrExists says the file a recording would be written to is there
	// already (it is safefile.ErrExists).
	ErrExists = safefile.ErrExists
	// ErrClosed is returned by a Writer used after Close.
	ErrClosed = errors.New("recording already closed")
	// ErrChecksum says a frame's CRC does not match its bytes.
	ErrChecksum = errors.New("frame checksum mismatch")
)

// CorruptError says a recording is truncated or damaged. Everything before
// the damage was read intact: the caller can still report on the Events
// events it got.
type CorruptError struct {
	Path   string // the file, when the reader was opened with Open
	Offset int64  // bytes of the file read when the damage was found
	Events int    // events read intact before it
	Err    error  // what was wrong
}

func (e *CorruptError) Error() string {
	prefix := ""
	if e.Path != "" {
		prefix = e.Path + ": "
	}
	if errors.Is(e.Err, io.ErrUnexpectedEOF) {
		return fmt.Sprintf("%srecording cut short at byte %d after %d events (memdiag did not close it, or the file was truncated)", prefix, e.Offset, e.Events)
	}
	return fmt.Sprintf("%srecording damaged at byte %d after %d events: %v", prefix, e.Offset, e.Events, e.Err)
}

// Unwrap returns the cause.
func (e *CorruptError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// versionError says a recording is newer than this reader.
type versionError struct {
	path    string
	version byte
}

func (e *versionError) Error() string {
	name := "recording"
	if e.path != "" {
		name = e.path
	}
	return fmt.Sprintf("%s: recording format %d is newer than this memdiag reads (format %d): read it with a newer memdiag", name, e.version, Version)
}

func (e *versionError) Is(target error) bool { return target == ErrVersion }
