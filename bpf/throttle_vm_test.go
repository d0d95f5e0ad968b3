//go:build vmtest

package bpf

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/agentcg/agentcg/cgroup"
	"github.com/agentcg/agentcg/internal/vmtest"
	"github.com/agentcg/agentcg/policy"
)

// Sizes for the TCG guest (about 250 MB/s first touch). Each process also
// has a few MiB of Go runtime. Near the limit, HIGH + LOW end at 70-80 % of
// the parent's limit, over the 60 % gate and clear of the limit itself
// (swap is off: touching the limit would be an OOM kill, not a test).
const (
	nearLimitMB = 160
	farLimitMB  = 1024
	gatePct     = 60
	highHoldMB  = 48 // idle HIGH: resident, plus a 4 MiB churn (no growth)
	highGrowMB  = 40 // busy HIGH: 40..56 MiB, growing 16 MiB per 0.4 s
	lowAllocMB  = 64 // LOW touches and frees this, lowIters times per measurement
	lowIters    = 2
)

// throttleSetup is a parent with memory.max (swap off) holding a HIGH and a
// LOW cgroup.
type throttleSetup struct {
	parent, h, l string
	hid, lid     uint64
}

func newThrottleSetup(t *testing.T, name string) throttleSetup {
	parent := cg(t, filepath.Join(cgRoot, name))
	if err := cgroup.Write(parent, "memory.swap.max", "0"); err != nil {
		t.Fatal(err)
	}
	s := throttleSetup{parent: parent, h: cg(t, filepath.Join(parent, "high")), l: cg(t, filepath.Join(parent, "low"))}
	s.hid, _ = cgroup.ID(s.h)
	s.lid, _ = cgroup.ID(s.l)
	return s
}

func (s throttleSetup) limit(t *testing.T, mb int) {
	t.Helper()
	if err := cgroup.Write(s.parent, "memory.max", fmt.Sprint(mb<<20)); err != nil {
		t.Fatal(err)
	}
}

// lowRun runs LOW's churn once and returns its wall time and the counter
// deltas of LOW and HIGH. An OOM kill under the parent, or a HIGH workload
// that died, would make the counters meaningless: that fails the test as a
// broken setup.
func (s throttleSetup) lowRun(t *testing.T, p *Policy, high *exec.Cmd) (time.Duration, policy.Counters, policy.Counters) {
	t.Helper()
	ctx := context.Background()
	ev0, _ := cgroup.ReadKeyed(s.parent, "memory.events")
	before, _ := p.Stats(ctx)
	d := timed(t, s.l, "churn", lowAllocMB, lowIters)
	after, _ := p.Stats(ctx)
	ev1, _ := cgroup.ReadKeyed(s.parent, "memory.events")
	if n := ev1["oom_kill"] - ev0["oom_kill"]; n > 0 {
		t.Fatalf("setup: %d OOM kill(s) under %s during LOW's run (memory.events %v): the sizes do not fit", n, s.parent, ev1)
	}
	if high != nil && high.Process.Signal(syscall.Signal(0)) != nil {
		t.Fatalf("setup: the HIGH workload (pid %d) is gone", high.Process.Pid)
	}
	return d, delta(after[s.lid], before[s.lid]), delta(after[s.hid], before[s.hid])
}

func attachBoth(t *testing.T, p *Policy, s throttleSetup) {
	t.Helper()
	ctx := context.Background()
	if _, err := p.Attach(ctx, s.h, policy.High); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Attach(ctx, s.l, policy.Low); err != nil {
		t.Fatal(err)
	}
}

