package contention

import (
	"math"
	"strings"
	"testing"

	"github.com/agentcg/agentcg/experiment/config"
	"github.com/agentcg/agentcg/replayimage/trace"
)

// tr builds a trace with samples every second holding the given MB.
func tr(name string, mb ...int64) *trace.Trace {
	t := &trace.Trace{Name: name}
	for i, v := range mb {
		t.Samples = append(t.Samples, trace.Sample{Index: i, T: float64(i), UsedBytes: v * 1e6})
	}
	return t
}

func synthConfig() (config.Config, map[string]*trace.Trace) {
	c, _ := config.Profile("default")
	c.Sessions = []config.Session{
		{Name: "high", Role: "high", Trace: "H"},
		{Name: "low", Role: "low", Trace: "L", Window: trace.Window{Loop: true}},
	}
	c.Regimes = []config.Regime{{Reclaim: config.ReclaimSwap}}
	c.Arms = []string{config.ArmNoLimit, config.ArmBPF}
	c.Runs, c.Speed, c.TailS, c.SessionOverheadBytes = 1, 1, 0, 0
	c.ParentLimitBytes = 1000e6
	c.MinGiveUpFrac, c.MinGiveUpS = 0.1, 2
	return c, map[string]*trace.Trace{
		// HIGH: 100 MB, then 900 MB for 3 s, then 100 MB.
		"H": tr("H", 100, 100, 900, 900, 900, 100, 100),
		// LOW: a flat 300 MB.
		"L": tr("L", 300, 300, 300, 300),
	}
}

func TestGiveUp(t *testing.T) {
	c, traces := synthConfig()
	p, err := Compute(c, traces, 1, "test", DefaultEstimate)
	if err != nil {
		t.Fatal(err)
	}
	// 900 + 300 − 1000 = 200 MB for 3 s; the floor is 90 MB for 2 s.
	if p.HighPeakBytes != 900e6 || p.GiveUpBytes != 200e6 || math.Abs(p.GiveUpS-3) > 1e-9 || p.Weak || !p.Feasible {
		t.Fatalf("plan %+v", p)
	}
	if b := p.Blocks[0]; b.ContentionStartS != 2 || b.ContentionEndS != 5 || math.Abs(b.LowShare-2.0/3) > 1e-9 {
		t.Fatalf("block %+v", b)
	}
	// Limits that meet the floor: HIGH fits from 900 MB; the floor holds
	// while 1200 − limit ≥ 90 MB for 2 s: up to 1110 MB.
	if p.LimitRange != [2]int64{900e6, 1110e6} {
		t.Fatalf("limit range %v", p.LimitRange)
	}
	l, _, err := ChooseLimit(c, traces, 1)
	if err != nil || l != 1005e6 {
		t.Fatalf("ChooseLimit = %d, %v", l, err)
	}
	if s := p.Text(); !strings.Contains(s, "met in every block") || !strings.Contains(s, "200.0") {
		t.Fatalf("text:\n%s", s)
	}
	if p.Budget.Runs != 2 || p.Budget.ReplayS != 12 {
		t.Fatalf("budget %+v", p.Budget)
	}
}

func TestWeakAndInfeasible(t *testing.T) {
	c, traces := synthConfig()
	c.ParentLimitBytes = 1150e6 // give-up 50 MB < the 90 MB floor
	p, err := Compute(c, traces, 1, "", DefaultEstimate)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Weak || p.GiveUpBytes != 50e6 || len(p.Problems) == 0 {
		t.Fatalf("weak plan not flagged: %+v", p)
	}
	c.ParentLimitBytes = 800e6 // HIGH alone does not fit
	p, _ = Compute(c, traces, 1, "", DefaultEstimate)
	if p.Feasible || !strings.Contains(strings.Join(p.Problems, " "), "HIGH cannot fit") {
		t.Fatalf("infeasible plan not flagged: %+v", p)
	}
	// Overhead counts: with 60 MB per container, 900 MB no longer fits in 950.
	c.ParentLimitBytes, c.SessionOverheadBytes = 950e6, 60e6
	if p, _ = Compute(c, traces, 1, "", DefaultEstimate); p.Feasible {
		t.Fatal("overhead ignored")
	}
}

// The default profile's plan meets its floor in every block, at scale 1
// and at the scale the TCG VM calibrates to, with the limit it chooses.
func TestDefaultProfileMeetsTheFloor(t *testing.T) {
	c, traces := defaultProfile(t)
	for _, scale := range []float64{1, 0.2, 0.1, 0.05, 0.03} {
		cc := c
		l, r, err := ChooseLimit(cc, traces, scale)
		if err != nil {
			t.Fatalf("scale %v: %v", scale, err)
		}
		cc.ParentLimitBytes = l
		p, err := Compute(cc, traces, scale, "", DefaultEstimate)
		if err != nil {
			t.Fatal(err)
		}
		if p.Weak || !p.Feasible || p.GiveUpS < c.MinGiveUpS || p.GiveUpBytes < p.FloorBytes || len(p.Blocks) != c.Runs {
			t.Fatalf("scale %v limit %d (range %v): %s", scale, l, r, p.Text())
		}
		t.Logf("scale %v: limit %s unscaled (range %s–%s), weakest block gives up %s for %.2f s, budget %.0f min",
			scale, MB(l), MB(r[0]), MB(r[1]), MB(p.GiveUpBytes), p.GiveUpS, p.Budget.TotalS/60)
	}
}

// MaxPeakBytes covers every block: a looped LOW with a random phase plays a
// different part of its window per block, so block 0's peak is not enough
// for a static limit (Static-Priority).
func TestMaxPeakCoversEveryBlock(t *testing.T) {
	c, traces := defaultProfile(t)
	p, err := Compute(c, traces, 0.1, "", DefaultEstimate)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range p.Sessions {
		if s.MaxPeakBytes < s.PeakBytes || s.MaxPeakBytes <= 0 {
			t.Errorf("%s: max peak %d below block 0's %d", s.Name, s.MaxPeakBytes, s.PeakBytes)
		}
		t.Logf("%s: block 0 peak %s, over all blocks %s", s.Name, MB(s.PeakBytes), MB(s.MaxPeakBytes))
	}
}

// defaultProfile is the default profile's config and the image's traces.
func defaultProfile(t *testing.T) (config.Config, map[string]*trace.Trace) {
	t.Helper()
	c, err := config.Load("", "default")
	if err != nil {
		t.Fatal(err)
	}
	traces, err := LoadTraces("../../replayimage/traces", c.Sessions)
	if err != nil {
		t.Fatal(err)
	}
	return c, traces
}
