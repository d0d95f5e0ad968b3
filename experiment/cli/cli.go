// Package cli owns the `agentcg experiment` commands: `run` executes a
// profile or config file into results/<id>/ (and resumes one), `report`
// regenerates every table, figure and report.md from a results folder.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/agentcg/agentcg/bpf"
	"github.com/agentcg/agentcg/cgroup"
	"github.com/agentcg/agentcg/experiment/config"
	"github.com/agentcg/agentcg/experiment/contention"
	"github.com/agentcg/agentcg/experiment/report"
	"github.com/agentcg/agentcg/experiment/results"
	"github.com/agentcg/agentcg/experiment/run"
	crt "github.com/agentcg/agentcg/experiment/runtime"
	"github.com/agentcg/agentcg/internal/version"
	"github.com/agentcg/agentcg/replayimage/trace"
)

// Command returns `experiment` with its plan, run, report, check and
// compare subcommands.
func Command() *cobra.Command {
	c := &cobra.Command{
		Use:   "experiment",
		Short: "Design (plan), run and report the priority experiment",
	}
	c.AddCommand(planCommand(), runCommand(), reportCommand(), checkCommand(), compareCommand(), costsCommand())
	return c
}

func reportCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "report DIR",
		Short: "Regenerate every CSV, figure and report.md from DIR's raw files",
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

func compareCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "compare A B",
		Short: "Set two result folders side by side (e.g. TCG against KVM, or two kernels): setup and headline tables",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := report.Compare(args[0], args[1])
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), s)
			return nil
		},
	}
}

func costsCommand() *cobra.Command {
	var (
		bytes   int64
		share   float64
		scratch string
		asJSON  bool
	)
	c := &cobra.Command{
		Use:   "costs",
		Short: "Measure what each reclaim regime costs per GB on this machine (root; sets up and removes a zram device)",
		Long: "Fills --bytes of replay page content in a cgroup: with no limit, then under a memory.max of half\n" +
			"the size (half is swapped to zram, or evicted from the page cache), and reads it all back once.\n" +
			"In the VM: scripts/vm/run.sh -- /agentcg/bin/agentcg experiment costs",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			self, _ := os.Executable()
			cs, err := run.MeasureCosts(cmd.Context(), filepath.Join(filepath.Dir(self), "agentcg-replay"), run.Tree{Root: cgroup.Root, Parent: "agentcg-exp"},
				&run.Zram{}, scratch, bytes, share)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(cs)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "load average %s\n%s", loadAvg(), run.CostsText(cs))
			return nil
		},
	}
	def, _ := config.Profile("default")
	c.Flags().Int64Var(&bytes, "bytes", 256_000_000, "bytes per measurement")
	c.Flags().Float64Var(&share, "random-share", def.RandomShare, "random share of each page's content")
	c.Flags().StringVar(&scratch, "scratch-dir", def.ScratchDir, "disk-backed folder for the file regime's file (\"\" skips it)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

func checkCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "check DIR",
		Short: "Verify a finished results folder: files, CSV schemas, a finished run for every configured point (for CI)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := resumeConfig(args[0])
			if err != nil {
				return err
			}
			var labels []string
			for _, p := range cfg.Points() {
				labels = append(labels, p.Label)
			}
			if err := report.Check(args[0], labels); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok (%s)\n", args[0], strings.Join(labels, ", "))
			return nil
		},
	}
}

// cfgFlags are the flags plan and run share.
type cfgFlags struct {
	config, profile, runtime, traceDir string
	memScale, speed                    float64
	runs                               int
	seed                               uint64
}

func (f *cfgFlags) register(c *cobra.Command) {
	fl := c.Flags()
	fl.StringVar(&f.config, "config", "", "experiment config file (YAML or JSON) applied over the profile")
	fl.StringVar(&f.profile, "profile", "default", "profile: "+strings.Join(config.Profiles, ", "))
	fl.Float64Var(&f.memScale, "mem-scale", 0, "scale trace memory and every limit by this factor (replaces a mem_scale sweep; default: the config's; 0: run calibrates, plan shows scale 1)")
	fl.Float64Var(&f.speed, "speed", 0, "replay speed factor of the traces (0.5 = half speed)")
	fl.IntVar(&f.runs, "runs", 0, "blocks: repetitions of every point")
	fl.Uint64Var(&f.seed, "seed", 0, "seed of the arm order and the LOW offsets per block")
	fl.StringVar(&f.runtime, "runtime", "", "container runtime: docker or containerd")
	fl.StringVar(&f.traceDir, "trace-dir", "", "folder of trace folders, mounted read-only into the session containers (no image rebuild); default from the config")
}

