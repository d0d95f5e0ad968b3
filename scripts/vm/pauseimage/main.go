// Command pauseimage packs a static pause binary into a docker-load/ctr-import
// tarball (docker-archive format: one layer holding /pause, entrypoint /pause).
// scripts/vm/build-rootfs.sh runs it on the host; the guest init imports the
// result into containerd's k8s.io namespace so CRI finds its pinned sandbox
// image without a registry.
//
// It writes the archive with the standard library because the module's
// go.sum lacks go-containerregistry's zstd dependency; switch to
// replayimage/image once that package lands.
package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"
)

func main() {
	bin := flag.String("binary", "", "static pause binary")
	tag := flag.String("tag", "docker.io/agentcg/pause:1", "image tag")
	out := flag.String("out", "", "output tarball")
	flag.Parse()
	if err := run(*bin, *tag, *out); err != nil {
		fmt.Fprintln(os.Stderr, "pauseimage:", err)
		os.Exit(1)
	}
}

type file struct {
	name string
	mode int64
	data []byte
}

func tarOf(files []file) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("tar %s: %w", f.name, err)
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, fmt.Errorf("tar %s: %w", f.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func run(bin, tag, out string) error {
	if bin == "" || out == "" {
		return fmt.Errorf("--binary and --out are required")
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return fmt.Errorf("read pause binary: %w", err)
	}
	layer, err := tarOf([]file{{"pause", 0o755, data}})
	if err != nil {
		return err
	}
	sum := sha256.Sum256(layer)
	layerHex := hex.EncodeToString(sum[:])
	cfg, err := json.Marshal(map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"created":      time.Unix(0, 0).UTC(),
		"config":       map[string]any{"Entrypoint": []string{"/pause"}},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + layerHex}},
	})
	if err != nil {
		return err
	}
	csum := sha256.Sum256(cfg)
	cfgName := hex.EncodeToString(csum[:]) + ".json"
	layerName := layerHex + "/layer.tar"
	manifest, err := json.Marshal([]map[string]any{{"Config": cfgName, "RepoTags": []string{tag}, "Layers": []string{layerName}}})
	if err != nil {
		return err
	}
	archive, err := tarOf([]file{{cfgName, 0o644, cfg}, {layerName, 0o644, layer}, {"manifest.json", 0o644, manifest}})
	if err != nil {
		return err
	}
	if err := os.WriteFile(out, archive, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	return nil
}
