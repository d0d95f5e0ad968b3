package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGitHead(t *testing.T) {
	const sha = "0123456789abcdef0123456789abcdef01234567"
	cases := map[string]map[string]string{
		"loose ref":  {"HEAD": "ref: refs/heads/main\n", "refs/heads/main": sha + "\n"},
		"packed ref": {"HEAD": "ref: refs/heads/main\n", "packed-refs": "# pack-refs\n" + sha + " refs/heads/main\n"},
		"detached":   {"HEAD": sha + "\n"},
	}
	for name, files := range cases {
		t.Run(name, func(t *testing.T) {
			d := t.TempDir()
			for f, body := range files {
				p := filepath.Join(d, ".git", f)
				os.MkdirAll(filepath.Dir(p), 0o755)
				if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if got := gitHead(d); got != sha {
				t.Fatalf("gitHead = %q", got)
			}
		})
	}
	if got := gitHead(t.TempDir()); got != "" {
		t.Fatalf("no repo: %q", got)
	}
}

func TestReportCommandNeedsDir(t *testing.T) {
	c := Command()
	c.SetArgs([]string{"report"})
	c.SetOut(os.Stderr)
	c.SetErr(os.Stderr)
	if err := c.Execute(); err == nil {
		t.Fatal("report without DIR accepted")
	}
	c = Command()
	c.SetArgs([]string{"report", t.TempDir()})
	if err := c.Execute(); err == nil {
		t.Fatal("report on a folder without runs/ succeeded")
	}
}

func TestPlanJSONAndWeakRefusal(t *testing.T) {
	dir := t.TempDir()
	traces, _ := filepath.Abs("../../replayimage/traces")
	var out bytes.Buffer
	c := Command()
	c.SetArgs([]string{"plan", "--json", "--trace-dir", traces, "--mem-scale", "0.2"})
	c.SetOut(&out)
	c.SetErr(os.Stderr)
	if err := c.Execute(); err != nil {
		t.Fatal(err)
	}
	var p map[string]any
	if err := json.Unmarshal(out.Bytes(), &p); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"high_peak_bytes", "parent_limit_bytes", "give_up_bytes", "give_up_s", "blocks", "budget"} {
		if _, ok := p[k]; !ok {
			t.Errorf("plan --json lacks %s", k)
		}
	}
	if p["weak"] != false || p["give_up_s"].(float64) < 2 {
		t.Errorf("the default plan is weak: %v %v", p["weak"], p["give_up_s"])
	}

	// A limit far above the coincident sum: no contention, and run refuses
	// before it touches the machine.
	cfg := filepath.Join(dir, "weak.yaml")
	os.WriteFile(cfg, []byte("parent_limit_bytes: 9000000000\nmem_scale: 0.1\n"), 0o644)
	c = Command()
	c.SetArgs([]string{"run", "--config", cfg, "--trace-dir", traces, "--out", dir, "--quiet"})
	c.SetOut(&out)
	c.SetErr(&bytes.Buffer{})
	err := c.Execute()
	if err == nil || !strings.Contains(err.Error(), "refusing to run") || !strings.Contains(err.Error(), "--allow-weak") {
		t.Fatalf("weak plan not refused: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("a refused run wrote results: %v", ents)
	}
}

// A config may name traces that exist only in a --trace-dir folder: here
// the image's traces copied under new names into a temporary folder.
func TestPlanWithTracesOnlyInTraceDir(t *testing.T) {
	src, _ := filepath.Abs("../../replayimage/traces")
	dir := t.TempDir()
	for _, tr := range []struct{ from, to string }{
		{"Medical_Bio_Hard", "user-high"}, {"ML_Scientific_Hard", "user-low-a"}, {"CLI_Tools_Easy", "user-low-b"},
	} {
		b, err := os.ReadFile(filepath.Join(src, tr.from, "resources.json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dir, tr.to), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, tr.to, "resources.json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(t.TempDir(), "user.yaml")
	os.WriteFile(cfg, []byte(`sessions:
  - {name: high, role: high, trace: user-high, window: {from_s: 210.5, to_s: 226.5}}
  - {name: low1, role: low, trace: user-low-a, window: {from_s: 140, to_s: 250, loop: true}, random_offset: true}
  - {name: low2, role: low, trace: user-low-b, window: {from_s: 54, to_s: 88, loop: true}, random_offset: true}
`), 0o644)
	var out bytes.Buffer
	c := Command()
	c.SetArgs([]string{"plan", "--json", "--config", cfg, "--trace-dir", dir, "--mem-scale", "0.1"})
	c.SetOut(&out)
	c.SetErr(&bytes.Buffer{})
	if err := c.Execute(); err != nil {
		t.Fatal(err)
	}
	var p map[string]any
	if err := json.Unmarshal(out.Bytes(), &p); err != nil {
		t.Fatal(err)
	}
	if hp, _ := p["high_peak_bytes"].(float64); hp < 300e6 {
		t.Errorf("high_peak_bytes %v: want user-high's window peak at scale 0.1 (~406 MB)", p["high_peak_bytes"])
	}
	// Without the folder the same config names traces that do not exist.
	c = Command()
	c.SetArgs([]string{"plan", "--config", cfg, "--trace-dir", t.TempDir()})
	c.SetOut(&bytes.Buffer{})
	c.SetErr(&bytes.Buffer{})
	if err := c.Execute(); err == nil || !strings.Contains(err.Error(), "user-high") {
		t.Fatalf("missing trace not named: %v", err)
	}
}
