// Command image builds memdiag's container image without a container
// engine: an OCI image layout, as a tar archive, of one layer holding the
// static memdiag binary (/usr/local/bin/memdiag), a passwd and group file
// naming root and nonroot (65532), and /tmp. There is no base image (it is
// FROM scratch), so nothing is pulled and nothing is left
// to pin but the Go toolchain. The archive is reproducible: the same
// binary, reference and -created time give the same bytes.
//
//	CGO_ENABLED=0 go build -tags urfave_cli_no_docs -trimpath -o memdiag ./cmd/memdiag
//	go run ./deploy/image -binary memdiag -ref ghcr.io/memdiag/memdiag:v0.2.0 -o memdiag-image.tar
//
// `make image` does both. Load the archive with `docker load -i`,
// `podman load -i`, `ctr -n k8s.io images import`, or push it with
// `skopeo copy oci-archive:memdiag-image.tar docker://REGISTRY/memdiag:TAG`.
//
// The image's user is nonroot (65532): `memdiag report` and `--help` need
// nothing more. Tracing needs root with CAP_BPF, CAP_PERFMON and
// CAP_SYS_PTRACE (capabilities are effective for root only), so the
// DaemonSet and `docker run` for attach set the user to 0.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Where the binary goes, and the image's user.
const (
	BinaryPath = "/usr/local/bin/memdiag"
	User       = "65532:65532"
)

// Options say what to build.
type Options struct {
	Binary   string    // the static memdiag binary
	Ref      string    // the image reference it is named by, e.g. ghcr.io/memdiag/memdiag:v0.2.0
	Revision string    // the source's git commit, for the labels ("" leaves it out)
	Created  time.Time // the image's creation time, and every file's
	Out      string    // the archive to write (must not exist)
}

func main() {
	var o Options
	var created string
	flag.StringVar(&o.Binary, "binary", "", "the static memdiag binary to put in the image")
	flag.StringVar(&o.Ref, "ref", "", "the image reference, e.g. ghcr.io/memdiag/memdiag:v0.2.0")
	flag.StringVar(&o.Revision, "revision", "", "the source's git commit, for the org.opencontainers.image.revision label")
	flag.StringVar(&created, "created", "", "creation time, RFC 3339 or Unix seconds (default: $SOURCE_DATE_EPOCH, else 1970-01-01)")
	flag.StringVar(&o.Out, "o", "", "the OCI archive to write (must not exist)")
	flag.Parse()
	if created == "" {
		created = os.Getenv("SOURCE_DATE_EPOCH")
	}
	var err error
	if o.Created, err = parseTime(created); err == nil {
		err = Build(o)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(2)
	}
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Unix(n, 0).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return t, fmt.Errorf("-created %q: want RFC 3339 or Unix seconds", s)
	}
	return t.UTC(), nil
}

// Build writes the image archive.
func Build(o Options) error {
	if o.Binary == "" || o.Ref == "" || o.Out == "" {
		return errors.New("give -binary FILE, -ref REGISTRY/NAME:TAG and -o OUT.tar")
	}
	repo, tag, ok := splitRef(o.Ref)
	if !ok {
		return fmt.Errorf("-ref %q: want REGISTRY/NAME:TAG, e.g. ghcr.io/memdiag/memdiag:v0.2.0", o.Ref)
	}
	bin, err := os.ReadFile(o.Binary)
	if err != nil {
		return fmt.Errorf("-binary: %v", err)
	}
	arch, err := staticArch(o.Binary)
	if err != nil {
		return err
	}

	// The layer, and its digest before (diff id) and after compression.
	layer, diffID, err := buildLayer(bin, o.Created)
	if err != nil {
		return err
	}
	version := tag
	labels := map[string]string{
		"org.opencontainers.image.title":       "memdiag",
		"org.opencontainers.image.description": "Which operations make your service's memory grow: an eBPF tracer",
		"org.opencontainers.image.source":      "https://github.com/memdiag/memdiag",
		"org.opencontainers.image.version":     version,
		"org.opencontainers.image.created":     o.Created.Format(time.RFC3339),
		"org.opencontainers.image.base.name":   "scratch",
	}
	if o.Revision != "" {
		labels["org.opencontainers.image.revision"] = o.Revision
	}
	config := map[string]any{
		"created":      o.Created.Format(time.RFC3339),
		"architecture": arch,
		"os":           "linux",
		"config": map[string]any{
			"User":       User,
			"Entrypoint": []string{BinaryPath},
			"Cmd":        []string{"--help"},
			"Env":        []string{"PATH=/usr/local/bin"},
			"WorkingDir": "/tmp",
			"Labels":     labels,
		},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": []string{diffID}},
		"history": []map[string]any{{"created": o.Created.Format(time.RFC3339), "created_by": "memdiag deploy/image: COPY memdiag " + BinaryPath}},
	}
	configJSON, _ := json.Marshal(config)
	manifest := map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        descriptor("application/vnd.oci.image.config.v1+json", configJSON, nil),
		"layers":        []any{descriptor("application/vnd.oci.image.layer.v1.tar+gzip", layer, nil)},
		"annotations":   map[string]string{"org.opencontainers.image.created": o.Created.Format(time.RFC3339)},
	}
	manifestJSON, _ := json.Marshal(manifest)
	index := map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests": []any{descriptor("application/vnd.oci.image.manifest.v1+json", manifestJSON, map[string]string{
			"org.opencontainers.image.ref.name":  tag,   // the OCI layout convention: the tag
			"io.containerd.image.name":           o.Ref, // ctr import, docker load
			"org.opencontainers.image.base.name": "scratch",
		})},
	}
	indexJSON, _ := json.Marshal(index)
	// docker load before 25 reads manifest.json.
	dockerJSON, _ := json.Marshal([]map[string]any{{
		"Config":   "blobs/sha256/" + hexDigest(configJSON),
		"RepoTags": []string{repo + ":" + tag},
		"Layers":   []string{"blobs/sha256/" + hexDigest(layer)},
	}})

	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	dir := func(name string) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: o.Created, Format: tar.FormatPAX})
	}
	file := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: o.Created, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	err = errors.Join(
		dir("blobs/"), dir("blobs/sha256/"),
		file("blobs/sha256/"+hexDigest(configJSON), configJSON),
		file("blobs/sha256/"+hexDigest(layer), layer),
		file("blobs/sha256/"+hexDigest(manifestJSON), manifestJSON),
		file("index.json", indexJSON),
		file("manifest.json", dockerJSON),
		file("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)),
		tw.Close(),
	)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(o.Out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("-o: %v (remove it first: the builder never overwrites)", err)
	}
	if _, err := f.Write(out.Bytes()); err != nil {
		f.Close()
		os.Remove(o.Out)
		return err
	}
	return f.Close()
}

