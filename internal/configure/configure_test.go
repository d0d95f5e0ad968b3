package configure

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestContainerdStock edits the real `containerd config default` of the
// guest's containerd 2.1.9: the changes land in place, everything else is
// byte-identical, and a second run changes nothing.
func TestContainerdStock(t *testing.T) {
	stock := readTestdata(t, "containerd-2.1.9-default.toml")
	opt := DefaultContainerdOptions()
	findings, err := CheckContainerd(stock, opt)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	for _, f := range findings {
		keys[f.Key] = true
	}
	for _, want := range []string{
		"plugins.'io.containerd.nri.v1.nri'.plugin_request_timeout",
		"plugins.'io.containerd.nri.v1.nri'.plugin_registration_timeout",
		"plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.pod_annotations",
		"plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.container_annotations",
	} {
		if !keys[want] {
			t.Errorf("check did not report %s (got %v)", want, findings)
		}
	}
	if keys["plugins.'io.containerd.nri.v1.nri'.disable"] {
		t.Error("stock 2.1.9 has NRI on, but check reports disable")
	}

	out, changes, err := Containerd(stock, opt)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != len(findings) {
		t.Errorf("%d changes, %d findings", len(changes), len(findings))
	}
	for _, line := range []string{
		"          pod_annotations = ['agentcg.*']\n",
		"          container_annotations = ['agentcg.*']\n",
		"    plugin_registration_timeout = '30s'\n",
		"    plugin_request_timeout = '10s'\n",
	} {
		if !bytes.Contains(out, []byte(line)) {
			t.Errorf("edited file lacks %q", line)
		}
	}
	// Only the four edited lines differ.
	ol, sl := strings.Split(string(out), "\n"), strings.Split(string(stock), "\n")
	if len(ol) != len(sl) {
		t.Fatalf("line count %d -> %d", len(sl), len(ol))
	}
	diff := 0
	for i := range ol {
		if ol[i] != sl[i] {
			diff++
		}
	}
	if diff != 4 {
		t.Errorf("%d lines differ, want 4", diff)
	}
	if again, changes, err := Containerd(out, opt); err != nil || len(changes) != 0 || !bytes.Equal(again, out) {
		t.Errorf("second run: %d changes, err %v, identical %v", len(changes), err, bytes.Equal(again, out))
	}
	if f, err := CheckContainerd(out, opt); err != nil || len(f) != 0 {
		t.Errorf("check after configure: %v, %v", f, err)
	}
}

