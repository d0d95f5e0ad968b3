package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDefaultPlanInterleaves(t *testing.T) {
	c, err := Load("", "default")
	if err != nil {
		t.Fatal(err)
	}
	plan := c.Plan()
	if len(plan) != 25 {
		t.Fatalf("default plan has %d runs, want 5 × (solo + 4 arms) = 25", len(plan))
	}
	var got []string
	for _, p := range plan[:10] {
		got = append(got, p.Point.Label)
	}
	want := "Solo Static NoLimit HighOnly BPF Solo Static NoLimit HighOnly BPF"
	if strings.Join(got, " ") != want {
		t.Fatalf("order %q, want %q", strings.Join(got, " "), want)
	}
	if plan[5].Index != 1 || plan[5].ID != "005-Solo-r1" {
		t.Fatalf("plan[5] = %+v", plan[5])
	}
	if n := len(plan[0].Point.Sessions); n != 1 || plan[0].Point.Sessions[0].Role != "high" {
		t.Fatalf("solo sessions: %+v", plan[0].Point.Sessions)
	}
	if c.ParentLimitBytes != 4_500_000_000 || c.Speed != 10 || len(c.Sessions) != 3 || c.Sessions[0].Trace != "Medical_Bio_Hard" {
		t.Fatalf("default profile drifted from design.md §4: %+v", c)
	}
}

func TestSweepLabels(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "c.yaml")
	body := "runs: 2\narms: [BPF, HighOnly]\nsolo: false\nsweep:\n  delay_max_ms: [50, 200]\n  poll_ms: [100, 500]\n  mem_scale: [0.1]\n"
	if err := os.WriteFile(f, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(f, "smoke")
	if err != nil {
		t.Fatal(err)
	}
	var labels []string
	for _, p := range c.Points() {
		labels = append(labels, p.Label)
	}
	want := []string{"BPF delay=50", "BPF delay=200", "HighOnly poll=100", "HighOnly poll=500"}
	if strings.Join(labels, "|") != strings.Join(want, "|") {
		t.Fatalf("labels %q, want %q", labels, want)
	}
	p := c.Points()[0]
	if p.Policy.DelayMaxMs != 50 || p.Params["gate_pct"] != "80" || p.MemScale != 0.1 {
		t.Fatalf("point %+v", p)
	}
	if len(c.Plan()) != 8 {
		t.Fatalf("plan %d, want 8", len(c.Plan()))
	}
}

func TestValidate(t *testing.T) {
	cases := map[string]string{
		"unknown field": "bogus: 1\n",
		"bad arm":       "arms: [Fast]\n",
		"two highs":     "sessions: [{name: a, role: high, trace: x}, {name: b, role: high, trace: y}]\n",
		"bad runtime":   "runtime: podman\n",
		"escape":        "cgroup_parent: ../x\n",
		"delay":         "policy: {delay_max_ms: 5000}\n",
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "c.yaml")
			os.WriteFile(f, []byte(body), 0o644)
			if _, err := Load(f, "default"); err == nil {
				t.Fatalf("%q accepted", body)
			}
		})
	}
	if _, err := Profile("huge"); err == nil {
		t.Fatal("unknown profile accepted")
	}
}

func TestExamplesLoad(t *testing.T) {
	files, _ := filepath.Glob("../examples/*.yaml")
	if len(files) == 0 {
		t.Fatal("no example configs")
	}
	for _, f := range files {
		if _, err := Load(f, "default"); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}
