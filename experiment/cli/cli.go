// Package cli owns the `agentcg experiment` commands: `run` executes a
// profile or config file into results/<id>/ (and resumes one), `report`
// regenerates every table, figure and report.md from a results folder.
package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/agentcg/agentcg/bpf"
	"github.com/agentcg/agentcg/cgroup"
	"github.com/agentcg/agentcg/experiment/config"
	"github.com/agentcg/agentcg/experiment/report"
	"github.com/agentcg/agentcg/experiment/results"
	"github.com/agentcg/agentcg/experiment/run"
	crt "github.com/agentcg/agentcg/experiment/runtime"
	"github.com/agentcg/agentcg/internal/version"
)

// Command returns `experiment` with its run and report subcommands.
func Command() *cobra.Command {
	c := &cobra.Command{
		Use:   "experiment",
		Short: "Run the priority experiment (arms × runs) and build its report",
	}
	c.AddCommand(runCommand(), reportCommand(), checkCommand())
	return c
}

func reportCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "report DIR",
		Short: "Regenerate summary.csv, stats.csv, timeseries.csv, figures and report.md from DIR's raw files",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := report.Generate(args[0]); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), filepath.Join(args[0], "report.md"))
			return nil
		},
	}
}

func checkCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "check DIR",
		Short: "Verify a finished results folder: files, CSV schemas, and a finished run for every configured arm (for CI)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := resumeConfig(args[0])
			if err != nil {
				return err
			}
			arms := slices.Clone(cfg.Arms)
			if cfg.Solo {
				arms = append(arms, results.ArmSolo)
			}
			if err := report.Check(args[0], arms); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok (%s)\n", args[0], strings.Join(arms, ", "))
			return nil
		},
	}
}

type runFlags struct {
	config, profile, runtime, resume, out, plugin, traceDir, outRoot, hookConfig string
	memScale, speed                                                              float64
	runs                                                                         int
	quiet                                                                        bool
}

func runCommand() *cobra.Command {
	var f runFlags
	c := &cobra.Command{
		Use:   "run",
		Short: "Run an experiment (needs root, cgroup v2 with the memory controller, docker or containerd; BPF arm: memcg_bpf_ops)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return doRun(cmd, f)
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.config, "config", "", "experiment config file (YAML or JSON) applied over the profile")
	fl.StringVar(&f.profile, "profile", "default", "profile: default (design scenario) or smoke (1 small run per arm)")
	fl.Float64Var(&f.memScale, "mem-scale", 0, "scale trace memory and every limit by this factor (replaces a mem_scale sweep)")
	fl.Float64Var(&f.speed, "speed", 0, "replay speed-up of the traces")
	fl.IntVar(&f.runs, "runs", 0, "runs per arm and sweep point")
	fl.StringVar(&f.runtime, "runtime", "", "container runtime: docker or containerd")
	fl.StringVar(&f.resume, "resume", "", "continue the experiment in this results folder (its config.json wins)")
	fl.StringVar(&f.out, "out", "results", "folder that receives results/<id>/")
	fl.StringVar(&f.plugin, "plugin", "", "agentcg-nri binary for the containerd BPF arm (default: beside this binary)")
	fl.StringVar(&f.traceDir, "trace-dir", "", "host copy of the traces, for tool-call markers (default from config)")
	fl.StringVar(&f.outRoot, "out-root", "/run/agentcg-experiment", "scratch folder bind-mounted into the containers for result files")
	fl.StringVar(&f.hookConfig, "hook-config", "", "agentcg config the docker hook reads (default /etc/agentcg/config.yaml; restored afterwards)")
	fl.BoolVar(&f.quiet, "quiet", false, "no progress bar")
	return c
}

