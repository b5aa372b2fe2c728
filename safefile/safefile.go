// Package safefile writes what memdiag leaves on disk (logs, reports,
// recordings, dumps: heap snapshots hold secrets) the safe way: files 0600
// in directories 0700, never through a symlink, never over an existing
// file, never blocked by a FIFO planted in their place.
package safefile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// MkdirPrivate creates dir and its missing parents with mode 0700. Existing
// directories are left as they are, but a symlink is refused.
func MkdirPrivate(dir string) error {
	if fi, err := os.Lstat(dir); err == nil {
		if fi.Mode()&fs.ModeSymlink != 0 {
			return fmt.Errorf("%s is a symlink: refusing to write through it", dir)
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", dir)
		}
		return nil
	}
	return os.MkdirAll(dir, 0o700)
}

// OpenAppend opens path for appending, creating it 0600 (and its directory
// 0700). It refuses a symlink at path.
func OpenAppend(path string) (*os.File, error) {
	if err := MkdirPrivate(filepath.Dir(path)); err != nil {
		return nil, err
	}
	// O_NONBLOCK: a FIFO planted at path must not block memdiag in open.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0o600)
	if errors.Is(err, unix.ELOOP) {
		return nil, fmt.Errorf("%s is a symlink: refusing to write through it", path)
	}
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file: refusing to write to it", path)
	}
	if err := unix.SetNonblock(int(f.Fd()), false); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// ErrExists says a file memdiag would write is already there.
var ErrExists = errors.New("file exists; memdiag never overwrites: choose another path or remove it")

// CheckNew fails when path exists (or is a dangling symlink), so a run
// can refuse a report path before it starts tracing.
func CheckNew(path string) error {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("%s: %w", path, ErrExists)
	}
	return nil
}

// WriteNew writes data to a new file at path, whole or not at all: it is
// written to a temporary file in the same directory, synced, then linked
// into place, which fails if path exists. The file is 0600, its directory
// 0700.
func WriteNew(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := MkdirPrivate(dir); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s: %w", path, ErrExists)
		}
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// CreateNew creates path for writing, 0600 in a 0700 directory, failing
// when it exists (ErrExists) and never following a symlink.
func CreateNew(path string) (*os.File, error) {
	if err := MkdirPrivate(filepath.Dir(path)); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("%s: %w", path, ErrExists)
	}
	return f, err
}