// TestGatedThrottling checks the policy's decisions by its counters (the
// times are printed, not asserted; `make bench` measures the ratios):
//   - HIGH resident but idle (faulting, not growing), parent near its limit:
//     LOW is called but never delayed; with the activity window 0 (always
//     active) the same run is delayed, which shows the gate was open;
//   - HIGH growing, parent near its limit: LOW is delayed, HIGH never;
//   - HIGH growing, parent far below its limit: LOW is called, never delayed.
func TestGatedThrottling(t *testing.T) {
	vmtest.Require(t)
	ctx := context.Background()
	cfg := policy.DefaultConfig()
	cfg.GatePct = gatePct
	p := newPolicy(t, cfg)
	always := cfg
	always.HighActiveWindowMs = 0
	p0 := newPolicy(t, always)
	s := newThrottleSetup(t, "agentcg-throttle")
	s.limit(t, nearLimitMB)
	attachBoth(t, p, s)

	hold := start(t, s.h, "hold", highHoldMB, 0)
	time.Sleep(3 * time.Second) // resident, and past any growth of its start
	dIdle, lIdle, hIdle := s.lowRun(t, p, hold)
	if err := p.Detach(ctx, s.l); err != nil { // p0 knows nothing of p's link
		t.Fatal(err)
	}
	if _, err := p0.Attach(ctx, s.l, policy.Low); err != nil {
		t.Fatal(err)
	}
	d0, l0, _ := s.lowRun(t, p0, hold)
	if err := p0.Detach(ctx, s.l); err != nil {
		t.Fatal(err)
	}
	stop(hold)
	t.Logf("idle HIGH, near the limit: LOW %v, %+v (HIGH %+v); window 0: LOW %v, %+v", dIdle, lIdle, hIdle, d0, l0)
	if lIdle.DelayCalls == 0 || lIdle.DelayNonZero != 0 {
		t.Errorf("idle HIGH: want LOW called and never delayed, got %+v", lIdle)
	}
	if l0.DelayNonZero == 0 {
		t.Errorf("idle HIGH with window 0: LOW never delayed (%+v): the gate was not open, the idle check proves nothing", l0)
	}

	if _, err := p.Attach(ctx, s.l, policy.Low); err != nil {
		t.Fatal(err)
	}
	grow := start(t, s.h, "grow", highGrowMB, 0)
	defer stop(grow)
	time.Sleep(time.Second)
	dNear, lNear, hNear := s.lowRun(t, p, grow)
	s.limit(t, farLimitMB)
	dFar, lFar, hFar := s.lowRun(t, p, grow)
	t.Logf("growing HIGH, near the limit: LOW %v, %+v (HIGH %+v)", dNear, lNear, hNear)
	t.Logf("growing HIGH, far below it: LOW %v, %+v (HIGH %+v)", dFar, lFar, hFar)
	if lNear.DelayNonZero == 0 || hNear.DelayCalls != 0 {
		t.Errorf("near the limit with HIGH growing: want LOW delayed and HIGH never asked, LOW %+v HIGH %+v", lNear, hNear)
	}
	if lFar.DelayCalls == 0 || lFar.DelayNonZero != 0 || hFar.DelayCalls != 0 {
		t.Errorf("far below the limit: want LOW called, never delayed, LOW %+v HIGH %+v", lFar, hFar)
	}
}

