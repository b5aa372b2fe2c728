package safefile_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/memdiag/memdiag/safefile"
)

// perm returns the permission bits of path (not following a symlink).
func perm(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// names lists dir.
func names(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func TestWriteNew(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out", "reports")
	path := filepath.Join(dir, "safefile.json")
	if err := safefile.WriteNew(path, []byte("first\n")); err != nil {
		t.Fatalf("WriteNew: %v", err)
	}
	if got, _ := os.ReadFile(path); string(got) != "first\n" {
		t.Errorf("content = %q, want %q", got, "first\n")
	}
	if got := perm(t, path); got != 0o600 {
		t.Errorf("file mode = %v, want 0600", got)
	}
	if got := perm(t, dir); got != 0o700 {
		t.Errorf("directory mode = %v, want 0700", got)
	}
	if got := perm(t, filepath.Dir(dir)); got != 0o700 {
		t.Errorf("created parent mode = %v, want 0700", got)
	}

	// Never over an existing file, whole or not at all.
	err := safefile.WriteNew(path, []byte("second\n"))
	if !errors.Is(err, safefile.ErrExists) {
		t.Fatalf("WriteNew over an existing file: error %v, want ErrExists", err)
	}
	if got, _ := os.ReadFile(path); string(got) != "first\n" {
		t.Errorf("content after refused overwrite = %q, want %q", got, "first\n")
	}
	// No temporary file left behind, after success or refusal.
	if got := names(t, dir); !reflect.DeepEqual(got, []string{"safefile.json"}) {
		t.Errorf("directory holds %q, want only safefile.json", got)
	}
}

func TestWriteNewEmpty(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ready")
	if err := safefile.WriteNew(path, nil); err != nil {
		t.Fatalf("WriteNew: %v", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != 0 {
		t.Errorf("stat = %v, %v; want an empty file", fi, err)
	}
}

func TestWriteNewExistingDirKeepsMode(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := safefile.WriteNew(filepath.Join(dir, "r.json"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	if got := perm(t, dir); got != 0o755 {
		t.Errorf("existing directory mode = %v, want it left at 0755", got)
	}
	if got := perm(t, filepath.Join(dir, "r.json")); got != 0o600 {
		t.Errorf("file mode = %v, want 0600", got)
	}
}

func TestWriteNewRefusesSymlinks(t *testing.T) {
	tmp := t.TempDir()
	victim := filepath.Join(tmp, "victim")
	if err := os.WriteFile(victim, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}

	// A symlink, dangling or not, at the path is an existing file.
	for name, target := range map[string]string{"live": victim, "dangling": filepath.Join(tmp, "nowhere")} {
		link := filepath.Join(tmp, name)
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		if err := safefile.WriteNew(link, []byte("evil")); !errors.Is(err, safefile.ErrExists) {
			t.Errorf("WriteNew through a %s symlink: error %v, want ErrExists", name, err)
		}
	}
	if got, _ := os.ReadFile(victim); string(got) != "keep" {
		t.Errorf("symlink target = %q, want it untouched", got)
	}
	if _, err := os.Lstat(filepath.Join(tmp, "nowhere")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("dangling symlink target was created: %v", err)
	}

	// A symlinked directory is refused.
	realDir, linkDir := symlinkedDir(t, tmp)
	if err := safefile.WriteNew(filepath.Join(linkDir, "r.json"), []byte("x")); err == nil {
		t.Error("WriteNew into a symlinked directory succeeded")
	}
	if got := names(t, realDir); len(got) != 0 {
		t.Errorf("symlinked directory holds %q, want nothing", got)
	}
}

func TestMkdirPrivate(t *testing.T) {
	tmp := t.TempDir()

	dir := filepath.Join(tmp, "a", "b")
	if err := safefile.MkdirPrivate(dir); err != nil {
		t.Fatalf("MkdirPrivate: %v", err)
	}
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if got := perm(t, d); got != 0o700 {
			t.Errorf("mode of %s = %v, want 0700", d, got)
		}
	}
	if err := safefile.MkdirPrivate(dir); err != nil {
		t.Errorf("MkdirPrivate on an existing directory: %v", err)
	}

	link := filepath.Join(tmp, "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	if err := safefile.MkdirPrivate(link); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Errorf("MkdirPrivate on a symlinked directory: error %v, want a symlink refusal", err)
	}

	file := filepath.Join(tmp, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := safefile.MkdirPrivate(file); err == nil {
		t.Error("MkdirPrivate on a regular file succeeded")
	}
}

func TestOpenAppend(t *testing.T) {
	path := filepath.Join(t.TempDir(), "logs", "memdiag.log")
	for _, line := range []string{"one\n", "two\n"} {
		f, err := safefile.OpenAppend(path)
		if err != nil {
			t.Fatalf("OpenAppend: %v", err)
		}
		if _, err := f.WriteString(line); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := os.ReadFile(path); string(got) != "one\ntwo\n" {
		t.Errorf("content = %q, want both lines appended", got)
	}
	if got := perm(t, path); got != 0o600 {
		t.Errorf("file mode = %v, want 0600", got)
	}
	if got := perm(t, filepath.Dir(path)); got != 0o700 {
		t.Errorf("directory mode = %v, want 0700", got)
	}
}

func TestOpenAppendRefusesSymlinks(t *testing.T) {
	tmp := t.TempDir()
	victim := filepath.Join(tmp, "victim")
	if err := os.WriteFile(victim, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(tmp, "memdiag.log")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	f, err := safefile.OpenAppend(link)
	if err == nil {
		f.Close()
		t.Fatal("OpenAppend through a planted symlink succeeded")
	}
	if !strings.Contains(err.Error(), "symlink") {
		t.Errorf("error %q does not say symlink", err)
	}
	if got, _ := os.ReadFile(victim); string(got) != "keep" {
		t.Errorf("symlink target = %q, want it untouched", got)
	}

	// Nor through a symlinked directory.
	realDir, linkDir := symlinkedDir(t, tmp)
	if f, err := safefile.OpenAppend(filepath.Join(linkDir, "memdiag.log")); err == nil {
		f.Close()
		t.Error("OpenAppend into a symlinked directory succeeded")
	}
	if got := names(t, realDir); len(got) != 0 {
		t.Errorf("symlinked directory holds %q, want nothing", got)
	}
}

func TestCheckNew(t *testing.T) {
	tmp := t.TempDir()
	file := filepath.Join(tmp, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	dangling := filepath.Join(tmp, "dangling")
	if err := os.Symlink(filepath.Join(tmp, "nowhere"), dangling); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		path   string
		exists bool
	}{
		{"missing", filepath.Join(tmp, "missing"), false},
		{"missing in a missing directory", filepath.Join(tmp, "no", "such"), false},
		{"regular file", file, true},
		{"directory", tmp, true},
		{"dangling symlink", dangling, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := safefile.CheckNew(tt.path)
			if tt.exists != errors.Is(err, safefile.ErrExists) || (!tt.exists && err != nil) {
				t.Errorf("CheckNew(%s) = %v, exists %v", tt.path, err, tt.exists)
			}
			if tt.exists && !strings.Contains(err.Error(), tt.path) {
				t.Errorf("error %q does not name the path", err)
			}
		})
	}
}

// symlinkedDir makes a directory in tmp and a symlink to it.
func symlinkedDir(t *testing.T, tmp string) (realDir, linkDir string) {
	t.Helper()
	realDir, linkDir = filepath.Join(tmp, "real"), filepath.Join(tmp, "linkdir")
	if err := os.Mkdir(realDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(realDir, linkDir); err != nil {
		t.Fatal(err)
	}
	return realDir, linkDir
}
