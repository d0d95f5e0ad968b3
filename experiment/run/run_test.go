package run

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentcg/agentcg/cgroup"
	"github.com/agentcg/agentcg/experiment/results"
)

// fakeCgroup makes dir look like a cgroup v2 directory for the files used here.
func fakeCgroup(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for k, v := range files {
		if err := os.WriteFile(filepath.Join(dir, k), []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func read(t *testing.T, dir, f string) string {
	t.Helper()
	s, err := cgroup.Read(dir, f)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestMonitorGate(t *testing.T) {
	root := t.TempDir()
	parent, high, low := filepath.Join(root, "p"), filepath.Join(root, "p/high"), filepath.Join(root, "p/low1")
	fakeCgroup(t, parent, map[string]string{"memory.current": "500", "memory.max": "1000"})
	fakeCgroup(t, high, map[string]string{"memory.current": "100"})
	fakeCgroup(t, low, map[string]string{"memory.current": "300", "memory.high": "max"})
	now := time.Unix(1000, 0)
	m := &Monitor{Parent: parent, High: high, Lows: []string{low}, GatePct: 80, ActiveWindow: 2 * time.Second, Floor: 50,
		now: func() time.Time { return now }}
	steps := []struct {
		name             string
		parentUse, hiUse string
		advance          time.Duration
		wantHigh         string
	}{
		{"below gate, HIGH growing", "500", "200", 0, "max"},
		{"gate open, HIGH growing: tighten at LOW's usage", "850", "300", 100 * time.Millisecond, "300"},
		{"still gated: keep the pinned value", "900", "400", 100 * time.Millisecond, "300"},
		{"HIGH idle beyond the window: release", "900", "400", 3 * time.Second, "max"},
		{"HIGH grows again over the gate", "900", "500", 100 * time.Millisecond, "300"},
		{"gate closes: release", "100", "600", 100 * time.Millisecond, "max"},
	}
	for _, s := range steps {
		now = now.Add(s.advance)
		fakeCgroup(t, parent, map[string]string{"memory.current": s.parentUse})
		fakeCgroup(t, high, map[string]string{"memory.current": s.hiUse})
		m.Step()
		if got := read(t, low, "memory.high"); got != s.wantHigh {
			t.Fatalf("%s: LOW memory.high = %s, want %s", s.name, got, s.wantHigh)
		}
	}
	if m.Tightenings != 2 {
		t.Fatalf("tightenings %d, want 2", m.Tightenings)
	}
	// The floor: a LOW using less than Floor is pinned at Floor.
	fakeCgroup(t, low, map[string]string{"memory.current": "10"})
	fakeCgroup(t, parent, map[string]string{"memory.current": "950"})
	fakeCgroup(t, high, map[string]string{"memory.current": "700"})
	m.Step()
	if got := read(t, low, "memory.high"); got != "50" {
		t.Fatalf("floor: memory.high = %s", got)
	}
}

func TestTreeCreateRemove(t *testing.T) {
	root := t.TempDir()
	fakeCgroup(t, root, map[string]string{"cgroup.subtree_control": "cpu memory"})
	tr := Tree{Root: root, Parent: "agentcg-exp"}
	// A plain directory has no interface files, so Create must fail at the
	// parent's subtree_control (the real Create is covered in the VM test).
	if err := tr.Create(1000, []string{"high", "low1"}); err == nil {
		t.Fatal("Create succeeded without subtree_control in the new parent")
	}
	if got := read(t, tr.ParentDir(), "memory.swap.max"); got != "0" {
		t.Fatalf("memory.swap.max = %s", got)
	}
	os.RemoveAll(tr.ParentDir())
	fakeCgroup(t, tr.ParentDir(), map[string]string{"cgroup.subtree_control": ""})
	for _, s := range []string{"high", "low1"} {
		fakeCgroup(t, tr.SessionDir(s), map[string]string{"cgroup.subtree_control": ""})
	}
	if got := tr.RuntimeParent("low1"); got != "/agentcg-exp/low1" {
		t.Fatalf("RuntimeParent = %s", got)
	}
	if err := os.MkdirAll(filepath.Join(tr.SessionDir("high"), "abc123def"), 0o755); err != nil {
		t.Fatal(err)
	}
	leaf, err := tr.FindLeaf("high", "abc123")
	if err != nil || filepath.Base(leaf) != "abc123def" {
		t.Fatalf("FindLeaf = %q, %v", leaf, err)
	}
	// Remove refuses nothing here but files; on cgroupfs only dirs exist.
	for _, d := range []string{tr.ParentDir(), tr.SessionDir("high"), tr.SessionDir("low1")} {
		os.Remove(filepath.Join(d, "cgroup.subtree_control"))
	}
	if err := tr.Remove(); err != nil {
		t.Fatal(err)
	}
	if tr.Exists() {
		t.Fatal("parent still exists")
	}
}

func TestReadPressure(t *testing.T) {
	d := t.TempDir()
	fakeCgroup(t, d, map[string]string{"memory.pressure": "some avg10=1.50 avg60=0.20 avg300=0.00 total=12345\nfull avg10=0.75 avg60=0.10 avg300=0.00 total=678"})
	p, err := ReadPressure(d)
	if err != nil {
		t.Fatal(err)
	}
	if p != (Pressure{SomeAvg10: 1.5, FullAvg10: 0.75, SomeTotal: 12345, FullTotal: 678}) {
		t.Fatalf("%+v", p)
	}
}

func TestUtilisationAndEvents(t *testing.T) {
	ss := []results.Sample{
		{Cgroup: "parent", T: -0.1, Current: 1000},
		{Cgroup: "parent", T: 0, Current: 250},
		{Cgroup: "parent", T: 0.1, Current: 750},
		{Cgroup: "high", T: 0.1, Current: 999},
		{Cgroup: "parent", T: 0.3, Current: 1000},
	}
	if u := Utilisation(ss, "parent", 1000, 0, 0.2); u != 0.5 {
		t.Fatalf("utilisation %v, want 0.5", u)
	}
	d := eventDelta(map[string]int64{"oom_kill": 1, "high": 5}, map[string]int64{"oom_kill": 3, "high": 5, "max": 2})
	if d["oom_kill"] != 2 || d["high"] != 0 || d["max"] != 2 || len(d) != len(eventKeys) {
		t.Fatalf("delta %v", d)
	}
}

// The barrier grows with the slowest setup seen, and never drops below barrier_s.
func TestBarrierSizedFromSetup(t *testing.T) {
	tests := []struct {
		barrierS float64
		setup    time.Duration
		want     time.Duration
	}{
		{5, 0, 5 * time.Second},
		{5, 10 * time.Second, 17 * time.Second},
		{30, 10 * time.Second, 30 * time.Second},
	}
	for _, tc := range tests {
		o := &Orchestrator{setup: tc.setup}
		o.Cfg.BarrierS = tc.barrierS
		if got := o.barrier(); got != tc.want {
			t.Errorf("barrier_s %v, setup %v: barrier %v, want %v", tc.barrierS, tc.setup, got, tc.want)
		}
	}
}