func doRun(cmd *cobra.Command, f runFlags) error {
	log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	var cfg config.Config
	dir := f.resume
	if dir != "" {
		var err error
		if cfg, err = resumeConfig(dir); err != nil {
			return err
		}
	} else {
		var err error
		if cfg, err = config.Load(f.config, f.profile); err != nil {
			return err
		}
		fs := cmd.Flags()
		if fs.Changed("mem-scale") {
			cfg.MemScale, cfg.Sweep.MemScale = f.memScale, nil
		}
		if fs.Changed("speed") {
			cfg.Speed = f.speed
		}
		if fs.Changed("runs") {
			cfg.Runs = f.runs
		}
		if fs.Changed("runtime") {
			cfg.Runtime = f.runtime
		}
		if f.traceDir != "" {
			cfg.TraceDir = f.traceDir
		}
		if err := cfg.Validate(); err != nil {
			return err
		}
		dir = filepath.Join(f.out, time.Now().UTC().Format("20060102-150405")+"-"+cfg.Profile)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := results.WriteJSON(filepath.Join(dir, "config.json"), cfg); err != nil {
			return err
		}
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "results: %s\n", dir)

	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rt, err := crt.New(ctx, cfg.Runtime)
	if err != nil {
		return err
	}
	defer rt.Close()

	env := collectEnv(ctx, cfg, rt)
	var enf run.Enforcer
	if slices.Contains(cfg.Arms, config.ArmBPF) {
		plugin := f.plugin
		if plugin == "" {
			self, _ := os.Executable()
			plugin = filepath.Join(filepath.Dir(self), "agentcg-nri")
		}
		e, err := run.NewBPFEnforcer(run.BPFEnforcer{Runtime: cfg.Runtime, PluginPath: plugin, ConfigPath: f.hookConfig, Base: cfg.Policy, Log: log})
		if err != nil {
			return fmt.Errorf("the BPF arm needs the policy: %w (drop BPF from arms to run without it)", err)
		}
		defer e.Close()
		enf = e
		env.PolicyMode = "bpf"
	}
	if _, err := os.Stat(filepath.Join(dir, "env.json")); err != nil {
		if err := results.WriteJSON(filepath.Join(dir, "env.json"), env); err != nil {
			return err
		}
	}
	o := &run.Orchestrator{Cfg: cfg, Dir: dir, Runtime: rt, Enforcer: enf, Log: log,
		Tree: run.Tree{Root: cgroup.Root, Parent: cfg.CgroupParent}, OutRoot: f.outRoot}
	if !f.quiet {
		o.Progress = cmd.ErrOrStderr()
	}
	o.ReplayStartAt = replayHasStartAt(ctx)
	if !o.ReplayStartAt {
		log.Warn("agentcg-replay has no --start-at: the barrier is starting every container at once")
	}
	if err := o.Execute(ctx); err != nil {
		if errors.Is(err, context.Canceled) {
			return fmt.Errorf("interrupted: containers, cgroups and pins removed, finished runs kept; continue with --resume %s", dir)
		}
		return err
	}
	if err := report.Generate(dir); err != nil {
		return err
	}
	fmt.Fprintln(cmd.OutOrStdout(), filepath.Join(dir, "report.md"))
	if o.Failures > 0 {
		return fmt.Errorf("%d runs failed (listed in report.md); retry them with --resume %s", o.Failures, dir)
	}
	return nil
}

// gitHead reads the checkout's HEAD commit from .git directly: inside the
// VM the share belongs to another uid and git itself refuses it.
func gitHead(src string) string {
	gd := filepath.Join(src, ".git")
	b, err := os.ReadFile(filepath.Join(gd, "HEAD"))
	if err != nil {
		return ""
	}
	head := strings.TrimSpace(string(b))
	ref, ok := strings.CutPrefix(head, "ref: ")
	if !ok {
		return head
	}
	if b, err := os.ReadFile(filepath.Join(gd, ref)); err == nil {
		return strings.TrimSpace(string(b))
	}
	packed, _ := os.ReadFile(filepath.Join(gd, "packed-refs"))
	for _, l := range strings.Split(string(packed), "\n") {
		if h, r, ok := strings.Cut(l, " "); ok && r == ref {
			return h
		}
	}
	return ""
}

// replayHasStartAt asks the replay binary built beside this one (the one
// baked into the image) whether it supports the --start-at barrier.
func replayHasStartAt(ctx context.Context) bool {
	self, err := os.Executable()
	if err != nil {
		return false
	}
	out, _ := exec.CommandContext(ctx, filepath.Join(filepath.Dir(self), "agentcg-replay"), "run", "--help").CombinedOutput()
	return strings.Contains(string(out), "--start-at")
}

func resumeConfig(dir string) (config.Config, error) {
	var cfg config.Config
	if err := results.ReadJSON(filepath.Join(dir, "config.json"), &cfg); err != nil {
		return cfg, fmt.Errorf("resume %s: %w", dir, err)
	}
	return cfg, cfg.Validate()
}

func collectEnv(ctx context.Context, cfg config.Config, rt crt.Runtime) results.Env {
	e := results.Env{Runtime: rt.Name(), AgentcgVersion: version.Version, CPUs: runtime.NumCPU(),
		StartedUnix: float64(time.Now().UnixNano()) / 1e9, Profile: cfg.Profile, PolicyMode: "none", Probe: "ok"}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		e.KernelRelease = unix.ByteSliceToString(u.Release[:])
	}
	if err := bpf.Probe(); err != nil {
		e.Probe = err.Error()
	}
	e.RuntimeVersions, _ = rt.Versions(ctx)
	e.GitCommit = gitHead(".")
	if e.GitCommit == "" {
		e.GitCommit = version.Version
	}
	e.Where, e.Accel = "host", "none"
	if os.Getenv("AGENTCG_GUEST") == "1" {
		// Only a KVM guest offers the kvm-clock clocksource.
		e.Where, e.Accel = "vm", "tcg"
		if b, err := os.ReadFile("/sys/devices/system/clocksource/clocksource0/available_clocksource"); err == nil && strings.Contains(string(b), "kvm-clock") {
			e.Accel = "kvm"
		}
	}
	if mi, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(strings.TrimSpace(strings.SplitN(string(mi), "\n", 2)[0]), "MemTotal: %d kB", &kb)
		e.MemTotalBytes = kb * 1024
	}
	return e
}
