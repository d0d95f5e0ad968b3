package runcwrap_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentcg/agentcg/hook/runcwrap"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestSplitArgs(t *testing.T) {
	tests := []struct {
		name string
		args []string
		opts runcwrap.Options
		rest []string
		err  string
	}{
		{"leading flags are ours", []string{"--agentcg-hook=/h", "--agentcg-runtime", "crun", "--root", "/r", "create", "id"},
			runcwrap.Options{Hook: "/h", Runtime: "crun"}, []string{"--root", "/r", "create", "id"}, ""},
		{"after runc's first argument they are runc's", []string{"--root", "/r", "--agentcg-hook=/h", "create", "id"},
			runcwrap.Options{}, []string{"--root", "/r", "--agentcg-hook=/h", "create", "id"}, ""},
		{"process args of exec are never touched", []string{"exec", "id", "sh", "-c", "echo", "--agentcg-config=/x"},
			runcwrap.Options{}, []string{"exec", "id", "sh", "-c", "echo", "--agentcg-config=/x"}, ""},
		{"all four", []string{"--agentcg-config=/c", "--agentcg-timeout", "9s", "--agentcg-hook", "/h", "--agentcg-runtime=/r", "state", "id"},
			runcwrap.Options{Hook: "/h", Config: "/c", Runtime: "/r", Timeout: "9s"}, []string{"state", "id"}, ""},
		{"nothing but ours", []string{"--agentcg-config=/c"}, runcwrap.Options{Config: "/c"}, []string{}, ""},
		{"empty", nil, runcwrap.Options{}, []string{}, ""},
		{"missing value", []string{"--agentcg-hook"}, runcwrap.Options{}, nil, "needs a value"},
		{"a leading typo is loud", []string{"--agentcg-hok=/h", "create", "id"}, runcwrap.Options{}, nil, "unknown wrapper flag --agentcg-hok"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, rest, err := runcwrap.SplitArgs(tc.args)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o != tc.opts || !slices.Equal(rest, tc.rest) {
				t.Fatalf("got %+v %q, want %+v %q", o, rest, tc.opts, tc.rest)
			}
		})
	}
}

func TestSubcommand(t *testing.T) {
	tests := []struct {
		name string
		args []string
		sub  string
		idx  int
		g    runcwrap.Globals
	}{
		{"docker's shim", []string{"--root", "/run/r", "--log", "/l.json", "--log-format", "json", "--systemd-cgroup", "create", "--bundle", "/b", "id"},
			"create", 7, runcwrap.Globals{Log: "/l.json", LogFormat: "json"}},
		{"single-dash globals take a value too", []string{"-root", "/r", "-log", "/l", "-log-format=json", "run", "id"},
			"run", 5, runcwrap.Globals{Log: "/l", LogFormat: "json"}},
		{"a value that looks like a subcommand", []string{"--root", "create", "start", "id"}, "start", 2, runcwrap.Globals{}},
		{"= values", []string{"--root=/r", "--rootless=true", "--criu=/c", "delete", "id"}, "delete", 3, runcwrap.Globals{}},
		{"bool globals take none", []string{"--debug", "-systemd-cgroup", "kill", "id"}, "kill", 2, runcwrap.Globals{}},
		{"-- ends the flags", []string{"--debug", "--", "create", "id"}, "create", 2, runcwrap.Globals{}},
		{"-- at the end", []string{"--"}, "", -1, runcwrap.Globals{}},
		{"version", []string{"--version"}, "", -1, runcwrap.Globals{Version: true}},
		{"-v", []string{"-v"}, "", -1, runcwrap.Globals{Version: true}},
		{"help", []string{"-h"}, "", -1, runcwrap.Globals{Help: true}},
		{"help of a subcommand is runc's", []string{"create", "--help"}, "create", 0, runcwrap.Globals{}},
		{"value flag at the end", []string{"--root"}, "", -1, runcwrap.Globals{}},
		{"nothing", nil, "", -1, runcwrap.Globals{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sub, idx, g := runcwrap.Subcommand(tc.args)
			if sub != tc.sub || idx != tc.idx || g != tc.g {
				t.Fatalf("got %q %d %+v, want %q %d %+v", sub, idx, g, tc.sub, tc.idx, tc.g)
			}
		})
	}
}