// TestBenchGatedThrottling (make bench) measures what the counters of
// TestGatedThrottling decide: LOW's churn time with ops near the limit and
// far below it while HIGH grows, and near it while HIGH is idle, each
// against no ops with the same HIGH near the limit, interleaved rep by rep;
// it prints the median per-rep ratios.
func TestBenchGatedThrottling(t *testing.T) {
	requireBench(t)
	ctx := context.Background()
	cfg := policy.DefaultConfig()
	cfg.GatePct = gatePct
	p := newPolicy(t, cfg)
	s := newThrottleSetup(t, "agentcg-bench-throttle")
	const reps = 7
	cases := []string{"noops-growing", "near", "far", "noops-idle", "idle"}
	ds := map[string][]time.Duration{}
	ctrs := map[string]policy.Counters{}
	var high *exec.Cmd
	run := func(name string) {
		d, l, _ := s.lowRun(t, p, high)
		ds[name] = append(ds[name], d)
		ctrs[name] = addCounters(ctrs[name], l)
	}
	detach := func() {
		for _, d := range []string{s.h, s.l} {
			if err := p.Detach(ctx, d); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := 0; i < reps; i++ {
		s.limit(t, nearLimitMB)
		hold := start(t, s.h, "hold", highHoldMB, 0)
		high = hold
		time.Sleep(2500 * time.Millisecond) // resident, past its start's growth
		run("noops-idle")
		attachBoth(t, p, s)
		run("idle")
		detach()
		stop(hold)
		grow := start(t, s.h, "grow", highGrowMB, 0)
		high = grow
		time.Sleep(time.Second)
		run("noops-growing")
		attachBoth(t, p, s)
		run("near")
		s.limit(t, farLimitMB)
		run("far")
		detach()
		stop(grow)
	}
	out := fmt.Sprintf("BENCH gated throttling, %d reps, LOW churns %d MiB x %d, parent %d MiB (far: %d MiB), gate %d%%; %s\n",
		reps, lowAllocMB, lowIters, nearLimitMB, farLimitMB, gatePct, loadavg())
	for _, name := range cases {
		out += fmt.Sprintf("BENCH   %-13s LOW median %v of %v; LOW counters %+v\n", name, median(ds[name]), ds[name], ctrs[name])
	}
	for _, c := range [][2]string{{"near", "noops-growing"}, {"far", "noops-growing"}, {"idle", "noops-idle"}} {
		var r []float64
		for i := 0; i < reps; i++ {
			r = append(r, float64(ds[c[0]][i])/float64(ds[c[1]][i]))
		}
		out += fmt.Sprintf("BENCH   LOW time %s / %s: median %.2f %.2f\n", c[0], c[1], medianF(r), r)
	}
	t.Log("\n" + out)
	os.WriteFile(filepath.Join(vmtest.ResultsDir(t), "throttle_ratios.txt"), []byte(out), 0o644)
}

func medianF(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func delta(a, b policy.Counters) policy.Counters {
	return policy.Counters{
		DelayCalls: a.DelayCalls - b.DelayCalls, DelayNonZero: a.DelayNonZero - b.DelayNonZero,
		DelayTotalMs: a.DelayTotalMs - b.DelayTotalMs, BelowLowCalls: a.BelowLowCalls - b.BelowLowCalls,
		BelowLowTrue: a.BelowLowTrue - b.BelowLowTrue, BelowMinTrue: a.BelowMinTrue - b.BelowMinTrue,
	}
}

// TestBelowLowUnderParentPressure: reclaim driven by the parent's limit
// consults HIGH's below_low.
func TestBelowLowUnderParentPressure(t *testing.T) {
	vmtest.Require(t)
	ctx := context.Background()
	p := newPolicy(t, policy.DefaultConfig())
	parent := cg(t, filepath.Join(cgRoot, "agentcg-belowlow"))
	cgroup.Write(parent, "memory.swap.max", "0")
	cgroup.Write(parent, "memory.max", fmt.Sprint(64<<20))
	h := cg(t, filepath.Join(parent, "high"))
	l := cg(t, filepath.Join(parent, "low"))
	hid, _ := cgroup.ID(h)
	if _, err := p.Attach(ctx, h, policy.High); err != nil {
		t.Fatal(err)
	}
	// With swap off nothing of HIGH's is reclaimable, but the kernel still
	// asks every memcg under the parent whether it is protected; LOW ends
	// up OOM-killed by the parent's limit, which is expected here.
	high := start(t, h, "hold", 24, 0)
	defer stop(high)
	time.Sleep(2 * time.Second)
	before, _ := p.Stats(ctx)
	ev0, _ := cgroup.ReadKeyed(h, "memory.events")
	// LOW pushes the parent over its limit: reclaim targets the parent.
	cmd := start(t, l, "churn", 48, 3)
	err := cmd.Wait()
	after, _ := p.Stats(ctx)
	ev1, _ := cgroup.ReadKeyed(h, "memory.events")
	d := delta(after[hid], before[hid])
	t.Logf("LOW churn exit: %v; HIGH counters delta %+v; HIGH memory.events low %d -> %d", err, d, ev0["low"], ev1["low"])
	if d.BelowLowCalls == 0 || d.BelowLowTrue == 0 {
		t.Errorf("below_low did not fire for HIGH under parent pressure: %+v", d)
	}
}
