package main

import (
	"archive/tar"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// TestImageLayout builds a two-platform image and reads it back as an OCI
// layout: one index naming the image, a manifest per platform, a non-root
// user, the labels, the CA bundle and the entrypoint binary in the layer.
func TestImageLayout(t *testing.T) {
	dir := t.TempDir()
	for _, arch := range []string{"amd64", "arm64"} {
		if err := os.MkdirAll(filepath.Join(dir, arch), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, arch, "fleetagent"), []byte("binary-"+arch), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "image.tar")
	err := run([]string{"-name", "fleetagent.local/fleetagent:t", "-out", out, "-ca-bundle", ca, "-user", "65532:65532",
		"-label", "org.opencontainers.image.version=v9",
		"-binary", "linux/amd64=" + filepath.Join(dir, "amd64", "fleetagent"),
		"-binary", "linux/arm64=" + filepath.Join(dir, "arm64", "fleetagent")})
	if err != nil {
		t.Fatal(err)
	}
	untar(t, out, filepath.Join(dir, "layout"))
	p, err := layout.FromPath(filepath.Join(dir, "layout"))
	if err != nil {
		t.Fatal(err)
	}
	top, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	tm, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(tm.Manifests) != 1 || tm.Manifests[0].Annotations["io.containerd.image.name"] != "fleetagent.local/fleetagent:t" ||
		tm.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "fleetagent.local/fleetagent:t" {
		t.Fatalf("layout index %+v: want one entry naming fleetagent.local/fleetagent:t", tm.Manifests)
	}
	idx, err := top.ImageIndex(tm.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if string(im.MediaType) != "application/vnd.oci.image.index.v1+json" || len(im.Manifests) != 2 {
		t.Fatalf("image index %s with %d manifests, want an OCI index of 2", im.MediaType, len(im.Manifests))
	}
	for _, d := range im.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.OS != "linux" || cf.Architecture != d.Platform.Architecture {
			t.Errorf("config %s/%s under platform %v", cf.OS, cf.Architecture, d.Platform)
		}
		if cf.Config.User != "65532:65532" || strings.Join(cf.Config.Entrypoint, " ") != "/fleetagent" || cf.Config.Labels["org.opencontainers.image.version"] != "v9" {
			t.Errorf("%s: user %q entrypoint %v labels %v", d.Platform.Architecture, cf.Config.User, cf.Config.Entrypoint, cf.Config.Labels)
		}
		layers, err := img.Layers()
		if err != nil || len(layers) != 1 {
			t.Fatalf("%s: %d layers (%v), want 1", d.Platform.Architecture, len(layers), err)
		}
		rc, err := layers[0].Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		files := map[string]string{}
		readTar(t, rc, func(h *tar.Header, b []byte) { files[h.Name] = string(b) })
		rc.Close()
		if files["fleetagent"] != "binary-"+d.Platform.Architecture || files["etc/ssl/certs/ca-certificates.crt"] == "" || !strings.Contains(files["etc/passwd"], ":65532:65532:") {
			t.Errorf("%s: layer files %v: want the binary, the CA bundle and a passwd entry for 65532", d.Platform.Architecture, keys(files))
		}
	}
}

func TestRootUserRefused(t *testing.T) {
	err := run([]string{"-name", "x", "-out", filepath.Join(t.TempDir(), "x.tar"), "-user", "0:0", "-binary", "linux/amd64=/bin/true"})
	if err == nil || !strings.Contains(err.Error(), "must not run as root") {
		t.Fatalf("-user 0:0: got %v, want a refusal", err)
	}
}

func keys(m map[string]string) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	return k
}

// untar unpacks the tar file into dst.
func untar(t *testing.T, file, dst string) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	readTar(t, f, func(h *tar.Header, b []byte) {
		p := filepath.Join(dst, h.Name)
		if h.Typeflag == tar.TypeDir {
			os.MkdirAll(p, 0o755)
			return
		}
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	})
}

// readTar calls fn with each entry of the tar stream r and its content.
func readTar(t *testing.T, r io.Reader, fn func(h *tar.Header, content []byte)) {
	t.Helper()
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		fn(h, b)
	}
}