func TestBundle(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"--bundle", []string{"--bundle", "/b", "id"}, "/b"},
		{"-b", []string{"-b", "/b", "id"}, "/b"},
		{"-bundle=", []string{"-bundle=/b", "id"}, "/b"},
		{"--bundle=", []string{"--pid-file", "/p", "--bundle=/b", "id"}, "/b"},
		{"a value that looks like -b", []string{"--pid-file", "-b", "--console-socket=/s", "id"}, "/cwd"},
		{"the last one wins", []string{"-b", "/one", "--bundle", "/two", "id"}, "/two"},
		{"bool flags take no value", []string{"--no-pivot", "-b", "/b", "-d", "id"}, "/b"},
		{"after --", []string{"--", "-b", "/b"}, "/cwd"},
		{"none", []string{"id"}, "/cwd"},
		{"no value", []string{"-b"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := runcwrap.Bundle(tc.args, "/cwd"); got != tc.want {
				t.Fatalf("Bundle(%q) = %q, want %q", tc.args, got, tc.want)
			}
		})
	}
}

func TestParse(t *testing.T) {
	var env map[string]string
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
		{"run with a relative -b and our flags", []string{"--agentcg-hook=/x/hook", "--agentcg-runtime", "crun", "run", "-d", "-b", "rel", "id"},
			nil, "run", "/cwd/rel", []string{"run", "-d", "-b", "rel", "id"}, "/x/hook", "crun"},
		{"default bundle is cwd", []string{"create", "id"}, nil, "create", "/cwd", []string{"create", "id"}, "/opt/agentcg/agentcg-hook", "runc"},
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
	if _, err := runcwrap.Parse([]string{"--agentcg-hook"}, getenv, "/x", "/"); err == nil {
		t.Fatal("flag without value accepted")
	}
	for _, bad := range []string{"junk", "0s", "-1s"} {
		if _, err := runcwrap.Parse([]string{runcwrap.FlagTimeout + "=" + bad, "create", "id"}, getenv, "/x", "/"); err == nil || !strings.Contains(err.Error(), runcwrap.FlagTimeout) {
			t.Fatalf("timeout %q: err = %v, want one naming %s", bad, err, runcwrap.FlagTimeout)
		}
	}
}

const bundleSpec = `{"ociVersion":"1.2.0","process":{"args":["sh"]},"linux":{"cgroupsPath":"/docker/x"},
"annotations":{"agentcg.priority":"low"},
"hooks":{"prestart":[{"path":"/usr/bin/other"}]},"x-unknown":{"keep":true}}`

func writeBundle(t *testing.T, spec string, mode os.FileMode) (bundle, path string) {
	t.Helper()
	bundle = t.TempDir()
	path = filepath.Join(bundle, "config.json")
	if err := os.WriteFile(path, []byte(spec), mode); err != nil {
		t.Fatal(err)
	}
	return bundle, path
}