func TestContainerdCases(t *testing.T) {
	opt := DefaultContainerdOptions()
	tests := []struct {
		name  string
		in    string
		want  []string // substrings of the output
		same  bool     // no change expected
		check func(t *testing.T, m map[string]any)
	}{
		{name: "empty file", in: "", want: []string{"version = 3\n", "[plugins.'io.containerd.nri.v1.nri']", "disable = false", "runtimes.runc]", "pod_annotations = ['agentcg.*']"}},
		{name: "comments kept, NRI off", in: "# top comment\nversion = 3\n\n[plugins.'io.containerd.nri.v1.nri'] # nri\n  disable = true # was off\n  plugin_request_timeout = '1m' # long\n",
			want: []string{"# top comment\n", "] # nri\n", "  disable = false # was off\n", "plugin_request_timeout = '1m' # long\n", "  plugin_registration_timeout = '30s'\n"}},
		{name: "existing entries kept", in: "version = 3\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]\n  pod_annotations = [\n    'io.x.*',\n  ]\n  container_annotations = ['*']\n",
			want: []string{"pod_annotations = ['io.x.*', 'agentcg.*']", "container_annotations = ['*']"}},
		{name: "every handler", in: "version = 3\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.kata]\n",
			check: func(t *testing.T, m map[string]any) {
				for _, rt := range []string{"runc", "kata"} {
					v, _ := Lookup(m, []string{"plugins", "io.containerd.cri.v1.runtime", "containerd", "runtimes", rt, "container_annotations"})
					if arr, ok := v.([]any); !ok || len(arr) != 1 || arr[0] != AnnotationPattern {
						t.Errorf("%s: container_annotations %v", rt, v)
					}
				}
			}},
		{name: "version 2 (containerd 1.7)", in: "version = 2\n[plugins.\"io.containerd.nri.v1.nri\"]\n  disable = true\n  disable_connections = true\n",
			want: []string{"disable = false", "disable_connections = false", "[plugins.'io.containerd.grpc.v1.cri'.containerd.runtimes.runc]"}},
		{name: "already done", in: "version = 3\n[plugins.'io.containerd.nri.v1.nri']\n  disable = false\n  plugin_request_timeout = '10s'\n  plugin_registration_timeout = '1m0s'\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]\n  pod_annotations = ['agentcg.*']\n  container_annotations = ['agentcg.*']\n", same: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, changes, err := Containerd([]byte(tc.in), opt)
			if err != nil {
				t.Fatal(err)
			}
			if tc.same != (len(changes) == 0) {
				t.Errorf("changes %v, want none: %v", changes, tc.same)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			var m map[string]any
			if err := toml.Unmarshal(out, &m); err != nil {
				t.Fatalf("output does not parse: %v\n%s", err, out)
			}
			if tc.check != nil {
				tc.check(t, m)
			}
			if f, err := CheckContainerd(out, opt); err != nil || len(f) != 0 {
				t.Errorf("check after configure: %v, %v\n%s", f, err, out)
			}
		})
	}
}

