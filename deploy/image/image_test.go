package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// readArchive returns the files of a tar archive.
func readArchive(t *testing.T, r io.Reader) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		files[h.Name] = data
		if h.Typeflag == tar.TypeReg && h.Name == "usr/local/bin/memdiag" && h.Mode != 0o755 {
			t.Errorf("the binary's mode is %o", h.Mode)
		}
	}
}

// blob returns the blob a descriptor names, checking its digest and size.
func blob(t *testing.T, files map[string][]byte, desc map[string]any) []byte {
	t.Helper()
	d, _ := desc["digest"].(string)
	data, ok := files["blobs/sha256/"+strings.TrimPrefix(d, "sha256:")]
	if !ok {
		t.Fatalf("blob %s missing", d)
	}
	sum := sha256.Sum256(data)
	if "sha256:"+hex.EncodeToString(sum[:]) != d || int(desc["size"].(float64)) != len(data) {
		t.Fatalf("blob %s: digest or size does not match", d)
	}
	return data
}

// TestMakeImage builds the image as `make image` does and checks it the
// way a runtime reads it: layout, digests, config (entrypoint, user,
// labels), the layer's files; then runs the binary from the image.
func TestMakeImage(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "image.tar")
	cmd := exec.Command("make", "-C", "../..", "image", "BIN="+dir, "IMAGE_OUT="+out, "IMAGE=registry.example/team/memdiag:t1", "SOURCE_DATE_EPOCH=1790000000")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make image: %v\n%s", err, b)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	files := readArchive(t, bytes.NewReader(data))
	if string(files["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %q", files["oci-layout"])
	}
	var index struct {
		Manifests []map[string]any
	}
	if err := json.Unmarshal(files["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json: %v, %s", err, files["index.json"])
	}
	ann, _ := index.Manifests[0]["annotations"].(map[string]any)
	if ann["org.opencontainers.image.ref.name"] != "t1" || ann["io.containerd.image.name"] != "registry.example/team/memdiag:t1" {
		t.Errorf("index annotations %v", ann)
	}
	var manifest struct {
		MediaType string
		Config    map[string]any
		Layers    []map[string]any
	}
	if err := json.Unmarshal(blob(t, files, index.Manifests[0]), &manifest); err != nil || len(manifest.Layers) != 1 {
		t.Fatalf("manifest: %v %+v", err, manifest)
	}
	var config struct {
		Architecture, OS, Created string
		Config                    struct {
			User       string
			Entrypoint []string
			Env        []string
			Labels     map[string]string
		}
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		}
	}
	if err := json.Unmarshal(blob(t, files, manifest.Config), &config); err != nil {
		t.Fatal(err)
	}
	c := config.Config
	if c.User != "65532:65532" || len(c.Entrypoint) != 1 || c.Entrypoint[0] != "/usr/local/bin/memdiag" || config.OS != "linux" || config.Architecture == "" {
		t.Errorf("config %+v", config)
	}
	if c.Labels["org.opencontainers.image.version"] != "t1" || c.Labels["org.opencontainers.image.title"] != "memdiag" || len(c.Labels["org.opencontainers.image.revision"]) != 40 {
		t.Errorf("labels %v", c.Labels)
	}
	if config.Created != time.Unix(1790000000, 0).UTC().Format(time.RFC3339) {
		t.Errorf("created %q, want SOURCE_DATE_EPOCH's", config.Created)
	}
	// The layer: its uncompressed digest is the config's diff id.
	zr, err := gzip.NewReader(bytes.NewReader(blob(t, files, manifest.Layers[0])))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(zr)
	sum := sha256.Sum256(raw)
	if len(config.RootFS.DiffIDs) != 1 || config.RootFS.DiffIDs[0] != "sha256:"+hex.EncodeToString(sum[:]) {
		t.Errorf("diff ids %v, layer sha256:%x", config.RootFS.DiffIDs, sum)
	}
	layer := readArchive(t, bytes.NewReader(raw))
	if !strings.Contains(string(layer["etc/passwd"]), "nonroot:x:65532:65532:") {
		t.Errorf("/etc/passwd = %q", layer["etc/passwd"])
	}
	bin := filepath.Join(dir, "from-image")
	if err := os.WriteFile(bin, layer["usr/local/bin/memdiag"], 0o755); err != nil {
		t.Fatal(err)
	}
	// The binary runs with nothing around it (the image has no libc).
	help := exec.Command(bin, "--help")
	help.Env = c.Env
	b, err := help.CombinedOutput()
	if err != nil || !strings.Contains(string(b), "attach") || !strings.Contains(string(b), "report") {
		t.Errorf("memdiag --help from the image: %v\n%s", err, b)
	}
	if _, err := staticArch(bin); err != nil {
		t.Error(err)
	}

	// Reproducible: the same inputs give the same archive. The builder
	// runs as make runs it (go run), not in this test binary: under -race
	// compressing the layer again takes it ten times as long.
	again := filepath.Join(dir, "again.tar")
	rev := c.Labels["org.opencontainers.image.revision"]
	build := exec.Command("go", "run", ".", "-binary", filepath.Join(dir, "memdiag-static"), "-ref", "registry.example/team/memdiag:t1", "-revision", rev, "-created", "1790000000", "-o", again)
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go run ./deploy/image: %v\n%s", err, b)
	}
	if b, _ := os.ReadFile(again); !bytes.Equal(b, data) {
		t.Error("two builds of the same inputs differ")
	}
	// Where skopeo is installed, it reads the archive too.
	if _, err := exec.LookPath("skopeo"); err == nil {
		b, err := exec.Command("skopeo", "inspect", "--config", "oci-archive:"+out).CombinedOutput()
		if err != nil || !strings.Contains(string(b), `"User": "65532:65532"`) {
			t.Errorf("skopeo inspect: %v\n%s", err, b)
		}
	} else {
		t.Log("skopeo is not installed: the archive was checked by this test's reader only")
	}
}

// TestBuildRefusals: bad input is a one-line error saying what to do.
func TestBuildRefusals(t *testing.T) {
	dir := t.TempDir()
	self, _ := os.Executable()
	exists := filepath.Join(dir, "exists.tar")
	os.WriteFile(exists, nil, 0o644)
	script := filepath.Join(dir, "script")
	os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755)
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{Ref: "a/b:c", Out: "x"}, "give -binary"},
		{Options{Binary: self, Ref: "a/b", Out: filepath.Join(dir, "o.tar")}, "want REGISTRY/NAME:TAG"},
		{Options{Binary: self, Ref: "A/b:c", Out: filepath.Join(dir, "o.tar")}, "want REGISTRY/NAME:TAG"},
		{Options{Binary: self, Ref: "a/b:c d", Out: filepath.Join(dir, "o.tar")}, "want REGISTRY/NAME:TAG"},
		{Options{Binary: script, Ref: "a/b:c", Out: filepath.Join(dir, "o.tar")}, "not an ELF executable"},
		{Options{Binary: filepath.Join(dir, "none"), Ref: "a/b:c", Out: filepath.Join(dir, "o.tar")}, "-binary"},
	} {
		err := Build(c.o)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("Build(%+v) = %v, want %q", c.o, err, c.want)
		}
	}
	if _, err := parseTime("yesterday"); err == nil {
		t.Error("parseTime accepted yesterday")
	}
	// The test binary itself is dynamically linked or not depending on
	// the toolchain; a file that exists is never overwritten either way.
	err := Build(Options{Binary: self, Ref: "a/b:c", Out: exists})
	if err == nil {
		t.Error("Build overwrote an existing file")
	}
}