func TestInject(t *testing.T) {
	for _, sub := range []string{"create", "run"} {
		t.Run(sub, func(t *testing.T) {
			bundle, cfgPath := writeBundle(t, bundleSpec, 0o600)
			inv, err := runcwrap.Parse([]string{"--agentcg-config=/etc/a.yaml", sub, "--bundle", bundle, "id"}, func(string) string { return "" }, "/opt/bin/agentcg-runc", "/")
			if err != nil {
				t.Fatal(err)
			}
			for range 2 { // idempotent
				if injected, err := inv.Modify(); err != nil || !injected {
					t.Fatalf("Modify = %v, %v", injected, err)
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
			// 5 s default hook timeout + 3 s margin.
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
		})
	}
}

func TestTimeouts(t *testing.T) {
	for _, tc := range []struct {
		flag   string
		config string
		want   int
	}{{"", "", 8}, {"30s", "", 36}, {"", "60s", 72}, {"1500ms", "60s", 5}} {
		bundle, cfgPath := writeBundle(t, bundleSpec, 0o644)
		inv, err := runcwrap.Parse([]string{"create", "-b", bundle, "id"}, func(k string) string {
			if k == runcwrap.EnvTimeout {
				return tc.flag
			}
			return ""
		}, "/opt/agentcg-runc", "/")
		if err != nil {
			t.Fatal(err)
		}
		if tc.config != "" {
			d, err := time.ParseDuration(tc.config)
			if err != nil {
				t.Fatal(err)
			}
			inv.ConfigTimeout = d
		}
		if _, err := inv.Modify(); err != nil {
			t.Fatal(err)
		}
		var spec specs.Spec
		b, _ := os.ReadFile(cfgPath)
		if err := json.Unmarshal(b, &spec); err != nil {
			t.Fatal(err)
		}
		if got := *spec.Hooks.CreateRuntime[0].Timeout; got != tc.want {
			t.Errorf("timeout flag %q config %q: runtime timeout %d, want %d", tc.flag, tc.config, got, tc.want)
		}
	}
}

// Containers without the annotation, and every other subcommand, leave the
// bundle byte for byte as it was: with agentcg as Docker's default runtime
// most containers are not ours.
func TestUntouched(t *testing.T) {
	tests := []struct {
		name string
		spec string
		key  string
		sub  string
	}{
		{"no annotation", `{"ociVersion":"1.2.0","annotations":{"other":"x"}}`, "", "create"},
		{"no annotations at all", `{"ociVersion":"1.2.0"}`, "", "run"},
		{"another key configured", bundleSpec, "example.com/prio", "create"},
		{"start", bundleSpec, "", "start"},
		{"delete", bundleSpec, "", "delete"},
		{"state", bundleSpec, "", "state"},
		{"exec", bundleSpec, "", "exec"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bundle, cfgPath := writeBundle(t, tc.spec, 0o644)
			inv, err := runcwrap.Parse([]string{tc.sub, "--bundle", bundle, "id"}, func(string) string { return "" }, "/x/agentcg-runc", bundle)
			if err != nil {
				t.Fatal(err)
			}
			inv.AnnotationKey = tc.key
			if injected, err := inv.Modify(); err != nil || injected {
				t.Fatalf("Modify = %v, %v", injected, err)
			}
			if b, _ := os.ReadFile(cfgPath); string(b) != tc.spec {
				t.Fatalf("config.json changed:\n%s", b)
			}
		})
	}
}

func TestRelativeHookRefused(t *testing.T) {
	if _, _, err := runcwrap.Hooks("agentcg-hook", "", "", 0); err == nil {
		t.Fatal("relative hook path accepted")
	}
}

func TestLookRuntime(t *testing.T) {
	dir := t.TempDir()
	mk := func(rel string, mode os.FileMode) string {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	self := mk("wrap/agentcg-runc", 0o755)
	// The wrapper installed as "runc" in front of the real one, as a
	// symlink and as a hard link.
	if err := os.Symlink(self, filepath.Join(dir, "wrap", "runc")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "hard"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(self, filepath.Join(dir, "hard", "runc")); err != nil {
		t.Fatal(err)
	}
	real := mk("real/runc", 0o755)
	mk("noexec/runc", 0o644)
	path := func(ds ...string) string {
		for i, d := range ds {
			ds[i] = filepath.Join(dir, d)
		}
		return strings.Join(ds, string(os.PathListSeparator))
	}
	tests := []struct {
		name, runtime, path, want string
		self                      bool
	}{
		{"skips itself (symlink) and a non-executable", "runc", path("wrap", "noexec", "real"), real, false},
		{"skips itself (hard link)", "runc", path("hard", "real"), real, false},
		{"only itself", "runc", path("wrap", "hard"), "", true},
		{"explicit path to itself", filepath.Join(dir, "wrap", "runc"), "", "", true},
		{"explicit path", real, "", real, false},
		{"not found", "runc", path("noexec"), "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := runcwrap.LookRuntime(tc.runtime, self, tc.path)
			if tc.want != "" {
				if err != nil || got != tc.want {
					t.Fatalf("got %q, %v, want %q", got, err, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("got %q, want an error", got)
			}
			if errors.Is(err, runcwrap.ErrSelf) != tc.self {
				t.Fatalf("err = %v, ErrSelf %v", err, tc.self)
			}
		})
	}
}

// The wrapper injects for the keys the hook reads: KEY and KEY/pod (a
// container-scoped KEY/container.NAME needs a name the runtime never gives).
func TestInjectKeys(t *testing.T) {
	for ann, want := range map[string]bool{
		`{"agentcg.priority":"low"}`:                  true,
		`{"agentcg.priority/pod":"high"}`:             true,
		`{"agentcg.priority/container.agent":"high"}`: false,
		`{"agentcg.priorityx":"high"}`:                false,
	} {
		bundle, _ := writeBundle(t, `{"ociVersion":"1.2.0","annotations":`+ann+`}`, 0o644)
		inv, err := runcwrap.Parse([]string{"create", "-b", bundle, "id"}, func(string) string { return "" }, "/opt/agentcg-runc", "/")
		if err != nil {
			t.Fatal(err)
		}
		if got, err := inv.Modify(); err != nil || got != want {
			t.Errorf("annotations %s: injected %v (%v), want %v", ann, got, err, want)
		}
	}
}