// load reads the config and applies the flags that were given.
func (f *cfgFlags) load(cmd *cobra.Command) (config.Config, error) {
	cfg, err := config.Load(f.config, f.profile)
	if err != nil {
		return cfg, err
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
	if fs.Changed("seed") {
		cfg.Seed = f.seed
	}
	if fs.Changed("runtime") {
		cfg.Runtime = f.runtime
	}
	if f.traceDir != "" {
		cfg.TraceDir = f.traceDir
	}
	return cfg, cfg.Validate()
}

// decideLimit fills parent_limit_bytes 0 from the plan at scale.
func decideLimit(cfg *config.Config, traces map[string]*trace.Trace, scale float64) (string, error) {
	return contention.DecideLimit(cfg, traces, scale)
}

func planCommand() *cobra.Command {
	var (
		f      cfgFlags
		asJSON bool
	)
	c := &cobra.Command{
		Use:   "plan",
		Short: "Print the designed contention without running anything: demand over time, limit and gate lines, what LOW must give up and for how long, per block; and the time budget",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := f.load(cmd)
			if err != nil {
				return err
			}
			traces, err := contention.LoadTraces(cfg.TraceDir, cfg.Sessions)
			if err != nil {
				return err
			}
			scale, note := cfg.MemScale, "from the config"
			if cmd.Flags().Changed("mem-scale") {
				note = "from --mem-scale"
			}
			if scale == 0 {
				scale, note = 1, "mem_scale 0: calibrated at run time; shown at 1, pass --mem-scale to see another"
			}
			lnote, err := decideLimit(&cfg, traces, scale)
			if err != nil {
				return err
			}
			if lnote != "" {
				note += "; " + lnote
			}
			p, err := contention.Compute(cfg, traces, scale, note, contention.DefaultEstimate)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(p)
			}
			fmt.Fprint(cmd.OutOrStdout(), p.Text())
			return nil
		},
	}
	f.register(c)
	c.Flags().BoolVar(&asJSON, "json", false, "print the plan as one JSON object")
	return c
}

type runFlags struct {
	cfgFlags
	resume, out, plugin, outRoot, hookConfig, progress string
	quiet, allowWeak                                   bool
}

func runCommand() *cobra.Command {
	var f runFlags
	c := &cobra.Command{
		Use:   "run",
		Short: "Run an experiment (needs root, cgroup v2 with the memory controller, docker or containerd; BPF arms: memcg_bpf_ops)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return doRun(cmd, f)
		},
	}
	f.register(c)
	fl := c.Flags()
	fl.StringVar(&f.resume, "resume", "", "continue the experiment in this results folder (its config.json wins)")
	fl.StringVar(&f.out, "out", "results", "folder that receives results/<id>/")
	fl.StringVar(&f.plugin, "plugin", "", "agentcg-nri binary for the containerd BPF arms (default: beside this binary)")
	fl.StringVar(&f.outRoot, "out-root", "/run/agentcg-experiment", "scratch folder bind-mounted into the containers for result files")
	fl.StringVar(&f.hookConfig, "hook-config", "", "agentcg config the docker hook reads (default /etc/agentcg/config.yaml; restored afterwards)")
	fl.StringVar(&f.progress, "progress", "auto", "progress report: auto (bar on a terminal, else lines), bar, lines or none")
	fl.BoolVar(&f.quiet, "quiet", false, "no progress report (same as --progress none)")
	fl.BoolVar(&f.allowWeak, "allow-weak", false, "run a config whose planned contention is below the floor (min_give_up_frac, min_give_up_s)")
	return c
}

