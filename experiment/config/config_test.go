package config

import (
	"github.com/agentcg/agentcg/replayimage/trace"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var periods = map[string]float64{"low1": 110, "low2": 34}

func TestDefaultPlanIsBlocked(t *testing.T) {
	c, err := Load("", "default")
	if err != nil {
		t.Fatal(err)
	}
	pts := c.Points()
	plan := c.Plan(periods)
	if len(plan) != c.Runs*len(pts) {
		t.Fatalf("default plan has %d runs, want %d blocks × %d points", len(plan), c.Runs, len(pts))
	}
	// Every block holds every point once, and the block's runs share its offsets.
	for b := 0; b < c.Runs; b++ {
		var labels []string
		for _, p := range plan[b*len(pts) : (b+1)*len(pts)] {
			if p.Block != b {
				t.Fatalf("run %s in block %d, want %d", p.ID, p.Block, b)
			}
			labels = append(labels, p.Point.Label)
			if p.Offsets["low1"] != plan[b*len(pts)].Offsets["low1"] || len(p.Offsets) != 2 {
				t.Fatalf("block %d: offsets differ between arms: %v", b, p.Offsets)
			}
		}
		slices.Sort(labels)
		if len(slices.Compact(labels)) != len(pts) {
			t.Fatalf("block %d does not hold every point once: %v", b, labels)
		}
	}
	if !strings.HasPrefix(plan[0].ID, "000-b00-") {
		t.Fatalf("plan[0].ID = %s", plan[0].ID)
	}
	regimes := map[string]bool{}
	for _, p := range pts {
		regimes[p.Reclaim] = true
		if p.Arm == ArmSolo && (len(p.Sessions) != 1 || p.Sessions[0].Role != "high") {
			t.Fatalf("solo sessions: %+v", p.Sessions)
		}
	}
	if !regimes[ReclaimNone] || !regimes[ReclaimSwap] {
		t.Fatalf("default profile regimes %v: want a none control point and swap", regimes)
	}
}

// The seeded order differs between blocks and is the same for the same seed.
func TestSeededOrder(t *testing.T) {
	a, b := Order(1, 0, 8), Order(1, 1, 8)
	if slices.Equal(a, b) {
		t.Fatalf("blocks 0 and 1 have the same order %v", a)
	}
	if !slices.Equal(a, Order(1, 0, 8)) {
		t.Fatal("the same seed and block gave another order")
	}
	if slices.Equal(a, Order(2, 0, 8)) && slices.Equal(b, Order(2, 1, 8)) {
		t.Fatal("another seed gave the same orders")
	}
	s := slices.Clone(a)
	slices.Sort(s)
	for i, v := range s {
		if v != i {
			t.Fatalf("order %v is not a permutation", a)
		}
	}
	sess := []Session{{Name: "low1", RandomOffset: true, Window: windowLoop()}, {Name: "high"}}
	o0, o1 := Offsets(1, 0, sess, periods), Offsets(1, 1, sess, periods)
	if o0["low1"] == o1["low1"] || o0["low1"] != Offsets(1, 0, sess, periods)["low1"] {
		t.Fatalf("offsets %v %v: want different per block, the same per seed", o0, o1)
	}
	if _, ok := o0["high"]; ok || o0["low1"] < 0 || o0["low1"] >= 110 {
		t.Fatalf("offsets %v", o0)
	}
}

func TestSweepLabels(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "c.yaml")
	body := "runs: 2\narms: [BPF, HighOnly]\nregimes: []\nsweep:\n  delay_max_ms: [50, 200]\n  poll_ms: [100, 500]\n  mem_scale: [0.1]\n"
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
	if p.Policy.DelayMaxMs != 50 || p.Params["gate_pct"] != "80" || p.MemScale != 0.1 || p.Reclaim != ReclaimSwap {
		t.Fatalf("point %+v", p)
	}
	if len(c.Plan(periods)) != 8 {
		t.Fatalf("plan %d, want 8", len(c.Plan(periods)))
	}
}

func TestSeedPolicyArm(t *testing.T) {
	c, _ := Profile("extended")
	for _, p := range c.Points() {
		if p.Arm == ArmBPFSeed {
			if p.Policy.GatePct != 0 || p.Policy.DelayBaseMs != 2000 || p.Policy.DelayMaxMs != 2000 || p.Policy.HighActiveWindowMs != 0 {
				t.Fatalf("BPFSeed policy %+v", p.Policy)
			}
			return
		}
	}
	t.Fatal("extended profile has no BPFSeed point")
}

func TestValidate(t *testing.T) {
	cases := map[string]string{
		"unknown field":   "bogus: 1\n",
		"bad arm":         "arms: [Fast]\n",
		"bad regime":      "regimes: [{reclaim: zswap}]\n",
		"regime twice":    "regimes: [{reclaim: swap}, {reclaim: swap}]\n",
		"two highs":       "sessions: [{name: a, role: high, trace: x}, {name: b, role: high, trace: y}]\n",
		"high loops":      "sessions: [{name: a, role: high, trace: x, window: {loop: true}}]\n",
		"offset no loop":  "sessions: [{name: a, role: high, trace: x}, {name: b, role: low, trace: y, random_offset: true}]\n",
		"trace path":      "sessions: [{name: a, role: high, trace: ../x}]\n",
		"bad runtime":     "runtime: podman\n",
		"escape":          "cgroup_parent: ../x\n",
		"delay":           "policy: {delay_max_ms: 5000}\n",
		"share":           "random_share: 2\n",
		"swap device":     "swap: {device: disk}\n",
		"negative limit":  "parent_limit_bytes: -1\n",
		"window backward": "sessions: [{name: a, role: high, trace: x, window: {from_s: 5, to_s: 2}}]\n",
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
	for _, p := range Profiles {
		if _, err := Load("", p); err != nil {
			t.Errorf("profile %s: %v", p, err)
		}
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

func windowLoop() (w trace.Window) { w.Loop = true; w.To = 110; return }
