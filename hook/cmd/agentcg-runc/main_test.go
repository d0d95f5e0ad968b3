package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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

func TestExecPassesThrough(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "argv")
	fake := filepath.Join(dir, "fake-runc")
	script := "#!/bin/sh\nprintf '%s\\n' \"$0\" \"$@\" > " + out + "\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(dir, "bundle")
	if err := os.MkdirAll(bundle, 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want []string
		hook bool
	}{
		{[]string{"--agentcg-runtime=" + fake, "--root", "/r", "create", "--bundle", bundle, "c1"}, []string{"--root", "/r", "create", "--bundle", bundle, "c1"}, true},
		{[]string{"--agentcg-runtime=" + fake, "--root", "/r", "kill", "c1", "KILL"}, []string{"--root", "/r", "kill", "c1", "KILL"}, false},
	}
	for _, tc := range tests {
		if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(`{"ociVersion":"1.2.0"}`), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(os.Args[0], tc.args...)
		cmd.Env = append(os.Environ(), envBeMain+"=1", "AGENTCG_HOOK=/opt/agentcg/agentcg-hook")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", tc.args, err, b)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Split(strings.TrimSpace(string(b)), "\n")[1:]
		if strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Fatalf("runtime got %q, want %q", got, tc.want)
		}
		spec, _ := os.ReadFile(filepath.Join(bundle, "config.json"))
		if has := strings.Contains(string(spec), "/opt/agentcg/agentcg-hook"); has != tc.hook {
			t.Fatalf("%v: hook injected = %v, want %v:\n%s", tc.args, has, tc.hook, spec)
		}
	}
}