func TestContainerdRefuses(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"bad toml", "version = = 3", "parse"},
		{"version 1", "version = 1", "version 1"},
		{"no version key: schema 1", "[plugins.cri.containerd]\n  snapshotter = 'overlayfs'\n", "version 1"},
		{"annotations not a list", "version = 3\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]\n  pod_annotations = 'x'\n", "not an array"},
		{"inline table", "version = 3\nplugins = { 'io.containerd.nri.v1.nri' = { disable = true } }\n", "edit the file by hand"},
	} {
		if _, _, err := Containerd([]byte(tc.in), DefaultContainerdOptions()); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestDocker(t *testing.T) {
	opt := DockerOptions{WrapperPath: "/usr/bin/agentcg-runc", RuntimeArgs: []string{"--agentcg-config=/etc/agentcg/config.yaml"}, SetDefault: true}
	in := `{"storage-driver": "overlay2", "log-opts": {"max-size": "10m"}, "max-concurrent-downloads": 3,
	 "runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}}`
	out, changes, err := Docker([]byte(in), opt)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 2 {
		t.Errorf("changes %v, want runtime and default", changes)
	}
	for _, w := range []string{`"storage-driver": "overlay2"`, `"max-size": "10m"`, `"max-concurrent-downloads": 3`, `"nvidia": {`,
		`"default-runtime": "agentcg"`, `"path": "/usr/bin/agentcg-runc"`, `"--agentcg-config=/etc/agentcg/config.yaml"`} {
		if !strings.Contains(string(out), w) {
			t.Errorf("output lacks %s:\n%s", w, out)
		}
	}
	if again, changes, err := Docker(out, opt); err != nil || len(changes) != 0 || !bytes.Equal(again, out) {
		t.Errorf("second run: %v, %v", changes, err)
	}
	// Without --set-default an existing default stays, and check is happy.
	opt.SetDefault = false
	if f, err := CheckDocker(out, opt); err != nil || len(f) != 0 {
		t.Errorf("check: %v %v", f, err)
	}
	// A stale path is reported and fixed.
	opt.WrapperPath = "/usr/local/bin/agentcg-runc"
	if f, _ := CheckDocker(out, opt); len(f) != 1 || !strings.Contains(f[0].Have, "/usr/bin/agentcg-runc") {
		t.Errorf("stale path findings %v", f)
	}
	for _, tc := range []struct{ name, in, want string }{
		{"not json", "{", "parse"},
		{"array", "[]", "parse"},
		{"runtimes not object", `{"runtimes": 3}`, "runtimes is a"},
	} {
		if _, _, err := Docker([]byte(tc.in), opt); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
	if out, changes, err := Docker(nil, opt); err != nil || len(changes) != 1 || !strings.Contains(string(out), `"agentcg"`) {
		t.Errorf("empty file: %s %v %v", out, changes, err)
	}
}

func TestApply(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "etc", "daemon.json")
	opt := DockerOptions{WrapperPath: "/usr/bin/agentcg-runc"}
	edit := func(doc []byte) ([]byte, []Finding, error) { return Docker(doc, opt) }
	now := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)

	// Dry run of a missing file: nothing written.
	res, err := Apply(file, edit, true, now)
	if err != nil || len(res.Changes) != 1 || res.Written {
		t.Fatalf("dry run: %+v %v", res, err)
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Fatalf("dry run created the file: %v", err)
	}
	// First real run creates it (no backup: nothing to back up).
	if res, err = Apply(file, edit, false, now); err != nil || !res.Written || res.Backup != "" {
		t.Fatalf("create: %+v %v", res, err)
	}
	// A changed option rewrites it with a backup of the old file, keeping the mode.
	if err := os.Chmod(file, 0o600); err != nil {
		t.Fatal(err)
	}
	old, _ := os.ReadFile(file)
	opt.SetDefault = true
	if res, err = Apply(file, edit, false, now); err != nil || !res.Written || res.Backup == "" {
		t.Fatalf("update: %+v %v", res, err)
	}
	if b, _ := os.ReadFile(res.Backup); !bytes.Equal(b, old) {
		t.Errorf("backup %s differs from the old file", res.Backup)
	}
	if st, _ := os.Stat(file); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode())
	}
	// Idempotent: nothing to change, nothing written, no new backup.
	entries, _ := os.ReadDir(filepath.Dir(file))
	if res, err = Apply(file, edit, false, now.Add(time.Hour)); err != nil || res.Written || len(res.Changes) != 0 {
		t.Fatalf("again: %+v %v", res, err)
	}
	if again, _ := os.ReadDir(filepath.Dir(file)); len(again) != len(entries) {
		t.Errorf("files %d -> %d", len(entries), len(again))
	}
	// An unparsable file is an error naming it.
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte("{"), 0o644)
	if _, err := Apply(bad, edit, false, now); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("bad file: %v", err)
	}
}

func TestCommand(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(file, readTestdata(t, "containerd-2.1.9-default.toml"), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		cmd := Command()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs(args)
		err := cmd.Execute()
		return out.String(), err
	}
	if out, err := run("--runtime", "containerd", "--file", file, "--check"); err != ErrMissing || !strings.Contains(out, "pod_annotations") || !strings.Contains(out, "fix: agentcg configure") {
		t.Errorf("check: %v\n%s", err, out)
	}
	if out, err := run("--runtime", "containerd", "--file", file, "--dry-run"); err != nil || !strings.Contains(out, "as it would be written") {
		t.Errorf("dry run: %v\n%s", err, out)
	}
	if out, err := run("--runtime", "containerd", "--file", file); err != nil || !strings.Contains(out, "backup: ") {
		t.Errorf("configure: %v\n%s", err, out)
	}
	if out, err := run("--runtime", "containerd", "--file", file, "--check"); err != nil || !strings.Contains(out, "has everything") {
		t.Errorf("check after: %v\n%s", err, out)
	}
	if _, err := run("--runtime", "crio"); err == nil || !strings.Contains(err.Error(), `"crio"`) {
		t.Errorf("bad runtime: %v", err)
	}
	if _, err := run(); err == nil {
		t.Error("no --runtime accepted")
	}
	if _, err := run("--runtime", "docker", "--wrapper", "rel/path", "--file", filepath.Join(dir, "d.json")); err == nil {
		t.Error("relative wrapper accepted")
	}
}
