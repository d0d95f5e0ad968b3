// Package image builds single-layer "files + entrypoint" OCI images without
// a container daemon, on go-containerregistry: the replay image (Replay),
// and through the same Spec the CRI pause image and the agentcg-nri image
// (cmd/agentcg-image). Builds are reproducible: fixed times, sorted entries.
package image

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// epoch stamps every file and the config so that the same inputs give the same image.
var epoch = time.Unix(0, 0).UTC()

// File is one entry of the image's layer.
type File struct {
	Path string // absolute path inside the image
	Mode int64  // permission bits, e.g. 0o755 (0o1777 for a sticky dir)
	Dir  bool   // a directory; Data is ignored
	Data []byte
	UID  int
	GID  int
}

// Spec is everything that goes into an image: the files of its one layer
// and the runtime config.
type Spec struct {
	Title       string // org.opencontainers.image.title, also the layer's history
	Description string
	Version     string // org.opencontainers.image.version
	Files       []File
	Entrypoint  []string
	Cmd         []string
	Env         []string // default PATH=/
	User        string   // "" runs as root; e.g. "65532:65532"
	WorkingDir  string   // default /
	Labels      map[string]string
	// Arch is the GOARCH of the image; "" takes the entrypoint's ELF machine.
	Arch string
}

// New assembles the image described by spec.
func New(spec Spec) (v1.Image, error) {
	if len(spec.Entrypoint) == 0 {
		return nil, errors.New("image spec: no entrypoint")
	}
	arch := spec.Arch
	if arch == "" {
		var ep *File
		for i := range spec.Files {
			if spec.Files[i].Path == spec.Entrypoint[0] {
				ep = &spec.Files[i]
			}
		}
		if ep == nil {
			return nil, fmt.Errorf("image spec: entrypoint %s is not among the files and no arch is given", spec.Entrypoint[0])
		}
		a, err := elfArch(bytes.NewReader(ep.Data))
		if err != nil {
			return nil, fmt.Errorf("entrypoint %s: %w", ep.Path, err)
		}
		arch = a
	}
	layerTar, err := buildLayer(spec.Files)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "agentcg-image", Comment: spec.Title},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	cf.Created = v1.Time{Time: epoch}
	env := spec.Env
	if env == nil {
		env = []string{"PATH=/"}
	}
	wd := spec.WorkingDir
	if wd == "" {
		wd = "/"
	}
	labels := map[string]string{}
	for k, v := range spec.Labels {
		labels[k] = v
	}
	for k, v := range map[string]string{
		"org.opencontainers.image.title":       spec.Title,
		"org.opencontainers.image.description": spec.Description,
		"org.opencontainers.image.version":     spec.Version,
		"org.opencontainers.image.licenses":    "Apache-2.0",
	} {
		if v != "" {
			labels[k] = v
		}
	}
	cf.Config = v1.Config{
		Entrypoint: spec.Entrypoint,
		Cmd:        spec.Cmd,
		Env:        env,
		User:       spec.User,
		WorkingDir: wd,
		Labels:     labels,
	}
	return mutate.ConfigFile(img, cf)
}

// StaticBinary reads a statically linked Linux ELF for the image at dest
// (mode 0755). It refuses a dynamically linked one: the images have no libc.
func StaticBinary(file, dest string) (File, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return File{}, err
	}
	if _, err := elfArch(bytes.NewReader(data)); err != nil {
		return File{}, fmt.Errorf("%s: %w", file, err)
	}
	return File{Path: dest, Mode: 0o755, Data: data}, nil
}

