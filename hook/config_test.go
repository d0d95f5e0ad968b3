package hook_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentcg/agentcg/enroll"
	"github.com/agentcg/agentcg/hook"
	"github.com/agentcg/agentcg/hook/hookstats"
)

func TestLoadSettings(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name          string
		body          string // "-" : no file
		err           string
		failMode      enroll.FailMode
		failModeKnown bool
		key, log      string
	}{
		{"valid", "fail_mode: closed\nhook_log: /var/log/h.log\n", "", enroll.FailClosed, true, "agentcg.priority", "/var/log/h.log"},
		{"empty file is the defaults", "", "", enroll.FailOpen, true, "agentcg.priority", ""},
		{"missing explicit file", "-", "no such file", enroll.FailOpen, false, "agentcg.priority", ""},
		{"unknown key; fail_mode not said", "hook_timout: 5s\n", "hook_timout", enroll.FailOpen, false, "agentcg.priority", ""},
		{"misspelt fail_mode key is not taken for open", "fail_mod: closed\n", "fail_mod", enroll.FailOpen, false, "agentcg.priority", ""},
		{"explicit open survives a bad field", "fail_mode: open\nannotation_key: x/p\nmode: fast\nhook_log: /l\n", "mode", enroll.FailOpen, true, "x/p", "/l"},
		{"explicit closed survives a wrong type", "fail_mode: closed\nhigh: {max_concurrent: lots}\n", "line 2", enroll.FailClosed, true, "agentcg.priority", ""},
		{"bad fail_mode value", "fail_mode: opne\n", "fail_mode", enroll.FailOpen, false, "agentcg.priority", ""},
		{"not YAML", "fail_mode: [closed\n", "parse config", enroll.FailOpen, false, "agentcg.priority", ""},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, "c"+string(rune('a'+i))+".yaml")
			if tc.body != "-" {
				if err := os.WriteFile(p, []byte(tc.body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			s := hook.LoadSettings(p)
			if tc.err == "" && s.Err != nil || tc.err != "" && (s.Err == nil || !strings.Contains(s.Err.Error(), tc.err)) {
				t.Fatalf("err = %v, want %q", s.Err, tc.err)
			}
			if s.Config.FailMode != tc.failMode || s.FailModeKnown != tc.failModeKnown || s.Config.AnnotationKey != tc.key || s.Config.HookLog != tc.log {
				t.Fatalf("settings %+v", s)
			}
		})
	}
}

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if _, err := hook.CheckConfig(write("fail_mode: closed\nhook_timeout: 20s\nhook_log: " + filepath.Join(dir, "hook.log") + "\n")); err != nil {
		t.Fatal(err)
	}
	for body, want := range map[string]string{
		"fail_mod: closed\n":                    "fail_mod",
		"hook_timeout: soon\n":                  "soon",
		"hook_log: " + dir + "/nowhere/h.log\n": "hook_log",
		"hook_log: rel.log\n":                   "hook_log",
		"hook_metrics: hook.prom\n":             "hook_metrics",
		"policy:\n  delay_max_ms: 5000\n":       "delay_max_ms",
	} {
		if _, err := hook.CheckConfig(write(body)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want one naming %s", body, err, want)
		}
	}
	if _, err := hook.CheckConfig(filepath.Join(dir, "absent.yaml")); err == nil {
		t.Error("a missing file passed the check")
	}
}

func TestTimeoutsAndPaths(t *testing.T) {
	for d, want := range map[time.Duration]int{0: 8, time.Second: 4, 1500 * time.Millisecond: 5, 15 * time.Second: 18, 30 * time.Second: 36, 60 * time.Second: 72} {
		if got := hook.RuntimeTimeoutSeconds(d); got != want {
			t.Errorf("RuntimeTimeoutSeconds(%s) = %d, want %d", d, got, want)
		}
	}
	cfg := enroll.DefaultConfig()
	if got := hook.MetricsPath(cfg); got != hookstats.DefaultPath {
		t.Errorf("default metrics path %s", got)
	}
	cfg.StateDir = "/var/run/x/state/"
	if got := hook.MetricsPath(cfg); got != "/var/run/x/hook.prom" {
		t.Errorf("metrics path beside %s: %s", cfg.StateDir, got)
	}
	cfg.HookMetrics = "/var/lib/node_exporter/agentcg.prom"
	if got := hook.MetricsPath(cfg); got != cfg.HookMetrics {
		t.Errorf("explicit metrics path: %s", got)
	}
}
