package run

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentcg/agentcg/cgroup"
	"github.com/agentcg/agentcg/experiment/config"
	"github.com/agentcg/agentcg/experiment/results"
	"github.com/agentcg/agentcg/policy"
	"github.com/agentcg/agentcg/replayimage/trace"
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
	parent, high, leaf, low := filepath.Join(root, "p"), filepath.Join(root, "p/high"), filepath.Join(root, "p/high/ctr"), filepath.Join(root, "p/low1")
	fakeCgroup(t, root, map[string]string{"memory.max": "max"})
	fakeCgroup(t, parent, map[string]string{"memory.current": "500", "memory.max": "1000"})
	fakeCgroup(t, high, map[string]string{"memory.current": "100", "memory.low": "0"})
	fakeCgroup(t, leaf, map[string]string{"memory.low": "0"})
	fakeCgroup(t, low, map[string]string{"memory.current": "300", "memory.high": "max", "memory.max": "max"})
	now := time.Unix(1000, 0)
	m := &Monitor{Root: root, High: []string{high, leaf}, Lows: []string{low}, GatePct: 80, Floor: 50,
		Activity: policy.GrowthSignal{Window: 2 * time.Second, MinGrowth: 50}, now: func() time.Time { return now }}
	if err := m.Protect(); err != nil {
		t.Fatal(err)
	}
	if read(t, high, "memory.low") != "max" || read(t, leaf, "memory.low") != "max" {
		t.Fatal("HIGH's session and container cgroups are not protected")
	}
	steps := []struct {
		name             string
		parentUse, hiUse string
		advance          time.Duration
		wantHigh         string
	}{
		{"first sample: no growth yet", "850", "100", 0, "max"},
		{"below the gate, HIGH growing", "500", "200", 100 * time.Millisecond, "max"},
		{"gate open, HIGH grew by at least MinGrowth: tighten at LOW's usage", "850", "300", 100 * time.Millisecond, "300"},
		{"still gated: keep the pinned value", "900", "320", 100 * time.Millisecond, "300"},
		{"HIGH idle beyond the window: release", "900", "320", 3 * time.Second, "max"},
		{"a rise below MinGrowth is not growth", "900", "340", 100 * time.Millisecond, "max"},
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
	if m.Stats.Tightenings != 2 || m.Stats.Polls != len(steps) {
		t.Fatalf("stats %+v, want 2 tightenings in %d polls", m.Stats, len(steps))
	}
	// The floor: a LOW using less than Floor is pinned at Floor.
	fakeCgroup(t, low, map[string]string{"memory.current": "10"})
	fakeCgroup(t, parent, map[string]string{"memory.current": "950"})
	fakeCgroup(t, high, map[string]string{"memory.current": "700"})
	m.Step()
	if got := read(t, low, "memory.high"); got != "50" {
		t.Fatalf("floor: memory.high = %s", got)
	}
	// gate_pct 0 is ungated: HIGH's growth alone tightens.
	m2 := &Monitor{Root: root, High: []string{high}, Lows: []string{low}, GatePct: 0,
		Activity: policy.GrowthSignal{Window: time.Second, MinGrowth: 1}, now: func() time.Time { return now }}
	fakeCgroup(t, low, map[string]string{"memory.current": "30", "memory.high": "max"})
	fakeCgroup(t, parent, map[string]string{"memory.current": "1"})
	m2.Step()
	now = now.Add(100 * time.Millisecond)
	fakeCgroup(t, high, map[string]string{"memory.current": "800"})
	m2.Step()
	if got := read(t, low, "memory.high"); got != "30" {
		t.Fatalf("ungated: memory.high = %s, want 30", got)
	}
}

func TestNearestLimited(t *testing.T) {
	root := t.TempDir()
	fakeCgroup(t, filepath.Join(root, "a"), map[string]string{"memory.max": "1000"})
	fakeCgroup(t, filepath.Join(root, "a/b"), map[string]string{"memory.max": "max"})
	fakeCgroup(t, filepath.Join(root, "a/b/c"), map[string]string{"memory.max": "5"})
	if d, l := NearestLimited(root, filepath.Join(root, "a/b/c")); d != filepath.Join(root, "a") || l != 1000 {
		t.Fatalf("NearestLimited = %s %d", d, l)
	}
	if d, _ := NearestLimited(root, filepath.Join(root, "a")); d != "" {
		t.Fatalf("above the parent: %s", d)
	}
}

func TestTreeCreateRemove(t *testing.T) {
	root := t.TempDir()
	fakeCgroup(t, root, map[string]string{"cgroup.subtree_control": "cpu memory"})
	tr := Tree{Root: root, Parent: "agentcg-exp"}
	// A plain directory has no interface files, so Create must fail at the
	// parent's subtree_control (the real Create is covered in the VM test).
	if err := tr.Create(1000, 0, []string{"high", "low1"}); err == nil {
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
		{Cgroup: "parent", T: 0, Current: 0},
		{Cgroup: "parent", T: 0.1, Current: 1000},
		{Cgroup: "high", T: 0.1, Current: 999},
		{Cgroup: "parent", T: 0.3, Current: 1000},
		{Cgroup: "parent", T: 0.5, Current: 5},
	}
	// Trapezoids over [0, 0.3]: 0→1 over 0.1 s, then 1 for 0.2 s: 0.25/0.3.
	if u := Utilisation(ss, "parent", 1000, 0, 0.3); math.Abs(u-0.25/0.3) > 1e-9 {
		t.Fatalf("utilisation %v, want %v (time-weighted)", u, 0.25/0.3)
	}
	d := eventDelta(map[string]int64{"oom_kill": 1, "high": 5}, map[string]int64{"oom_kill": 3, "high": 5, "max": 2})
	if d["oom_kill"] != 2 || d["high"] != 0 || d["max"] != 2 || len(d) != len(eventKeys) {
		t.Fatalf("delta %v", d)
	}
}

