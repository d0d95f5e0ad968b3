package image

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

const tracesDir = "../traces"

// replayBin is the real agentcg-replay, compiled once by TestMain the way
// `make build` does.
var replayBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "agentcg-image-test")
	if err != nil {
		panic(err)
	}
	replayBin = filepath.Join(dir, "agentcg-replay")
	cmd := exec.Command("go", "build", "-trimpath", "-o", replayBin, "../cmd/agentcg-replay")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build agentcg-replay: %v\n%s", err, b)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestImageTar(t *testing.T) {
	bin := replayBin
	img, err := Build(Options{Binary: bin, Traces: tracesDir, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "agentcg-replay.tar")
	if err := Write(file, img, "agentcg/replay:test", "agentcg/replay:latest"); err != nil {
		t.Fatal(err)
	}

	// The archive holds manifest.json naming the tag, a config and a layer.
	top := map[string][]byte{}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		top[h.Name] = b
	}
	f.Close()
	var manifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(top["manifest.json"], &manifest); err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	if len(manifest) != 1 || !slices.Equal(manifest[0].RepoTags, []string{"agentcg/replay:latest", "agentcg/replay:test"}) && !slices.Equal(manifest[0].RepoTags, []string{"agentcg/replay:test", "agentcg/replay:latest"}) || len(manifest[0].Layers) != 1 {
		t.Fatalf("manifest %+v", manifest)
	}
	var cfg struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
		Config       struct{ Entrypoint []string }
	}
	if err := json.Unmarshal(top[manifest[0].Config], &cfg); err != nil {
		t.Fatalf("config %s: %v", manifest[0].Config, err)
	}
	if cfg.OS != "linux" || cfg.Architecture != runtime.GOARCH || len(cfg.Config.Entrypoint) != 1 || cfg.Config.Entrypoint[0] != BinaryPath {
		t.Fatalf("config os %q arch %q entrypoint %v", cfg.OS, cfg.Architecture, cfg.Config.Entrypoint)
	}
	if _, ok := top[manifest[0].Layers[0]]; !ok {
		t.Fatalf("layer %s missing from the archive", manifest[0].Layers[0])
	}

	// Read it back as an image: the entrypoint is an executable static ELF,
	// and the traces sit under /traces/<name>/.
	tag, _ := name.NewTag("agentcg/replay:test")
	loaded, err := tarball.ImageFromPath(file, &tag)
	if err != nil {
		t.Fatal(err)
	}
	fs := mutate.Extract(loaded)
	defer fs.Close()
	root := t.TempDir()
	var entry *tar.Header
	files := map[string]bool{}
	lr := tar.NewReader(fs)
	for {
		h, err := lr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = true
		if "/"+h.Name == BinaryPath {
			entry = h
		}
		if h.Typeflag == tar.TypeReg {
			p := filepath.Join(root, h.Name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(lr)
			if err := os.WriteFile(p, b, os.FileMode(h.Mode)&0o777); err != nil {
				t.Fatal(err)
			}
		}
	}
	if entry == nil || entry.Typeflag != tar.TypeReg || entry.Mode&0o777 != 0o755 {
		t.Fatalf("entrypoint header %+v, want a regular file with mode 0755", entry)
	}
	for _, want := range []string{"traces/Medical_Bio_Hard/resources.json", "traces/ML_Scientific_Hard/resources.json",
		"traces/CLI_Tools_Easy/resources.json", "traces/Medical_Bio_Hard/tool_calls.json"} {
		if !files[want] {
			t.Errorf("image lacks /%s", want)
		}
	}
	ef, err := elf.Open(filepath.Join(root, BinaryPath))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("entrypoint is dynamically linked")
		}
	}
	ef.Close()

	// The extracted entrypoint runs and reads the baked-in trace.
	out, err := exec.Command(filepath.Join(root, BinaryPath), "check", filepath.Join(root, "traces/Medical_Bio_Hard")).Output()
	if err != nil {
		t.Fatalf("extracted entrypoint: %v", err)
	}
	if !bytes.Contains(out, []byte(`"peak_bytes": 4060000000`)) {
		t.Fatalf("check output %s", out)
	}
}

