//go:build vmtest

package run_test

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/agentcg/agentcg/bpf"
	"github.com/agentcg/agentcg/cgroup"
	"github.com/agentcg/agentcg/experiment/config"
	"github.com/agentcg/agentcg/experiment/contention"
	"github.com/agentcg/agentcg/experiment/report"
	"github.com/agentcg/agentcg/experiment/results"
	"github.com/agentcg/agentcg/experiment/run"
	crt "github.com/agentcg/agentcg/experiment/runtime"
	"github.com/agentcg/agentcg/internal/vmtest"
	"github.com/agentcg/agentcg/policy"
	"github.com/agentcg/agentcg/replayimage/trace"
)

// setup builds an orchestrator over the real runtime, kernel and (for the
// BPF arms) the real agentcg-nri plugin or docker hook, on the smoke profile.
func setup(t *testing.T, rtName string, mut func(*config.Config)) (*run.Orchestrator, func()) {
	t.Helper()
	vmtest.Require(t)
	cfg, err := config.Profile("smoke")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Runtime = rtName
	cfg.TraceDir = filepath.Join(vmtest.Src(t), "replayimage", "traces")
	if mut != nil {
		mut(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tree := run.Tree{Root: cgroup.Root, Parent: cfg.CgroupParent}
	traces := mustTraces(t, cfg)
	if cfg.MemScale == 0 {
		cal, err := run.Calibrate(ctx, cfg, filepath.Join(vmtest.Src(t), "bin", "agentcg-replay"), tree, traces[cfg.High().Trace], 4_500_000_000)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("calibration: %s", cal.Note)
		cfg.MemScale = cal.Scale
	}
	if _, err := contention.DecideLimit(&cfg, traces, cfg.MemScale); err != nil {
		t.Fatal(err)
	}
	rt, err := crt.New(ctx, rtName)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(vmtest.ResultsDir(t), rtName)
	os.RemoveAll(dir)
	if err := results.WriteJSON(filepath.Join(dir, "config.json"), cfg); err != nil {
		t.Fatal(err)
	}
	if err := results.WriteJSON(filepath.Join(dir, "env.json"), results.Env{KernelRelease: "vmtest", Runtime: rtName, Where: "vm", Reclaim: []string{"swap", "file", "none"}}); err != nil {
		t.Fatal(err)
	}
	o := &run.Orchestrator{Cfg: cfg, Dir: dir, Runtime: rt, Tree: tree,
		OutRoot: t.TempDir(), Log: slog.Default(), Zram: &run.Zram{}, Estimate: contention.DefaultEstimate}
	closers := []func(){func() { rt.Close() }}
	for _, p := range cfg.Points() {
		if config.IsBPF(p.Arm) && o.Enforcer == nil {
			e, err := run.NewBPFEnforcer(run.BPFEnforcer{Runtime: rtName, PluginPath: filepath.Join(vmtest.Src(t), "bin", "agentcg-nri"), Base: cfg.Policy, Log: slog.Default()})
			if err != nil {
				t.Fatal(err)
			}
			o.Enforcer = e
			closers = append(closers, func() { e.Close() })
		}
	}
	plan, err := o.Prepare()
	if err != nil {
		t.Fatal(err)
	}
	if err := results.WriteJSON(filepath.Join(dir, "plan.json"), plan); err != nil {
		t.Fatal(err)
	}
	return o, func() {
		for _, c := range closers {
			c()
		}
	}
}

// assertClean checks nothing of the experiment is left on the machine.
func assertClean(t *testing.T, o *run.Orchestrator) {
	t.Helper()
	if o.Tree.Exists() {
		t.Errorf("cgroup %s left behind", o.Tree.ParentDir())
	}
	if n, err := o.Runtime.RemoveAll(context.Background()); err != nil || n != 0 {
		t.Errorf("%d labelled containers/pods left behind (%v)", n, err)
	}
	if pins, err := run.PinsLeft(o.Cfg.Policy.WithDefaults().PinDir); err != nil || len(pins) > 0 {
		t.Errorf("pins left behind: %v (%v)", pins, err)
	}
}

// TestSmokeEndToEnd runs the smoke profile (every arm under swap, NoLimit
// under none) on containerd, and the arms that differ
// by front door (the hook instead of the plugin) on docker: every point
// produces a finished run, the kernel's records are there, and report
// writes every file that check wants.
func TestSmokeEndToEnd(t *testing.T) {
	for _, rtName := range []string{"containerd", "docker"} {
		t.Run(rtName, func(t *testing.T) {
			o, done := setup(t, rtName, func(c *config.Config) {
				// The file regime reads from the guest's disk, slow under a
				// loaded TCG host; the CI's smoke experiment covers it.
				c.Regimes = []config.Regime{{Reclaim: config.ReclaimSwap}, {Reclaim: config.ReclaimNone, Arms: []string{config.ArmNoLimit}}}
				if rtName == "docker" {
					c.Regimes = []config.Regime{{Reclaim: config.ReclaimSwap, Arms: []string{config.ArmNoLimit, config.ArmBPF, config.ArmBPFSeed}}}
				}
			})
			defer done()
			if err := o.Execute(context.Background()); err != nil {
				t.Fatal(err)
			}
			assertClean(t, o)
			if n := run.ActiveSwapBytes(); n != 0 {
				t.Errorf("%d bytes of swap still active after the experiment", n)
			}
			if err := report.Generate(o.Dir); err != nil {
				t.Fatal(err)
			}
			runs, err := results.Load(o.Dir)
			if err != nil {
				t.Fatal(err)
			}
			labels := map[string]bool{}
			for _, r := range runs {
				labels[r.Run.Label] = true
				if len(r.Sessions) == 0 {
					t.Errorf("run %s has no sessions", r.Run.ID)
				}
				if r.Run.Parent.Events == nil || r.Run.SetupS <= 0 {
					t.Errorf("run %s: no parent record or setup time: %+v", r.Run.ID, r.Run)
				}
				if r.Run.Reclaim == config.ReclaimSwap && (r.Run.Zram == nil || r.Run.ParentLimit == 0) {
					t.Errorf("run %s: swap regime without zram stats", r.Run.ID)
				}
				for _, s := range r.Sessions {
					if s.CgroupID == 0 || s.Events == nil || s.Kernel.Stat == nil {
						t.Errorf("run %s session %s: no cgroup id, events or memory.stat: %+v", r.Run.ID, s.Name, s)
					}
					// A session the OOM killer or the run's deadline ended
					// has no replay result: that is an outcome, kept.
					if s.Replay == nil && !s.Killed() && !s.TimedOut {
						t.Errorf("run %s session %s: no replay result, and it was neither killed nor timed out: %+v", r.Run.ID, s.Name, s)
					} else if s.Replay != nil && s.Role == results.RoleLow && s.Replay.Complete && !s.Replay.Stopped {
						t.Errorf("run %s session %s: a looping LOW was not ended by the stop file", r.Run.ID, s.Name)
					}
					if config.IsBPF(r.Run.Arm) && s.Counters == nil {
						t.Errorf("run %s session %s: no BPF counters", r.Run.ID, s.Name)
					}
				}
			}
			var want []string
			for _, p := range o.Cfg.Points() {
				want = append(want, p.Label)
				if !labels[p.Label] {
					t.Errorf("point %s produced no run", p.Label)
				}
			}
			if err := report.Check(o.Dir, want); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestReclaimSteering is the mechanism the swap regime exists for: with
// zram on and a parent limit below what LOW holds plus what HIGH writes,
// reclaim takes both sessions' pages when no policy is attached, and LOW's
// alone when HIGH carries the high ops (below_low) and LOW the low ops.
func TestReclaimSteering(t *testing.T) {
	vmtest.Require(t)
	if run.ActiveSwapBytes() > 0 {
		t.Skip("a swap device is already active in this guest")
	}
	z := &run.Zram{}
	if _, err := z.Setup(context.Background(), 512<<20, ""); err != nil {
		t.Fatal(err)
	}
	defer z.Teardown()
	replayBin := filepath.Join(vmtest.Src(t), "bin", "agentcg-replay")
	const (
		limit = 150_000_000 // the parent
		low   = 100_000_000 // LOW holds this
		high  = 125_000_000 // then HIGH writes this
	)
	measure := func(t *testing.T, withOps bool) (highSwap, lowSwap int64) {
		parent := vmtest.NewCgroup(t, "agentcg-steer", "memory.max", strconv.Itoa(limit), "memory.swap.max", "max", "cgroup.subtree_control", "+memory")
		hdir, ldir := filepath.Join(parent, "high"), filepath.Join(parent, "low")
		for _, d := range []string{hdir, ldir} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if withOps {
			pol, err := bpf.Load(bpf.Options{Config: policy.DefaultConfig(), Logger: slog.Default()})
			if err != nil {
				t.Fatal(err)
			}
			defer pol.Close()
			defer pol.DetachAll(context.Background())
			for _, a := range []struct {
				dir  string
				prio policy.Priority
			}{{hdir, policy.High}, {ldir, policy.Low}} {
				if _, err := pol.Attach(context.Background(), a.dir, a.prio); err != nil {
					t.Fatal(err)
				}
			}
		}
		start := func(dir string, bytes int64, hold string) *exec.Cmd {
			fd, err := os.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer fd.Close()
			cmd := exec.Command(replayBin, "rate", "--bytes", strconv.FormatInt(bytes, 10), "--random-share", "0.33", "--hold", hold)
			cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(fd.Fd())}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			return cmd
		}
		lp := start(ldir, low, "120s")
		defer func() { lp.Process.Kill(); lp.Wait() }()
		waitFor(t, func() bool { v, _ := cgroup.ReadBytes(ldir, "memory.current"); return v >= low*95/100 }, "LOW to fill")
		hp := start(hdir, high, "5s")
		defer func() { hp.Process.Kill(); hp.Wait() }()
		waitFor(t, func() bool {
			v, _ := cgroup.ReadBytes(hdir, "memory.current")
			s, _ := cgroup.ReadBytes(hdir, "memory.swap.current")
			return v+s >= high*95/100
		}, "HIGH to fill")
		highSwap, _ = cgroup.ReadBytes(hdir, "memory.swap.current")
		lowSwap, _ = cgroup.ReadBytes(ldir, "memory.swap.current")
		hc, _ := cgroup.ReadBytes(hdir, "memory.current")
		lc, _ := cgroup.ReadBytes(ldir, "memory.current")
		t.Logf("ops=%v: HIGH %.1f MB resident %.1f MB swapped, LOW %.1f MB resident %.1f MB swapped (parent %d MB, LOW %d MB, HIGH %d MB)",
			withOps, float64(hc)/1e6, float64(highSwap)/1e6, float64(lc)/1e6, float64(lowSwap)/1e6, limit/1000000, low/1000000, high/1000000)
		return highSwap, lowSwap
	}
	var noOpsHigh, noOpsLow int64
	t.Run("without ops both are reclaimed", func(t *testing.T) {
		noOpsHigh, noOpsLow = measure(t, false)
		if noOpsLow < 10e6 || noOpsHigh < 10e6 {
			t.Errorf("HIGH swapped %d, LOW %d: want both at least 10 MB without ops", noOpsHigh, noOpsLow)
		}
	})
	t.Run("with HIGH's ops only LOW is reclaimed", func(t *testing.T) {
		h, l := measure(t, true)
		if h > 5e6 || l < 60e6 {
			t.Errorf("HIGH swapped %d, LOW %d: want HIGH near 0 (under 5 MB) and LOW at least 60 MB", h, l)
		}
		if l <= noOpsLow {
			t.Errorf("LOW swapped %d with ops, %d without: want more with ops", l, noOpsLow)
		}
	})
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestStaticForcedOOM: HIGH's scaled trace peak exceeds its Static
// memory.max (parent/3), so the kernel must OOM-kill it and the run must
// say so from memory.events.
func TestStaticForcedOOM(t *testing.T) {
	o, done := setup(t, "containerd", func(c *config.Config) {
		c.Arms, c.Regimes = []string{config.ArmStatic}, []config.Regime{{Reclaim: config.ReclaimNone}}
		c.ParentLimitBytes = 2_000_000_000 // a third of it each, half of HIGH's 4.06 GB peak at any scale
	})
	defer done()
	if err := o.Execute(context.Background()); err != nil {
		t.Fatal(err)
	}
	runs, err := results.Load(o.Dir)
	if err != nil || len(runs) != 1 {
		t.Fatalf("runs %d, %v", len(runs), err)
	}
	h := runs[0].Session("high")
	if h == nil || h.Events["oom_kill"] < 1 || !h.OOMKilled || h.OOMSource != "memory.events oom_kill" || h.Signal != 9 {
		t.Fatalf("HIGH not counted as OOM-killed from the kernel: %+v", h)
	}
	if h.Replay != nil && h.Replay.Complete {
		t.Fatalf("HIGH completed although killed: %+v", h.Replay)
	}
	assertClean(t, o)
}

// TestInterruptAndResume sends a real SIGINT to `agentcg experiment run` in
// the middle of its second run, checks that nothing is left on the machine
// and the interrupted run is not recorded, then finishes the set with
// `--resume`.
func TestInterruptAndResume(t *testing.T) {
	// The orchestrator here only serves the clean-state checks.
	o, done := setup(t, "containerd", func(c *config.Config) {
		// No BPF arm: this tests the orchestrator's cleanup, not the plugin.
		c.Arms, c.Runs = []string{config.ArmNoLimit, config.ArmStatic}, 1
		c.Regimes = []config.Regime{{Reclaim: config.ReclaimNone}}
	})
	defer done()
	cfgFile := filepath.Join(t.TempDir(), "interrupt.yaml")
	if err := results.WriteJSON(cfgFile, o.Cfg); err != nil { // JSON is YAML
		t.Fatal(err)
	}
	bin := filepath.Join(vmtest.Src(t), "bin", "agentcg")
	out := filepath.Join(vmtest.ResultsDir(t), "cli")
	os.RemoveAll(out)
	cmd := exec.Command(bin, "experiment", "run", "--config", cfgFile, "--profile", "smoke", "--out", out, "--quiet")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	periods, err := contention.Periods(o.Cfg, mustTraces(t, o.Cfg))
	if err != nil {
		t.Fatal(err)
	}
	plan := o.Cfg.Plan(periods)
	deadline := time.Now().Add(10 * time.Minute)
	var dir string
	for { // wait until the second run's HIGH container is up
		dirs, _ := filepath.Glob(filepath.Join(out, "*-smoke"))
		if len(dirs) == 1 {
			dir = dirs[0]
		}
		if dir != "" && results.Finished(dir, plan[0].ID) && o.Tree.Exists() {
			if ents, _ := os.ReadDir(o.Tree.SessionDir("high")); len(ents) > 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("second run never started")
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil {
		t.Fatal("agentcg experiment run exited 0 after SIGINT")
	}
	assertClean(t, o)
	if n := run.ActiveSwapBytes(); n != 0 {
		t.Errorf("%d bytes of swap still active after the interrupt", n)
	}
	if results.Finished(dir, plan[1].ID) {
		t.Fatal("the interrupted run was recorded as finished")
	}
	resume := exec.Command(bin, "experiment", "run", "--resume", dir, "--quiet")
	resume.Stdout, resume.Stderr = os.Stdout, os.Stderr
	if err := resume.Run(); err != nil {
		t.Fatalf("--resume: %v", err)
	}
	for _, p := range plan {
		if !results.Finished(dir, p.ID) {
			t.Errorf("run %s missing after --resume", p.ID)
		}
	}
	assertClean(t, o)
}

func mustTraces(t *testing.T, c config.Config) map[string]*trace.Trace {
	t.Helper()
	tr, err := contention.LoadTraces(c.TraceDir, c.Sessions)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}
