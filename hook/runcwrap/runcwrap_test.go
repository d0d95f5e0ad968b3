package runcwrap_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/agentcg/agentcg/hook/runcwrap"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestParse(t *testing.T) {
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		sub        string
		bundle     string
		rest       []string
		hook, real string
	}{
		{"docker create", []string{"--root", "/run/r", "--log", "/l.json", "--log-format", "json", "--systemd-cgroup", "create", "--bundle", "/b", "--pid-file", "/p", "id1"},
			nil, "create", "/b", []string{"--root", "/run/r", "--log", "/l.json", "--log-format", "json", "--systemd-cgroup", "create", "--bundle", "/b", "--pid-file", "/p", "id1"}, "/opt/agentcg/agentcg-hook", "runc"},
		{"short bundle and our flags", []string{"--agentcg-hook=/x/hook", "--agentcg-runtime", "crun", "create", "-b", "rel", "id"},
			nil, "create", "/cwd/rel", []string{"create", "-b", "rel", "id"}, "/x/hook", "crun"},
		{"bundle= and default cwd", []string{"create", "id"}, nil, "create", "/cwd", []string{"create", "id"}, "/opt/agentcg/agentcg-hook", "runc"},
		{"env", []string{"--root=/r", "create", "--bundle=/b", "id"}, map[string]string{runcwrap.EnvHook: "/e/hook", runcwrap.EnvRuntime: "/usr/bin/runc"},
			"create", "/b", []string{"--root=/r", "create", "--bundle=/b", "id"}, "/e/hook", "/usr/bin/runc"},
		{"start passes through", []string{"--root", "/r", "start", "id"}, nil, "start", "", []string{"--root", "/r", "start", "id"}, "/opt/agentcg/agentcg-hook", "runc"},
		{"version", []string{"--version"}, nil, "", "", []string{"--version"}, "/opt/agentcg/agentcg-hook", "runc"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env = tc.env
			inv, err := runcwrap.Parse(tc.args, getenv, "/opt/agentcg/agentcg-runc", "/cwd")
			if err != nil {
				t.Fatal(err)
			}
			if inv.Subcommand != tc.sub || inv.Bundle != tc.bundle || !slices.Equal(inv.Args, tc.rest) || inv.Hook != tc.hook || inv.Runtime != tc.real {
				t.Fatalf("got %+v", inv)
			}
		})
	}
	if _, err := runcwrap.Parse([]string{"create", "--agentcg-hook"}, getenv, "/x", "/"); err == nil {
		t.Fatal("flag without value accepted")
	}
}

const bundleSpec = `{"ociVersion":"1.2.0","process":{"args":["sh"]},"linux":{"cgroupsPath":"/docker/x"},
"hooks":{"prestart":[{"path":"/usr/bin/other"}]},"x-unknown":{"keep":true}}`

func TestInject(t *testing.T) {
	bundle := t.TempDir()
	cfgPath := filepath.Join(bundle, "config.json")
	if err := os.WriteFile(cfgPath, []byte(bundleSpec), 0o600); err != nil {
		t.Fatal(err)
	}
	inv, err := runcwrap.Parse([]string{"--agentcg-config=/etc/a.yaml", "create", "--bundle", bundle, "id"}, func(string) string { return "" }, "/opt/bin/agentcg-runc", "/")
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // idempotent
		if err := inv.Modify(); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	h := spec.Hooks
	if len(h.CreateRuntime) != 1 || len(h.Poststop) != 1 || len(h.Prestart) != 1 {
		t.Fatalf("hooks %+v", h)
	}
	cr := h.CreateRuntime[0]
	if cr.Path != "/opt/bin/agentcg-hook" || !slices.Equal(cr.Args, []string{"agentcg-hook", "--config", "/etc/a.yaml", "createRuntime"}) || cr.Timeout == nil || *cr.Timeout != 8 {
		t.Fatalf("createRuntime hook %+v", cr)
	}
	if h.Poststop[0].Args[len(h.Poststop[0].Args)-1] != "poststop" {
		t.Fatalf("poststop hook %+v", h.Poststop[0])
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil || string(raw["x-unknown"]) != `{"keep":true}` {
		t.Fatalf("unknown field lost: %s", b)
	}
	if st, _ := os.Stat(cfgPath); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", st.Mode().Perm())
	}
}

func TestNonCreateUntouched(t *testing.T) {
	bundle := t.TempDir()
	cfgPath := filepath.Join(bundle, "config.json")
	if err := os.WriteFile(cfgPath, []byte(bundleSpec), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"start", "run", "delete", "state"} {
		inv, err := runcwrap.Parse([]string{sub, "--bundle", bundle, "id"}, func(string) string { return "" }, "/x/agentcg-runc", bundle)
		if err != nil {
			t.Fatal(err)
		}
		if err := inv.Modify(); err != nil {
			t.Fatal(err)
		}
	}
	if b, _ := os.ReadFile(cfgPath); string(b) != bundleSpec {
		t.Fatalf("config.json changed by a non-create subcommand:\n%s", b)
	}
}

func TestRelativeHookRefused(t *testing.T) {
	if _, _, err := runcwrap.Hooks("agentcg-hook", "", "", 0); err == nil {
		t.Fatal("relative hook path accepted")
	}
}
