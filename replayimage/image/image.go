// Package image builds the replay image (the static agentcg-replay binary as
// entrypoint plus baked-in traces) as a docker-loadable tar, without a daemon.
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
	"time"

	"github.com/agentcg/agentcg/replayimage/trace"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Paths inside the image.
const (
	BinaryPath = "/agentcg-replay"
	TracesPath = "/traces"
)

// epoch stamps every file and the config so that the same inputs give the same image.
var epoch = time.Unix(0, 0).UTC()

// Options says what goes into the image.
type Options struct {
	Binary  string // a static agentcg-replay for linux
	Traces  string // folder whose sub-folders each hold a resources.json
	Version string // image label; the tag is separate
}

// Build assembles the image. It refuses a dynamically linked binary (the
// image has no libc) and any trace that agentcg-replay check would reject.
func Build(opt Options) (v1.Image, error) {
	bin, err := os.ReadFile(opt.Binary)
	if err != nil {
		return nil, err
	}
	arch, err := staticArch(opt.Binary)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", opt.Binary, err)
	}
	traces, err := collectTraces(opt.Traces)
	if err != nil {
		return nil, err
	}
	layerTar, err := buildLayer(bin, traces)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	img, err := mutate.Append(empty.Image, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "agentcg-image", Comment: "agentcg-replay and traces"},
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
	cf.Config = v1.Config{
		Entrypoint: []string{BinaryPath},
		Cmd:        []string{"--help"}, // as in the Dockerfile
		Env:        []string{"PATH=/"},
		WorkingDir: "/",
		Labels: map[string]string{
			"org.opencontainers.image.title":       "agentcg-replay",
			"org.opencontainers.image.description": "Replays AI-agent memory traces as page-exact memory pressure",
			"org.opencontainers.image.version":     opt.Version,
		},
	}
	return mutate.ConfigFile(img, cf)
}

// Write saves img under every tag as a tar that `docker load` and
// `ctr images import` accept.
func Write(file string, img v1.Image, tags ...string) error {
	if len(tags) == 0 {
		return errors.New("no image tag given")
	}
	refs := map[name.Reference]v1.Image{}
	for _, tag := range tags {
		ref, err := name.NewTag(tag)
		if err != nil {
			return fmt.Errorf("tag %q: %w", tag, err)
		}
		refs[ref] = img
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	if err := tarball.MultiRefWriteToFile(file, refs); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	return nil
}

// staticArch checks that the binary is a statically linked Linux ELF and
// returns its GOARCH-style architecture.
func staticArch(file string) (string, error) {
	f, err := elf.Open(file)
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

type traceDir struct {
	name  string
	files map[string][]byte // base name -> content
}

// collectTraces reads every sub-folder of dir that holds a resources.json,
// validating each, and takes all the JSON files beside it.
func collectTraces(dir string) ([]traceDir, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []traceDir
	for _, e := range entries {
		sub := filepath.Join(dir, e.Name())
		if !e.IsDir() {
			continue
		}
		if _, err := os.Stat(filepath.Join(sub, trace.ResourcesFile)); err != nil {
			continue
		}
		if _, err := trace.Load(sub, trace.DefaultOptions()); err != nil {
			return nil, fmt.Errorf("trace %s: %w", sub, err)
		}
		files, err := filepath.Glob(filepath.Join(sub, "*.json"))
		if err != nil {
			return nil, err
		}
		td := traceDir{name: e.Name(), files: map[string][]byte{}}
		for _, f := range files {
			if td.files[filepath.Base(f)], err = os.ReadFile(f); err != nil {
				return nil, err
			}
		}
		out = append(out, td)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no sub-folder holds a %s", dir, trace.ResourcesFile)
	}
	return out, nil
}

// buildLayer writes the single layer by hand: crane.Layer would give the
// binary mode 0, and we also want directories and fixed times.
func buildLayer(bin []byte, traces []traceDir) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: epoch, Format: tar.FormatPAX})
	}
	file := func(name string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := file(BinaryPath[1:], 0o755, bin); err != nil {
		return nil, err
	}
	// /tmp and /results: somewhere to write --out and --step-log files.
	for _, d := range []struct {
		name string
		mode int64
	}{{"tmp", 0o1777}, {"results", 0o777}, {TracesPath[1:], 0o755}} {
		if err := dir(d.name, d.mode); err != nil {
			return nil, err
		}
	}
	for _, t := range traces {
		base := path.Join(TracesPath[1:], t.name)
		if err := dir(base, 0o755); err != nil {
			return nil, err
		}
		names := make([]string, 0, len(t.files))
		for n := range t.files {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			if err := file(path.Join(base, n), 0o644, t.files[n]); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
