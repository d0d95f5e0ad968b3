package image

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"

	"github.com/agentcg/agentcg/replayimage/trace"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Paths inside the replay image.
const (
	BinaryPath = "/agentcg-replay"
	TracesPath = "/traces"
)

// Options says what goes into the replay image.
type Options struct {
	Binary  string // a static agentcg-replay for linux
	Traces  string // folder whose sub-folders each hold a resources.json
	Version string // image label; the tag is separate
}

// Build assembles the replay image. It refuses a dynamically linked binary
// (the image has no libc) and any trace that agentcg-replay check would reject.
func Build(opt Options) (v1.Image, error) {
	spec, err := Replay(opt)
	if err != nil {
		return nil, err
	}
	return New(spec)
}

// Replay is the replay image's spec: agentcg-replay as entrypoint, the
// traces under /traces/<name>/, and writable /tmp and /results for --out
// and --step-log files.
func Replay(opt Options) (Spec, error) {
	bin, err := StaticBinary(opt.Binary, BinaryPath)
	if err != nil {
		return Spec{}, err
	}
	files := []File{bin, {Path: "/tmp", Dir: true, Mode: 0o1777}, {Path: "/results", Dir: true, Mode: 0o777}, {Path: TracesPath, Dir: true, Mode: 0o755}}
	traces, err := collectTraces(opt.Traces)
	if err != nil {
		return Spec{}, err
	}
	files = append(files, traces...)
	return Spec{
		Title:       "agentcg-replay",
		Description: "Replays AI-agent memory traces as page-exact memory pressure",
		Version:     opt.Version,
		Files:       files,
		Entrypoint:  []string{BinaryPath},
		Cmd:         []string{"--help"}, // as in the Dockerfile
	}, nil
}

// collectTraces reads every sub-folder of dir that holds a resources.json,
// validating each, and takes all the JSON files beside it.
func collectTraces(dir string) ([]File, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []File
	n := 0
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
		slices.Sort(files)
		base := path.Join(TracesPath, e.Name())
		out = append(out, File{Path: base, Dir: true, Mode: 0o755})
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				return nil, err
			}
			out = append(out, File{Path: path.Join(base, filepath.Base(f)), Mode: 0o644, Data: data})
		}
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("%s: no sub-folder holds a %s", dir, trace.ResourcesFile)
	}
	return out, nil
}