func TestBuildRefuses(t *testing.T) {
	bin := replayBin
	bad := t.TempDir()
	if err := os.MkdirAll(filepath.Join(bad, "broken"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bad, "broken", "resources.json"), []byte(`{"samples":[]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	dynamic, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opt  Options
		want string
	}{
		{"dynamic binary", Options{Binary: dynamic, Traces: tracesDir}, "dynamically linked"},
		{"invalid trace", Options{Binary: bin, Traces: bad}, "sample 0"},
		{"no traces", Options{Binary: bin, Traces: t.TempDir()}, "no sub-folder"},
		{"not ELF", Options{Binary: filepath.Join(tracesDir, "README.md"), Traces: tracesDir}, "README.md"},
	}
	for _, tt := range tests {
		if _, err := Build(tt.opt); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one containing %q", tt.name, err, tt.want)
		}
	}
}

// TestSpecs builds the pause and agentcg-nri images from the same static
// binary and checks entrypoint, user, parent directories and modes.
func TestSpecs(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spec  func() (Spec, error)
		entry string
		paths map[string]int64 // path in the layer -> mode
	}{
		{"pause", func() (Spec, error) { return Pause(replayBin) }, "/pause", map[string]int64{"pause": 0o755}},
		{"nri", func() (Spec, error) { return NRI(replayBin, "v1") }, "/agentcg-nri", map[string]int64{"agentcg-nri": 0o755, "etc/": 0o755, "etc/agentcg/": 0o755, "tmp/": 0o1777}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec, err := tc.spec()
			if err != nil {
				t.Fatal(err)
			}
			img, err := New(spec)
			if err != nil {
				t.Fatal(err)
			}
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if cf.Architecture != runtime.GOARCH || cf.Config.Entrypoint[0] != tc.entry || cf.Config.User != "" {
				t.Errorf("config arch %s entrypoint %v user %q", cf.Architecture, cf.Config.Entrypoint, cf.Config.User)
			}
			got := layerModes(t, img)
			if len(got) != len(tc.paths) {
				t.Errorf("layer entries %v, want %v", got, tc.paths)
			}
			for p, mode := range tc.paths {
				if got[p] != mode {
					t.Errorf("%s: mode %o, want %o (layer %v)", p, got[p], mode, got)
				}
			}
		})
	}
}

// TestReproducible: the same inputs give the same digest.
func TestReproducible(t *testing.T) {
	var digests []string
	for range 2 {
		spec, err := NRI(replayBin, "v1")
		if err != nil {
			t.Fatal(err)
		}
		img, err := New(spec)
		if err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, d.String())
	}
	if digests[0] != digests[1] {
		t.Errorf("digests differ: %v", digests)
	}
}

func TestNewRefuses(t *testing.T) {
	bin, err := StaticBinary(replayBin, "/x")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		spec Spec
		want string
	}{
		{"no entrypoint", Spec{Files: []File{bin}}, "no entrypoint"},
		{"entrypoint missing", Spec{Files: []File{bin}, Entrypoint: []string{"/y"}}, "/y is not among the files"},
		{"relative path", Spec{Files: []File{bin, {Path: "rel", Data: []byte("x")}}, Entrypoint: []string{"/x"}}, `file 1: path "rel"`},
		{"duplicate", Spec{Files: []File{bin, bin}, Entrypoint: []string{"/x"}}, "given twice"},
		{"file as parent", Spec{Files: []File{bin, {Path: "/x/y", Data: []byte("y")}}, Entrypoint: []string{"/x"}}, "parent /x is a file"},
	} {
		if _, err := New(tc.spec); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

// TestWriteOCI reads the OCI layout tar back: an index whose manifest
// carries the ref name, and the same image digest.
func TestWriteOCI(t *testing.T) {
	spec, err := Pause(replayBin)
	if err != nil {
		t.Fatal(err)
	}
	img, err := New(spec)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "pause.oci.tar")
	if err := WriteOCI(file, img, "docker.io/agentcg/pause:1"); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	top := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		top[h.Name], _ = io.ReadAll(tr)
	}
	if _, ok := top["oci-layout"]; !ok {
		t.Fatalf("no oci-layout file among %d entries", len(top))
	}
	var index struct {
		Manifests []struct {
			Digest      string
			Annotations map[string]string
		}
	}
	if err := json.Unmarshal(top["index.json"], &index); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	if len(index.Manifests) != 1 || index.Manifests[0].Digest != d.String() ||
		index.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "index.docker.io/agentcg/pause:1" {
		t.Fatalf("index %+v, want digest %s", index, d)
	}
	if err := WriteOCI(file, img); err == nil {
		t.Error("WriteOCI without tags succeeded")
	}
}

func layerModes(t *testing.T, img v1.Image) map[string]int64 {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	out := map[string]int64{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = h.Mode
	}
}
