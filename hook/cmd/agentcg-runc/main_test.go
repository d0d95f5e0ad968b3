package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/agentcg/agentcg/internal/version"
)

// The test binary re-executes itself as the wrapper when this is set, so the
// real exec path runs against a fake runtime script.
const envBeMain = "AGENTCG_RUNC_TEST_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(envBeMain) == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

const annotated = `{"ociVersion":"1.2.0","annotations":{"agentcg.priority":"low"}}`

// fakeRunc writes a runtime script that records its argv and prints a
// version, and returns its path and the argv file.
func fakeRunc(t *testing.T) (bin, argvFile string) {
	t.Helper()
	dir := t.TempDir()
	argvFile = filepath.Join(dir, "argv")
	bin = filepath.Join(dir, "runc")
	script := "#!/bin/sh\nprintf '%s\\n' \"$0\" \"$@\" > " + argvFile + "\necho 'runc version 1.9.9'\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, argvFile
}

func TestExecPassesThrough(t *testing.T) {
	fake, out := fakeRunc(t)
	bundle := t.TempDir()
	tests := []struct {
		args []string
		spec string
		want []string
		hook bool
	}{
		{[]string{"--agentcg-runtime=" + fake, "--root", "/r", "create", "--bundle", bundle, "c1"}, annotated, []string{"--root", "/r", "create", "--bundle", bundle, "c1"}, true},
		{[]string{"--agentcg-runtime=" + fake, "-root", "/r", "run", "-d", "-b", bundle, "c1"}, annotated, []string{"-root", "/r", "run", "-d", "-b", bundle, "c1"}, true},
		{[]string{"--agentcg-runtime=" + fake, "create", "--bundle", bundle, "c1"}, `{"ociVersion":"1.2.0"}`, []string{"create", "--bundle", bundle, "c1"}, false},
		{[]string{"--agentcg-runtime=" + fake, "--root", "/r", "kill", "c1", "KILL"}, annotated, []string{"--root", "/r", "kill", "c1", "KILL"}, false},
		{[]string{"--agentcg-runtime=" + fake, "exec", "c1", "echo", "--agentcg-config=/x", "-b", "y"}, annotated, []string{"exec", "c1", "echo", "--agentcg-config=/x", "-b", "y"}, false},
	}
	for _, tc := range tests {
		if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(tc.spec), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(os.Args[0], tc.args...)
		cmd.Env = append(os.Environ(), envBeMain+"=1", "AGENTCG_HOOK=/opt/agentcg/agentcg-hook", "AGENTCG_CONFIG=/nonexistent/agentcg.yaml")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", tc.args, err, b)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Split(strings.TrimSpace(string(b)), "\n")[1:]
		if !slices.Equal(got, tc.want) {
			t.Fatalf("runtime got %q, want %q", got, tc.want)
		}
		spec, _ := os.ReadFile(filepath.Join(bundle, "config.json"))
		if has := strings.Contains(string(spec), "/opt/agentcg/agentcg-hook"); has != tc.hook {
			t.Fatalf("%v: hook injected = %v, want %v:\n%s", tc.args, has, tc.hook, spec)
		}
		if !tc.hook && string(spec) != tc.spec {
			t.Fatalf("%v: config.json changed:\n%s", tc.args, spec)
		}
	}
}

// call runs the wrapper in-process with a fake exec.
type call struct {
	argv0 string
	argv  []string
}

func runWrapper(t *testing.T, args []string, env map[string]string) (code int, stdout, stderr string, execd *call) {
	t.Helper()
	var o, e bytes.Buffer
	getenv := func(k string) string { return env[k] }
	code = run(args, getenv, &o, &e, func(argv0 string, argv, _ []string) error {
		execd = &call{argv0, argv}
		return errors.New("fake exec")
	})
	return code, o.String(), e.String(), execd
}