// Write saves img under every tag as a docker-archive tar, which
// `docker load` and `ctr images import` accept.
func Write(file string, img v1.Image, tags ...string) error {
	refs, err := parseTags(tags)
	if err != nil {
		return err
	}
	m := map[name.Reference]v1.Image{}
	for _, ref := range refs {
		m[ref] = img
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	if err := tarball.MultiRefWriteToFile(file, m); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	return nil
}

// WriteOCI saves img as a tar of an OCI image layout, one index entry per
// tag (org.opencontainers.image.ref.name): for skopeo, crane, `ctr images
// import` and docker ≥ 25.
func WriteOCI(file string, img v1.Image, tags ...string) error {
	refs, err := parseTags(tags)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "agentcg-oci-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("oci layout: %w", err)
	}
	for _, ref := range refs {
		ann := map[string]string{"org.opencontainers.image.ref.name": ref.Name(), "io.containerd.image.name": ref.Name()}
		if err := p.AppendImage(img, layout.WithAnnotations(ann)); err != nil {
			return fmt.Errorf("oci layout %s: %w", ref, err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	return tarDir(dir, file)
}

func parseTags(tags []string) ([]name.Tag, error) {
	if len(tags) == 0 {
		return nil, errors.New("no image tag given")
	}
	var out []name.Tag
	for _, t := range tags {
		ref, err := name.NewTag(t)
		if err != nil {
			return nil, fmt.Errorf("tag %q: %w", t, err)
		}
		out = append(out, ref)
	}
	return out, nil
}

// tarDir writes the regular files under dir into a tar at file, sorted and
// with fixed times.
func tarDir(dir, file string) error {
	var names []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, err := filepath.Rel(dir, p)
			if err != nil {
				return err
			}
			names = append(names, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		return err
	}
	slices.Sort(names)
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			f.Close()
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o644, Size: int64(len(data)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			f.Close()
			return fmt.Errorf("%s: %w", file, err)
		}
		if _, err := tw.Write(data); err != nil {
			f.Close()
			return fmt.Errorf("%s: %w", file, err)
		}
	}
	if err := tw.Close(); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", file, err)
	}
	return f.Close()
}

// elfArch checks that r is a statically linked Linux ELF and returns its
// GOARCH-style architecture.
func elfArch(r io.ReaderAt) (string, error) {
	f, err := elf.NewFile(r)
	if err != nil {
		return "", err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return "", errors.New("dynamically linked (has an ELF interpreter); build with CGO_ENABLED=0")
		}
	}
	switch f.Machine {
	case elf.EM_X86_64:
		return "amd64", nil
	case elf.EM_AARCH64:
		return "arm64", nil
	case elf.EM_RISCV:
		return "riscv64", nil
	case elf.EM_PPC64:
		return "ppc64le", nil
	case elf.EM_S390:
		return "s390x", nil
	}
	return "", fmt.Errorf("unsupported ELF machine %v", f.Machine)
}

// buildLayer writes the single layer by hand: crane.Layer would give files
// mode 0, and we want parent directories, owners and fixed times. Missing
// parent directories are added with mode 0755.
func buildLayer(files []File) ([]byte, error) {
	byPath := map[string]File{}
	for i, f := range files {
		p := path.Clean(f.Path)
		if !path.IsAbs(f.Path) || p == "/" {
			return nil, fmt.Errorf("file %d: path %q must be absolute and not /", i, f.Path)
		}
		if _, dup := byPath[p]; dup {
			return nil, fmt.Errorf("file %d: path %s given twice", i, p)
		}
		f.Path = p
		byPath[p] = f
	}
	for p := range byPath {
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if f, ok := byPath[d]; ok {
				if !f.Dir {
					return nil, fmt.Errorf("path %s: parent %s is a file", p, d)
				}
				continue
			}
			byPath[d] = File{Path: d, Dir: true, Mode: 0o755}
		}
	}
	paths := make([]string, 0, len(byPath))
	for p := range byPath {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		f := byPath[p]
		h := &tar.Header{Name: strings.TrimPrefix(p, "/"), Mode: f.Mode, Uid: f.UID, Gid: f.GID, ModTime: epoch, Format: tar.FormatPAX}
		if f.Dir {
			h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.Data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("layer %s: %w", p, err)
		}
		if !f.Dir {
			if _, err := tw.Write(f.Data); err != nil {
				return nil, fmt.Errorf("layer %s: %w", p, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