func TestReadCgroup(t *testing.T) {
	d := t.TempDir()
	fakeCgroup(t, d, map[string]string{
		"memory.events":   "low 0\nhigh 3\nmax 7\noom 1\noom_kill 1\noom_group_kill 0",
		"memory.stat":     "anon 4096\nworkingset_refault_anon 12\nworkingset_refault_file 3\npgsteal 40\nunrelated 9",
		"cpu.stat":        "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000",
		"memory.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=2500\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=1000",
		"cpu.pressure":    "some avg10=0.00 avg60=0.00 avg300=0.00 total=77",
		"memory.peak":     "9000", "memory.swap.peak": "4096", "memory.low": "max", "memory.high": "max", "memory.max": "100000", "memory.swap.max": "max",
	})
	c := ReadCgroup(d)
	if c.Events["max"] != 7 || c.Stat["workingset_refault_anon"] != 12 || c.Stat["pgsteal"] != 40 || c.CPUStat["usage_usec"] != 1500000 {
		t.Fatalf("%+v", c)
	}
	if _, ok := c.Stat["unrelated"]; ok {
		t.Fatal("kept a memory.stat key outside StatKeys")
	}
	if c.Memory.SomeUs != 2500 || c.Memory.FullUs != 1000 || c.CPU.SomeUs != 77 || c.PeakBytes != 9000 || c.SwapPeak != 4096 ||
		c.MemoryLow != -1 || c.MemoryMax != 100000 || len(c.ReadErrors) != 0 {
		t.Fatalf("%+v", c)
	}
	if c := ReadCgroup(filepath.Join(d, "gone")); len(c.ReadErrors) == 0 {
		t.Fatal("a missing cgroup read without errors")
	}
}

func TestZramStat(t *testing.T) {
	z := parseMMStat("  104857600 34952533 36000000 0 36000000 12 0 0 0\n")
	if z.OrigBytes != 104857600 || z.ComprBytes != 34952533 || z.SamePages != 12 {
		t.Fatalf("%+v", z)
	}
	d := zramDiff(results.Zram{OrigBytes: 4096, ComprBytes: 100}, z)
	if d.OrigBytes != 104857600-4096 || math.Abs(d.Ratio-3.0) > 0.01 {
		t.Fatalf("%+v", d)
	}
	if selected("lzo [lzo-rle] lz4 zstd") != "lzo-rle" {
		t.Fatal("selected algorithm")
	}
}

func TestChooseScale(t *testing.T) {
	tests := []struct {
		rate, need, safety float64
		limit, mem         int64
		want               float64
	}{
		{1e9, 100e6, 0.5, 4e9, 64e9, 1},      // fast host: scale 1
		{150e6, 323e6, 0.5, 4e9, 64e9, 0.23}, // TCG: 0.2321… rounded down to 2 digits
		{150e6, 323e6, 0.5, 4e9, 3e9, 0.23},  // memory allows 0.375
		{1e9, 100e6, 0.5, 4e9, 2e9, 0.25},    // memory caps it
		{15e6, 323e6, 0.5, 4e9, 64e9, 0.023},
		{41e6, 344e6, 0.5, 4e9, 64e9, 0.059}, // measured: must print as 0.059

	}
	for _, tc := range tests {
		if got, _ := ChooseScale(tc.rate, tc.need, tc.safety, tc.limit, tc.mem); got != tc.want {
			t.Errorf("ChooseScale(%v, %v, %v, %d, %d) = %v, want %v", tc.rate, tc.need, tc.safety, tc.limit, tc.mem, got, tc.want)
		}
	}
}

func TestNeedRate(t *testing.T) {
	c, _ := config.Profile("default")
	tr, err := trace.Load("../../replayimage/traces/Medical_Bio_Hard", trace.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	need, err := NeedRate(c, tr)
	if err != nil {
		t.Fatal(err)
	}
	// The fastest step is 2591 → 3432 MB at 221.7 s, due before 223.0 s:
	// 841 MB in about 1.2 trace s, 2.4 wall s at speed 0.5.
	if need < 300e6 || need > 360e6 {
		t.Fatalf("need %.0f MB/s, want 300-360", need/1e6)
	}
}

func TestProgressETA(t *testing.T) {
	var b strings.Builder
	p := &Progress{W: &b, Mode: "lines", Every: time.Hour}
	p.Begin([]float64{10, 10, 20}, map[int]bool{0: true})
	if !strings.Contains(b.String(), "3 runs planned, 1 done, about 30s") {
		t.Fatalf("begin: %q", b.String())
	}
	stop := p.Run(1, "NoLimit swap (block 0)")
	stop()
	// The run took ~0 s of an expected 10: the rest is corrected down.
	if !strings.Contains(b.String(), "run 2/3 NoLimit swap (block 0): done in 0s") {
		t.Fatalf("run lines: %q", b.String())
	}
}