func TestVersion(t *testing.T) {
	fake, _ := fakeRunc(t)
	for _, arg := range []string{"--version", "-v", "-version"} {
		_, out, _, execd := runWrapper(t, []string{arg}, map[string]string{"AGENTCG_RUNTIME": fake})
		if !strings.HasPrefix(out, "agentcg-runc version "+version.Version+"\n") {
			t.Fatalf("%s: own version not first:\n%s", arg, out)
		}
		if execd == nil || execd.argv0 != fake || !slices.Equal(execd.argv, []string{fake, arg}) {
			t.Fatalf("%s: runc not asked for its version: %+v", arg, execd)
		}
	}
	// No runc at all: the wrapper's own version still prints.
	code, out, errOut, execd := runWrapper(t, []string{"--version"}, map[string]string{"PATH": t.TempDir()})
	if !strings.HasPrefix(out, "agentcg-runc version ") || execd != nil || code != 1 || !strings.Contains(errOut, "not found") {
		t.Fatalf("without runc: code %d, stdout %q, stderr %q, exec %+v", code, out, errOut, execd)
	}
	// --version of a subcommand, or among a subcommand's flags, is runc's.
	_, out, _, execd = runWrapper(t, []string{"state", "--version"}, map[string]string{"AGENTCG_RUNTIME": fake})
	if out != "" || execd == nil {
		t.Fatalf("state --version: stdout %q, exec %+v", out, execd)
	}
	_, out, _, _ = runWrapper(t, []string{"--help"}, map[string]string{"AGENTCG_RUNTIME": fake})
	if !strings.Contains(out, "--agentcg-runtime") {
		t.Fatalf("--help does not describe the wrapper's flags:\n%s", out)
	}
}

func TestSelfAsRuntimeRefused(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Symlink(self, filepath.Join(dir, "runc")); err != nil {
		t.Fatal(err)
	}
	for _, env := range []map[string]string{{"AGENTCG_RUNTIME": self}, {"PATH": dir}} {
		code, _, errOut, execd := runWrapper(t, []string{"state", "c1"}, env)
		if code != 1 || execd != nil || !strings.Contains(errOut, "agentcg-runc itself") {
			t.Fatalf("env %v: code %d, exec %+v, stderr %q", env, code, execd, errOut)
		}
	}
}

// The wrapper's errors go to runc's --log in runc's JSON format, where the
// shim finds the reason a create failed.
func TestFailClosedLogsToRuncLog(t *testing.T) {
	fake, _ := fakeRunc(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte("fail_mode: closed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(dir, "log.json")
	missing := filepath.Join(dir, "no-bundle")
	env := map[string]string{"AGENTCG_RUNTIME": fake, "AGENTCG_CONFIG": cfg, "AGENTCG_HOOK": "/opt/agentcg-hook"}
	code, _, _, execd := runWrapper(t, []string{"--log", logFile, "--log-format", "json", "create", "--bundle", missing, "c1"}, env)
	if code != 1 || execd != nil {
		t.Fatalf("fail_mode closed with an unreadable bundle: code %d, exec %+v", code, execd)
	}
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	var entry struct{ Level, Msg string }
	if err := json.Unmarshal(bytes.TrimSpace(b), &entry); err != nil || entry.Level != "error" || !strings.Contains(entry.Msg, "cannot add the agentcg hooks") {
		t.Fatalf("runc log %q: %+v %v", b, entry, err)
	}
	// Fail open, or a config too broken to tell: the container goes on.
	for _, c := range []string{"fail_mode: open\n", "fail_mode: [\n"} {
		if err := os.WriteFile(cfg, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, _, _, execd := runWrapper(t, []string{"create", "--bundle", missing, "c1"}, env); execd == nil {
			t.Fatalf("config %q: runc not run", c)
		}
	}
}

// A config the hook cannot use still gets the hooks into annotated
// containers: the hook then refuses or passes them, loudly, per fail_mode.
func TestBrokenConfigStillInjects(t *testing.T) {
	fake, _ := fakeRunc(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte("fail_mod: closed\nannotation_key: example.com/prio\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bundle := t.TempDir()
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(`{"annotations":{"example.com/prio":"high"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"AGENTCG_RUNTIME": fake, "AGENTCG_CONFIG": cfg, "AGENTCG_HOOK": "/opt/agentcg-hook"}
	if _, _, _, execd := runWrapper(t, []string{"create", "--bundle", bundle, "c1"}, env); execd == nil {
		t.Fatal("runc not run")
	}
	if b, _ := os.ReadFile(filepath.Join(bundle, "config.json")); !strings.Contains(string(b), "/opt/agentcg-hook") {
		t.Fatalf("hooks not injected under a broken config:\n%s", b)
	}
}
