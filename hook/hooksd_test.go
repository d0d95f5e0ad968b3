package hook_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/agentcg/agentcg/enroll"
	"github.com/agentcg/agentcg/hook"
)

// The committed hooks.d files are the generator's output for the default
// config: regenerate with
// go run ./hook/cmd/agentcg-hook hooks-d --hook-path /usr/local/bin/agentcg-hook --out hook/hooks.d
func TestCommittedHooksDAreGenerated(t *testing.T) {
	files, err := hook.HooksDFiles("/usr/local/bin/agentcg-hook", "", enroll.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join("hooks.d", name))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("hooks.d/%s is stale; regenerate it:\n%s\nwant:\n%s", name, got, want)
		}
	}
}

func TestHooksDFromConfig(t *testing.T) {
	cfg := enroll.DefaultConfig()
	cfg.HookTimeout = enroll.Duration(45 * time.Second)
	cfg.AnnotationKey = "example.com/prio.class"
	dir := t.TempDir()
	paths, err := hook.WriteHooksD(dir, "/opt/agentcg/agentcg-hook", "/etc/agentcg/c.yaml", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 2 {
		t.Fatalf("paths %v", paths)
	}
	for _, p := range paths {
		var f struct {
			Version string `json:"version"`
			Hook    struct {
				Path    string   `json:"path"`
				Args    []string `json:"args"`
				Timeout int      `json:"timeout"`
			} `json:"hook"`
			When struct {
				Annotations map[string]string `json:"annotations"`
			} `json:"when"`
			Stages []string `json:"stages"`
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatal(err)
		}
		stage := f.Stages[0]
		if f.Version != "1.0.0" || f.Hook.Timeout != 54 || f.Hook.Path != "/opt/agentcg/agentcg-hook" ||
			!slices.Equal(f.Hook.Args, []string{"agentcg-hook", "--config", "/etc/agentcg/c.yaml", stage}) {
			t.Fatalf("%s: %+v", p, f)
		}
		for re := range f.When.Annotations {
			m := regexp.MustCompile(re)
			if !m.MatchString("example.com/prio.class") || !m.MatchString("example.com/prio.class/pod") || m.MatchString("exampleXcom/prio.class") || m.MatchString("example.com/prio.class2") {
				t.Fatalf("annotation pattern %q", re)
			}
		}
	}
	if _, err := hook.HooksDFiles("agentcg-hook", "", cfg); err == nil {
		t.Fatal("relative hook path accepted")
	}
}