func doRun(cmd *cobra.Command, f runFlags) error {
	stderr := cmd.ErrOrStderr()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	self, _ := os.Executable()
	bindir := filepath.Dir(self)
	tree := func(c config.Config) run.Tree { return run.Tree{Root: cgroup.Root, Parent: c.CgroupParent} }

	var cfg config.Config
	var env results.Env
	dir := f.resume
	if dir != "" {
		var err error
		if cfg, err = resumeConfig(dir); err != nil {
			return err
		}
		if err := results.ReadJSON(filepath.Join(dir, "env.json"), &env); err != nil {
			return fmt.Errorf("resume %s: %w", dir, err)
		}
		if f.traceDir != "" {
			cfg.TraceDir = f.traceDir
		}
	} else {
		var err error
		if cfg, err = f.load(cmd); err != nil {
			return err
		}
		if f.allowWeak {
			cfg.AllowWeak = true
		}
	}
	traces, err := contention.LoadTraces(cfg.TraceDir, cfg.Sessions)
	if err != nil {
		return err
	}
	note := "as configured"
	if dir == "" {
		env = collectEnv(cfg)
		if cfg.MemScale == 0 {
			limit := cfg.ParentLimitBytes
			if limit == 0 {
				limit = traces[cfg.High().Trace].Peak() * 11 / 10
			}
			cal, err := run.Calibrate(ctx, cfg, filepath.Join(bindir, "agentcg-replay"), tree(cfg), traces[cfg.High().Trace], limit)
			if err != nil {
				return fmt.Errorf("calibrate the memory scale: %w (or give --mem-scale)", err)
			}
			cfg.MemScale, env.Calibration = cal.Scale, &cal
			note = "calibrated: " + cal.Note
			fmt.Fprintf(stderr, "calibration: %s\n", cal.Note)
		}
		lnote, err := decideLimit(&cfg, traces, cfg.MemScale)
		if err != nil {
			return err
		}
		if lnote != "" {
			note += "; " + lnote
			if env.Calibration != nil {
				env.Calibration.ParentLimitAuto = true
			}
		}
	}
	plan, err := contention.Compute(cfg, traces, cfg.MemScale, note, contention.DefaultEstimate)
	if err != nil {
		return err
	}
	fmt.Fprint(stderr, plan.Text())
	if (plan.Weak || !plan.Feasible) && !cfg.AllowWeak {
		return fmt.Errorf("refusing to run: %s (see the plan above; --allow-weak runs it anyway)", strings.Join(plan.Problems, "; "))
	}
	if dir == "" {
		dir = filepath.Join(f.out, time.Now().UTC().Format("20060102-150405")+"-"+cfg.Profile)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := results.WriteJSON(filepath.Join(dir, "config.json"), cfg); err != nil {
			return err
		}
		if err := results.WriteJSON(filepath.Join(dir, "plan.json"), plan); err != nil {
			return err
		}
	}
	fmt.Fprintf(stderr, "results: %s\n", dir)

	rt, err := crt.New(ctx, cfg.Runtime)
	if err != nil {
		return err
	}
	defer rt.Close()
	env.Runtime = rt.Name()
	env.RuntimeVersions, _ = rt.Versions(ctx)
	var enf run.Enforcer
	for _, p := range cfg.Points() {
		if !config.IsBPF(p.Arm) || enf != nil {
			continue
		}
		plugin := f.plugin
		if plugin == "" {
			plugin = filepath.Join(bindir, "agentcg-nri")
		}
		e, err := run.NewBPFEnforcer(run.BPFEnforcer{Runtime: cfg.Runtime, PluginPath: plugin, ConfigPath: f.hookConfig, Base: cfg.Policy, Log: log})
		if err != nil {
			return fmt.Errorf("the BPF arms need the policy: %w (drop BPF and BPFSeed from the arms to run without it)", err)
		}
		defer e.Close()
		enf = e
		env.PolicyMode = "bpf"
	}
	o := &run.Orchestrator{Cfg: cfg, Dir: dir, Runtime: rt, Enforcer: enf, Log: log, Tree: tree(cfg), OutRoot: f.outRoot,
		Estimate: contention.DefaultEstimate}
	if cfg.Swap.Device == "zram" {
		o.Zram = &run.Zram{}
	}
	mode := f.progress
	if f.quiet {
		mode = "none"
	}
	if mode == "auto" {
		mode = "lines"
		if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			mode = "bar"
		}
	}
	switch mode {
	case "bar", "lines":
		o.Progress = &run.Progress{W: stderr, Mode: mode}
	case "none":
	default:
		return fmt.Errorf("--progress %q: allowed values are auto, bar, lines, none", f.progress)
	}
	if !replayHasStartFile(ctx, bindir) {
		return errors.New("the agentcg-replay beside this binary has no --start-file: rebuild it and the image (make build image)")
	}
	if _, err := o.Prepare(); err != nil {
		return err
	}
	// Written now as well as after the runs: a run killed hard (qemu
	// timeout, power loss) must still be resumable, and --resume reads it.
	if err := results.WriteJSON(filepath.Join(dir, "env.json"), env); err != nil {
		return err
	}
	execErr := o.Execute(ctx)
	if o.SwapDevice != nil && env.Swap == nil {
		env.Swap = o.SwapDevice
	}
	if err := results.WriteJSON(filepath.Join(dir, "env.json"), env); err != nil {
		return err
	}
	if execErr != nil {
		if errors.Is(execErr, context.Canceled) {
			return fmt.Errorf("interrupted: containers, cgroups, pins and the swap device removed, finished runs kept; continue with --resume %s", dir)
		}
		return execErr
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

// replayHasStartFile asks the replay binary built beside this one (the one
// baked into the image) whether it supports the --start-file barrier.
func replayHasStartFile(ctx context.Context, bindir string) bool {
	out, _ := exec.CommandContext(ctx, filepath.Join(bindir, "agentcg-replay"), "run", "--help").CombinedOutput()
	return strings.Contains(string(out), "--start-file")
}

func resumeConfig(dir string) (config.Config, error) {
	var cfg config.Config
	if err := results.ReadJSON(filepath.Join(dir, "config.json"), &cfg); err != nil {
		return cfg, fmt.Errorf("resume %s: %w", dir, err)
	}
	return cfg, cfg.Validate()
}

func collectEnv(cfg config.Config) results.Env {
	e := results.Env{AgentcgVersion: version.Version, CPUs: runtime.NumCPU(),
		StartedUnix: float64(time.Now().UnixNano()) / 1e9, Profile: cfg.Profile, PolicyMode: "none", Probe: "ok",
		HostLoadAvg: os.Getenv("AGENTCG_HOST_LOADAVG")}
	for _, r := range cfg.RegimeList() {
		e.Reclaim = append(e.Reclaim, r.Reclaim)
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		e.LoadAvg = strings.Join(f[:min(3, len(f))], " ")
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		e.KernelRelease = unix.ByteSliceToString(u.Release[:])
	}
	if err := bpf.Probe(); err != nil {
		e.Probe = err.Error()
	}
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
