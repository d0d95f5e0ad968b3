// Command pauseimage packs a static pause binary into a docker-load/ctr-import
// tarball (one layer holding /pause, entrypoint /pause) with the project's
// image builder (replayimage/image, on go-containerregistry).
// scripts/vm/build-rootfs.sh runs it on the host; the guest init imports the
// result into containerd's k8s.io namespace so CRI finds its pinned sandbox
// image without a registry. `agentcg-image pause` does the same.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/agentcg/agentcg/replayimage/image"
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

func run(bin, tag, out string) error {
	if bin == "" || out == "" {
		return errors.New("--binary and --out are required")
	}
	spec, err := image.Pause(bin)
	if err != nil {
		return fmt.Errorf("pause image: %w", err)
	}
	img, err := image.New(spec)
	if err != nil {
		return fmt.Errorf("pause image: %w", err)
	}
	return image.Write(out, img, tag)
}