// splitRef splits REGISTRY/NAME:TAG.
func splitRef(ref string) (repo, tag string, ok bool) {
	i := strings.LastIndex(ref, ":")
	if i < 0 || strings.Contains(ref[i:], "/") || strings.Contains(ref, "@") {
		return "", "", false
	}
	repo, tag = ref[:i], ref[i+1:]
	if repo == "" || tag == "" || len(tag) > 128 || strings.ToLower(repo) != repo {
		return "", "", false
	}
	for _, c := range tag {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return "", "", false
		}
	}
	return repo, tag, true
}

// staticArch refuses a binary that needs a dynamic loader (the image has
// none) and returns its OCI architecture.
func staticArch(path string) (string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", fmt.Errorf("-binary %s is not an ELF executable: %v", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return "", fmt.Errorf("-binary %s is dynamically linked: build it with CGO_ENABLED=0 (the image has no libc)", path)
		}
	}
	if f.Machine != elf.EM_X86_64 {
		return "", fmt.Errorf("-binary %s is for %v: memdiag runs on x86_64 only (build with GOARCH=amd64)", path, f.Machine)
	}
	return "amd64", nil
}

// buildLayer makes the gzipped layer and its diff id.
func buildLayer(bin []byte, created time.Time) (layer []byte, diffID string, err error) {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	hdr := func(h *tar.Header, data []byte) {
		h.ModTime, h.Format = created, tar.FormatPAX
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(data))
		}
		if err == nil {
			err = tw.WriteHeader(h)
		}
		if err == nil && len(data) > 0 {
			_, err = tw.Write(data)
		}
	}
	for _, d := range []string{"etc/", "tmp/", "usr/", "usr/local/", "usr/local/bin/"} {
		mode := int64(0o755)
		if d == "tmp/" {
			mode = 0o1777
		}
		hdr(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: mode}, nil)
	}
	hdr(&tar.Header{Typeflag: tar.TypeReg, Name: "etc/passwd", Mode: 0o644}, []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/tmp:/sbin/nologin\n"))
	hdr(&tar.Header{Typeflag: tar.TypeReg, Name: "etc/group", Mode: 0o644}, []byte("root:x:0:\nnonroot:x:65532:\n"))
	hdr(&tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(BinaryPath, "/"), Mode: 0o755}, bin)
	if err == nil {
		err = tw.Close()
	}
	if err != nil {
		return nil, "", err
	}
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	zw.Write(raw.Bytes())
	if err := zw.Close(); err != nil {
		return nil, "", err
	}
	return gz.Bytes(), "sha256:" + hexDigest(raw.Bytes()), nil
}

func hexDigest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func descriptor(mediaType string, blob []byte, annotations map[string]string) map[string]any {
	d := map[string]any{"mediaType": mediaType, "digest": "sha256:" + hexDigest(blob), "size": len(blob)}
	if annotations != nil {
		d["annotations"] = annotations
	}
	return d
}
