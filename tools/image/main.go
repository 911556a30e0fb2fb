// Command imagebuild packs static binaries into an OCI image without a
// container engine or a registry, and writes it as an OCI image layout in a
// tar file (an "OCI archive"). One image per platform, all under one image
// index, each a single layer holding the binary, an optional CA bundle and the
// passwd/group entries of the user it runs as.
//
//	imagebuild -name fleetagent.local/fleetagent:dev -out dist/image.tar \
//	  -binary linux/amd64=dist/linux-amd64/fleetagent \
//	  -binary linux/arm64=dist/linux-arm64/fleetagent \
//	  -ca-bundle /etc/ssl/certs/ca-certificates.crt -user 65532:65532 \
//	  -label org.opencontainers.image.version=v1.2.3
//
// The binary goes to /<its file name> and is the entrypoint. The layout's
// index names the image in both annotations importers read:
// io.containerd.image.name (containerd's `ctr images import`, docker load)
// and org.opencontainers.image.ref.name (skopeo, crane). Files carry a fixed
// timestamp, so the same inputs give the same digests.
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// epoch is every file's and the config's timestamp: reproducible digests.
var epoch = time.Unix(0, 0).UTC()

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "imagebuild:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fset := flag.NewFlagSet("imagebuild", flag.ContinueOnError)
	name := fset.String("name", "", "image reference to record in the layout, e.g. fleetagent.local/fleetagent:dev (required)")
	out := fset.String("out", "", "tar file to write the OCI image layout to (required)")
	caBundle := fset.String("ca-bundle", "", "PEM CA bundle to install as /etc/ssl/certs/ca-certificates.crt (optional)")
	user := fset.String("user", "65532:65532", "uid:gid the image runs as; must not be 0")
	var binaries, labels, cmdArgs multi
	fset.Var(&binaries, "binary", "os/arch=path of a static binary, once per platform (required)")
	fset.Var(&labels, "label", "key=value OCI label on every image config (repeatable)")
	fset.Var(&cmdArgs, "arg", "argument after the entrypoint (repeatable)")
	if err := fset.Parse(args); err != nil {
		return err
	}
	if *name == "" || *out == "" || len(binaries) == 0 {
		return errors.New("-name, -out and at least one -binary os/arch=path are required (see -help)")
	}
	uid, gid, err := parseUser(*user)
	if err != nil {
		return err
	}
	lbl := map[string]string{}
	for _, l := range labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return fmt.Errorf("-label %q: want key=value", l)
		}
		lbl[k] = v
	}
	var ca []byte
	if *caBundle != "" {
		if ca, err = os.ReadFile(*caBundle); err != nil {
			return fmt.Errorf("-ca-bundle: %w (Debian: apt-get install ca-certificates)", err)
		}
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	seen := map[string]bool{}
	for _, b := range binaries {
		plat, path, ok := strings.Cut(b, "=")
		osName, arch, ok2 := strings.Cut(plat, "/")
		if !ok || !ok2 || osName == "" || arch == "" || path == "" {
			return fmt.Errorf("-binary %q: want os/arch=path, e.g. linux/amd64=dist/linux-amd64/fleetagent", b)
		}
		if seen[plat] {
			return fmt.Errorf("-binary: platform %s given twice", plat)
		}
		seen[plat] = true
		img, err := platformImage(osName, arch, path, ca, uid, gid, lbl, cmdArgs)
		if err != nil {
			return err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: osName, Architecture: arch}},
		})
	}
	return writeArchive(*out, *name, idx)
}

func parseUser(s string) (int, int, error) {
	u, g, ok := strings.Cut(s, ":")
	uid, err1 := strconv.Atoi(u)
	gid, err2 := strconv.Atoi(g)
	if !ok || err1 != nil || err2 != nil || uid < 0 || gid < 0 {
		return 0, 0, fmt.Errorf("-user %q: want numeric uid:gid, e.g. 65532:65532", s)
	}
	if uid == 0 {
		return 0, 0, fmt.Errorf("-user %q: the image must not run as root", s)
	}
	return uid, gid, nil
}

func platformImage(osName, arch, binPath string, ca []byte, uid, gid int, labels map[string]string, args []string) (v1.Image, error) {
	bin, err := os.ReadFile(binPath)
	if err != nil {
		return nil, fmt.Errorf("-binary %s/%s: %w (build it first, e.g. make build)", osName, arch, err)
	}
	entry := "/" + filepath.Base(binPath)
	files := []file{
		{name: "etc/", mode: 0o755 | fs.ModeDir},
		{name: "etc/passwd", mode: 0o644, data: fmt.Appendf(nil, "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", uid, gid)},
		{name: "etc/group", mode: 0o644, data: fmt.Appendf(nil, "root:x:0:\nnonroot:x:%d:\n", gid)},
		{name: "home/", mode: 0o755 | fs.ModeDir},
		{name: "home/nonroot/", mode: 0o700 | fs.ModeDir, uid: uid, gid: gid},
		{name: "tmp/", mode: 0o1777 | fs.ModeDir | fs.ModeSticky},
		{name: entry[1:], mode: 0o755, data: bin},
	}
	env := []string{"PATH=/"}
	if ca != nil {
		files = append(files,
			file{name: "etc/ssl/", mode: 0o755 | fs.ModeDir},
			file{name: "etc/ssl/certs/", mode: 0o755 | fs.ModeDir},
			file{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, data: ca})
		env = append(env, "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt")
	}
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })
	layerTar, err := tarFiles(files)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.AppendLayers(img, layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = osName, arch
	cf.Created = v1.Time{Time: epoch}
	cf.Config.Entrypoint = []string{entry}
	cf.Config.Cmd = args
	cf.Config.User = fmt.Sprintf("%d:%d", uid, gid)
	cf.Config.Env = env
	cf.Config.WorkingDir = "/"
	cf.Config.Labels = labels
	return mutate.ConfigFile(img, cf)
}

type file struct {
	name     string
	mode     fs.FileMode
	uid, gid int
	data     []byte
}

func tarFiles(files []file) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: int64(f.mode.Perm()), Uid: f.uid, Gid: f.gid, ModTime: epoch, Format: tar.FormatPAX}
		if f.mode&fs.ModeSticky != 0 {
			h.Mode |= 0o1000
		}
		if f.mode.IsDir() {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeArchive writes idx as an OCI image layout into a temporary directory
// and tars that directory into out.
func writeArchive(out, name string, idx v1.ImageIndex) error {
	dir, err := os.MkdirTemp("", "imagebuild-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		"io.containerd.image.name":          name,
		"org.opencontainers.image.ref.name": name,
	})); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	f, err := os.Create(out + ".tmp")
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		info, err := d.Info()
		if err != nil {
			return err
		}
		h, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		h.Name, h.ModTime, h.Uid, h.Gid, h.Uname, h.Gname = filepath.ToSlash(rel), epoch, 0, 0, "", ""
		if d.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(out + ".tmp")
		return fmt.Errorf("write %s: %w", out, err)
	}
	return os.Rename(out+".tmp", out)
}
