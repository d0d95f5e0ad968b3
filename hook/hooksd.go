package hook

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	"github.com/agentcg/agentcg/enroll"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// hooksDFile is one podman/CRI-O hooks.d entry (schema version 1.0.0, see
// containers/common's oci-hooks(5)).
type hooksDFile struct {
	Version string     `json:"version"`
	Hook    specs.Hook `json:"hook"`
	When    struct {
		Annotations map[string]string `json:"annotations"`
	} `json:"when"`
	Stages []string `json:"stages"`
}

// HooksDFiles returns the hooks.d files (file name → content) that run the
// hook at hookPath for containers carrying cfg's annotation key. The
// runtime's timeout is derived from cfg's hook_timeout
// (RuntimeTimeoutSeconds), so the two cannot drift apart. configPath, when
// set, is passed to the hook with --config.
func HooksDFiles(hookPath, configPath string, cfg enroll.Config) (map[string][]byte, error) {
	if !filepath.IsAbs(hookPath) {
		return nil, fmt.Errorf("hook path %q is not absolute: runtimes do not search PATH for hooks", hookPath)
	}
	cfg = cfg.WithDefaults()
	timeout := RuntimeTimeoutSeconds(EffectiveTimeout(cfg))
	out := map[string][]byte{}
	for _, stage := range []Stage{CreateRuntime, Poststop} {
		var f hooksDFile
		f.Version = "1.0.0"
		f.Hook = specs.Hook{Path: hookPath, Args: Args(stage, configPath, ""), Timeout: &timeout}
		// KEY or KEY/pod, the keys the hook reads.
		f.When.Annotations = map[string]string{"^" + regexp.QuoteMeta(cfg.AnnotationKey) + "(/pod)?$": ".*"}
		f.Stages = []string{string(stage)}
		b, err := json.MarshalIndent(f, "", "  ")
		if err != nil {
			return nil, err
		}
		out[fmt.Sprintf("agentcg-%s.json", lower(stage))] = append(b, '\n')
	}
	return out, nil
}

func lower(s Stage) string {
	if s == CreateRuntime {
		return "createruntime"
	}
	return string(s)
}

// WriteHooksD writes HooksDFiles into dir (created if missing) and returns
// the paths written.
func WriteHooksD(dir, hookPath, configPath string, cfg enroll.Config) ([]string, error) {
	files, err := HooksDFiles(hookPath, configPath, cfg)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("hooks.d %s: %w", dir, err)
	}
	var paths []string
	for _, name := range []string{"agentcg-createruntime.json", "agentcg-poststop.json"} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, files[name], 0o644); err != nil {
			return paths, fmt.Errorf("hooks.d: %w", err)
		}
		paths = append(paths, p)
	}
	return paths, nil
}
