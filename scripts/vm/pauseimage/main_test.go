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
	"runtime"
	"testing"
)

// TestArchive reads the docker-archive back: one manifest entry with the tag,
// a config whose diff_id is the layer's digest and whose entrypoint is /pause,
// and a layer holding the binary, executable.
func TestArchive(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "pause")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "../pause")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build pause: %v\n%s", err, b)
	}
	out := filepath.Join(dir, "pause.tar")
	if err := run(bin, "docker.io/agentcg/pause:1", out); err != nil {
		t.Fatal(err)
	}
	files := untar(t, mustRead(t, out))
	var manifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(files["manifest.json"], &manifest); err != nil {
		t.Fatal(err)
	}
	if len(manifest) != 1 || len(manifest[0].Layers) != 1 || len(manifest[0].RepoTags) != 1 || manifest[0].RepoTags[0] != "docker.io/agentcg/pause:1" {
		t.Fatalf("manifest = %+v", manifest)
	}
	var cfg struct {
		Architecture string `json:"architecture"`
		OS           string `json:"os"`
		Config       struct{ Entrypoint []string }
		RootFS       struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(files[manifest[0].Config], &cfg); err != nil {
		t.Fatal(err)
	}
	// The archive stores the layer gzipped; the diff_id is of the tar inside.
	zr, err := gzip.NewReader(bytes.NewReader(files[manifest[0].Layers[0]]))
	if err != nil {
		t.Fatal(err)
	}
	layer, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(layer)
	if len(cfg.RootFS.DiffIDs) != 1 || cfg.RootFS.DiffIDs[0] != "sha256:"+hex.EncodeToString(sum[:]) {
		t.Errorf("diff_ids %v do not match the layer digest", cfg.RootFS.DiffIDs)
	}
	if cfg.OS != "linux" || cfg.Architecture != runtime.GOARCH || len(cfg.Config.Entrypoint) != 1 || cfg.Config.Entrypoint[0] != "/pause" {
		t.Errorf("config = %+v", cfg)
	}
	tr := tar.NewReader(bytes.NewReader(layer))
	h, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	if h.Name != "pause" || h.Mode != 0o755 {
		t.Errorf("layer entry %s mode %o, want pause 0755", h.Name, h.Mode)
	}
}

func TestRunErrors(t *testing.T) {
	for _, tc := range []struct{ name, bin, out string }{
		{"no binary flag", "", "x.tar"},
		{"no out flag", "pause", ""},
		{"missing binary", filepath.Join(t.TempDir(), "nope"), filepath.Join(t.TempDir(), "x.tar")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := run(tc.bin, "docker.io/agentcg/pause:1", tc.out); err == nil {
				t.Error("run succeeded, want an error")
			}
		})
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func untar(t *testing.T, b []byte) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = data
	}
}
