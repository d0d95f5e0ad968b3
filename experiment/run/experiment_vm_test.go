//go:build vmtest

package run_test

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentcg/agentcg/cgroup"
	"github.com/agentcg/agentcg/experiment/config"
	"github.com/agentcg/agentcg/experiment/report"
	"github.com/agentcg/agentcg/experiment/results"
	"github.com/agentcg/agentcg/experiment/run"
	crt "github.com/agentcg/agentcg/experiment/runtime"
	"github.com/agentcg/agentcg/internal/vmtest"
)

// setup builds an orchestrator over the real runtime, kernel and (for the
// BPF arm) the real agentcg-nri plugin or docker hook.
func setup(t *testing.T, rtName string, mut func(*config.Config)) (*run.Orchestrator, func()) {
	t.Helper()
	vmtest.Require(t)
	cfg, err := config.Profile("smoke")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Runtime = rtName
	cfg.MemScale, cfg.Speed = 0.05, 50
	cfg.TraceDir = filepath.Join(vmtest.Src(t), "replayimage", "traces")
	if mut != nil {
		mut(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rt, err := crt.New(ctx, rtName)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(vmtest.ResultsDir(t), rtName)
	os.RemoveAll(dir)
	if err := results.WriteJSON(filepath.Join(dir, "config.json"), cfg); err != nil {
		t.Fatal(err)
	}
	o := &run.Orchestrator{Cfg: cfg, Dir: dir, Runtime: rt, Tree: run.Tree{Root: cgroup.Root, Parent: cfg.CgroupParent},
		OutRoot: t.TempDir(), Log: slog.Default()}
	closers := []func(){func() { rt.Close() }}
	if slices.Contains(cfg.Arms, config.ArmBPF) {
		e, err := run.NewBPFEnforcer(run.BPFEnforcer{Runtime: rtName, PluginPath: filepath.Join(vmtest.Src(t), "bin", "agentcg-nri"), Base: cfg.Policy, Log: slog.Default()})
		if err != nil {
			t.Fatal(err)
		}
		o.Enforcer = e
		closers = append(closers, func() { e.Close() })
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

// TestSmokeEndToEnd runs the smoke profile on both runtimes: every arm
// produces a finished run, and report writes every file.
func TestSmokeEndToEnd(t *testing.T) {
	for _, rtName := range []string{"containerd", "docker"} {
		t.Run(rtName, func(t *testing.T) {
			o, done := setup(t, rtName, nil)
			defer done()
			if err := o.Execute(context.Background()); err != nil {
				t.Fatal(err)
			}
			assertClean(t, o)
			if err := report.Generate(o.Dir); err != nil {
				t.Fatal(err)
			}
			runs, err := results.Load(o.Dir)
			if err != nil {
				t.Fatal(err)
			}
			arms := map[string]bool{}
			for _, r := range runs {
				arms[r.Run.Arm] = true
				if len(r.Sessions) == 0 {
					t.Errorf("run %s has no sessions", r.Run.ID)
				}
				for _, s := range r.Sessions {
					if s.CgroupID == 0 || s.Events == nil {
						t.Errorf("run %s session %s: no cgroup id or events: %+v", r.Run.ID, s.Name, s)
					}
					if r.Run.Arm == config.ArmBPF && s.Counters == nil {
						t.Errorf("run %s session %s: no BPF counters", r.Run.ID, s.Name)
					}
				}
			}
			for _, a := range append([]string{results.ArmSolo}, config.AllArms...) {
				if !arms[a] {
					t.Errorf("arm %s produced no run", a)
				}
			}
			for _, f := range []string{"config.json", "summary.csv", "stats.csv", "timeseries.csv", "report.md", "fig1-completion.png", "fig1-completion.svg", "fig3-oom.png"} {
				if fi, err := os.Stat(filepath.Join(o.Dir, f)); err != nil || fi.Size() == 0 {
					t.Errorf("%s missing or empty", f)
				}
			}
			ts, _ := os.ReadFile(filepath.Join(o.Dir, "timeseries.csv"))
			if strings.Count(string(ts), "\n") < 20 {
				t.Errorf("timeseries.csv has too few samples")
			}
		})
	}
}

// TestStaticForcedOOM: HIGH's scaled trace peak exceeds its Static
// memory.max (parent/3), so the kernel must OOM-kill it and the run must
// say so from memory.events.
func TestStaticForcedOOM(t *testing.T) {
	o, done := setup(t, "containerd", func(c *config.Config) {
		c.Arms, c.Solo = []string{config.ArmStatic}, false
		c.ParentLimitBytes = 2_000_000_000 // ×0.05 = 100 MB, 33 MB each; HIGH peaks at 203 MB
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
		c.Arms, c.Runs, c.Solo = []string{config.ArmNoLimit, config.ArmStatic}, 1, false
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
	plan := o.Cfg.Plan()
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
