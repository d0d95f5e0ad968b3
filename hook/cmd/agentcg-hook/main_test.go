package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentcg/agentcg/hook/hookstats"
	"github.com/agentcg/agentcg/internal/version"
)

func runHook(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(context.Background(), time.Now(), args, strings.NewReader(stdin), &o, &e)
	return code, o.String(), e.String()
}

func writeConfig(t *testing.T, body string) (path, dir string) {
	t.Helper()
	dir = t.TempDir()
	path = filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, dir
}

// The runtime gives the flags before the stage (the wrapper's injected
// args); both orders parse.
func TestStageArgs(t *testing.T) {
	cfg, dir := writeConfig(t, "fail_mode: open\n")
	metrics := filepath.Join(dir, "m.prom")
	if err := os.WriteFile(cfg, []byte("fail_mode: open\nhook_metrics: "+metrics+"\nstate_dir: "+filepath.Join(dir, "state")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	st := `{"ociVersion":"1.2.0","id":"c1","status":"creating","pid":1,"annotations":{"other":"x"}}`
	for _, args := range [][]string{
		{"--config", cfg, "--timeout", "2s", "createRuntime"},
		{"createRuntime", "--config=" + cfg, "--log-format", "json"},
		{"--config", cfg, "prestart"},
		{"--config", cfg, "poststop"},
		{"--config", cfg, "detach"},
	} {
		if code, _, e := runHook(t, st, args...); code != 0 {
			t.Fatalf("%q: exit %d: %s", args, code, e)
		}
	}
	c, err := hookstats.Read(metrics)
	if err != nil || c.Total("createRuntime", "skipped") != 3 || c.Total("poststop", "skipped") != 2 {
		t.Fatalf("counts %+v, %v", c.Runs, err)
	}
	for _, args := range [][]string{{"poststart"}, {}, {"--log-format", "xml", "createRuntime"}, {"--timeout", "soon", "createRuntime"}} {
		if code, _, _ := runHook(t, st, args...); code != 2 {
			t.Errorf("%q: exit %d, want 2 (usage)", args, code)
		}
	}
}

func TestRefusalExitsOne(t *testing.T) {
	cfg, _ := writeConfig(t, "fail_mod: open\n") // broken: fail_mode unknown
	st := `{"ociVersion":"1.2.0","id":"c1","status":"creating","pid":1,"annotations":{"agentcg.priority":"low"}}`
	code, _, e := runHook(t, st, "--config", cfg, "--log-format", "json", "createRuntime")
	if code != 1 || !strings.Contains(e, "fail_mod") {
		t.Fatalf("exit %d, stderr %s", code, e)
	}
	// JSON log lines, lower-case levels.
	var saw bool
	for _, line := range strings.Split(e, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["level"] == "error" && m["reason"] == "config_invalid" {
			saw = true
		}
	}
	if !saw {
		t.Fatalf("no JSON error line with reason config_invalid:\n%s", e)
	}
	// The same broken config never touches an unannotated container.
	if code, _, e := runHook(t, `{"id":"c2","annotations":{}}`, "--config", cfg, "createRuntime"); code != 0 {
		t.Fatalf("unannotated: exit %d: %s", code, e)
	}
}

func TestCheckConfigCommand(t *testing.T) {
	good, _ := writeConfig(t, "fail_mode: closed\nhook_timeout: 12s\n")
	code, out, e := runHook(t, "", "check-config", "--config", good)
	if code != 0 || !strings.Contains(out, "ok") || !strings.Contains(out, "runtime timeout 15 s") {
		t.Fatalf("exit %d\n%s%s", code, out, e)
	}
	bad, _ := writeConfig(t, "fail_mode: closed\nanotation_key: x\n")
	if code, _, e := runHook(t, "", "--config", bad, "check-config"); code != 1 || !strings.Contains(e, "anotation_key") {
		t.Fatalf("typo: exit %d: %s", code, e)
	}
}

func TestHooksDCommand(t *testing.T) {
	cfg, dir := writeConfig(t, "hook_timeout: 30s\n")
	out := filepath.Join(dir, "hooks.d")
	if code, _, e := runHook(t, "", "hooks-d", "--config", cfg, "--out", out, "--hook-path", "/usr/bin/agentcg-hook"); code != 0 {
		t.Fatalf("exit %d: %s", code, e)
	}
	b, err := os.ReadFile(filepath.Join(out, "agentcg-createruntime.json"))
	if err != nil || !strings.Contains(string(b), `"timeout": 36`) || !strings.Contains(string(b), cfg) {
		t.Fatalf("%s %v", b, err)
	}
	bad, _ := writeConfig(t, "hook_timeout: 30s\nfail_mode: maybe\n")
	if code, _, _ := runHook(t, "", "hooks-d", "--config", bad, "--out", out); code != 1 {
		t.Fatalf("hooks-d from a bad config: exit %d", code)
	}
	if code, _, _ := runHook(t, "", "hooks-d", "--config", cfg); code != 2 {
		t.Fatalf("hooks-d without --out: exit %d", code)
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := runHook(t, "", "--version")
	if code != 0 || !strings.Contains(out, version.Version) {
		t.Fatalf("exit %d: %q", code, out)
	}
}

func TestPreloadCommand(t *testing.T) {
	cfg, _ := writeConfig(t, "mode: native\n")
	code, out, e := runHook(t, "", "preload", "--config", cfg)
	if code != 0 || !strings.Contains(out, "mode native: nothing to load") {
		t.Fatalf("exit %d: %s%s", code, out, e)
	}
	bad, _ := writeConfig(t, "mode: fast\n")
	if code, _, e := runHook(t, "", "preload", "--config", bad); code != 1 || !strings.Contains(e, "mode") {
		t.Fatalf("bad config: exit %d: %s", code, e)
	}
}
