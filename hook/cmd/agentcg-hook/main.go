// Command agentcg-hook is the agentcg OCI hook: "createRuntime" attaches
// the priority named by the container's annotation, "poststop" removes it;
// both read the runtime-spec state on stdin. "check-config" validates the
// config at install time and "hooks-d" writes podman/CRI-O hooks.d files
// whose timeouts follow the config.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/agentcg/agentcg/enroll"
	"github.com/agentcg/agentcg/hook"
	"github.com/agentcg/agentcg/internal/version"
	"github.com/agentcg/agentcg/policy"
	"github.com/agentcg/agentcg/policy/mode"
	"github.com/spf13/cobra"
)

func main() {
	// The hook's timeout counts from process start, as near as Go lets us
	// see it.
	started := time.Now()
	os.Exit(run(context.Background(), started, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// refusal is a hook result that must fail the container (exit 1); any
// other error is a usage error (exit 2).
type refusal struct{ error }

func run(ctx context.Context, started time.Time, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRoot(started)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "agentcg-hook:", err)
	if errors.As(err, new(refusal)) {
		return 1
	}
	return 2
}

type flags struct {
	started   time.Time
	config    string
	timeout   time.Duration
	logFormat string
}

func newRoot(started time.Time) *cobra.Command {
	f := &flags{started: started}
	root := &cobra.Command{
		Use:   "agentcg-hook [--config FILE] [--timeout D] createRuntime|poststop < state.json",
		Short: "OCI hook that applies the agentcg.priority annotation's policy to a container's cgroup",
		Long: `agentcg-hook is run by the runtime (runc through agentcg-runc, or podman/CRI-O
through hooks.d) with the OCI state on stdin. createRuntime attaches the
priority the container's annotation asks for; poststop removes it.

A refused or failed attach follows fail_mode: open lets the container run
(logged to hook_log, counted in hook_metrics), closed fails it (exit 1). When
the config is invalid nothing is attached; an annotated container then runs
only if the file explicitly says fail_mode: open, and an unannotated one is
never affected.`,
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return errors.New("no stage: " + hook.ErrUsage.Error())
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&f.config, "config", os.Getenv("AGENTCG_CONFIG"), "config file (YAML or JSON; env AGENTCG_CONFIG; default "+enroll.DefaultConfigPath+" if present)")
	pf.DurationVar(&f.timeout, "timeout", envDuration("AGENTCG_HOOK_TIMEOUT"), "hard limit for one invocation (env AGENTCG_HOOK_TIMEOUT; default: hook_timeout from the config, else 5s)")
	pf.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	root.AddCommand(
		stageCmd(f, hook.CreateRuntime, "Attach the annotated priority to the container's cgroup", "prestart", "attach"),
		stageCmd(f, hook.Poststop, "Remove what createRuntime attached", "detach"),
		checkCmd(f),
		hooksDCmd(f),
		preloadCmd(f),
	)
	return root
}

func stageCmd(f *flags, stage hook.Stage, short string, aliases ...string) *cobra.Command {
	return &cobra.Command{
		Use:     string(stage) + " < state.json",
		Short:   short,
		Aliases: aliases,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			niceErr := hook.SetNice(hook.Nice) // needs CAP_SYS_NICE, which a hook that attaches has
			s := hook.LoadSettings(f.config)
			out := cmd.ErrOrStderr()
			if p := s.Config.HookLog; p != "" {
				lf, err := os.OpenFile(p, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
				if err == nil {
					defer lf.Close()
					out = io.MultiWriter(out, lf)
				} else {
					fmt.Fprintf(cmd.ErrOrStderr(), "agentcg-hook: hook_log: %v\n", err)
				}
			}
			log, err := hook.NewLogger(f.logFormat, out, slog.LevelInfo)
			if err != nil {
				return err
			}
			log = log.With("component", "agentcg-hook")
			if niceErr != nil {
				log.Warn("running at the default priority", "err", niceErr)
			}
			if s.Err != nil {
				log.Error("config unusable: nothing will be attached (run agentcg-hook check-config)", "config", s.Path, "fail_mode_known", s.FailModeKnown, "err", s.Err)
			}
			h := hook.Hook{Settings: s, Open: opener(log), Timeout: f.timeout, Start: f.started, Log: log, Metrics: hook.MetricsPath(s.Config)}
			if err := h.Run(cmd.Context(), stage, cmd.InOrStdin()); err != nil {
				return refusal{err}
			}
			return nil
		},
	}
}

// opener opens the configured policy with the hook's logger, so that the
// loader's messages (the auto fallback, a failed load) reach hook_log.
func opener(log *slog.Logger) hook.OpenFunc {
	return func(ctx context.Context, cfg enroll.Config, recorded bool) (policy.Policy, error) {
		opts := mode.Options{Mode: cfg.Mode, Config: cfg.Policy, Logger: log}
		if recorded {
			// An earlier attach already proved the mode works; parsing
			// the kernel's BTF again would cost most of the time budget.
			opts.Probe = func() error { return nil }
		}
		return mode.Open(ctx, opts)
	}
}

// preloader is a policy whose objects can be made ready ahead of use (bpf).
type preloader interface {
	Preload(ctx context.Context) error
}

func preloadCmd(f *flags) *cobra.Command {
	return &cobra.Command{
		Use:   "preload",
		Short: "Load and pin the BPF objects now (run at boot), so that no container's hook pays the verifier",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s := hook.LoadSettings(f.config)
			if s.Err != nil {
				return refusal{s.Err}
			}
			log, err := hook.NewLogger(f.logFormat, cmd.ErrOrStderr(), slog.LevelInfo)
			if err != nil {
				return err
			}
			pol, err := opener(log)(cmd.Context(), s.Config, false)
			if err != nil {
				return refusal{err}
			}
			defer pol.Close()
			p, ok := pol.(preloader)
			if !ok {
				fmt.Fprintf(cmd.OutOrStdout(), "mode %s: nothing to load\n", pol.Mode())
				return nil
			}
			t0 := time.Now()
			if err := p.Preload(cmd.Context()); err != nil {
				return refusal{fmt.Errorf("preload (mode %s, pin dir %s): %w", pol.Mode(), s.Config.Policy.PinDir, err)}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "mode %s: objects ready under %s in %s\n", pol.Mode(), s.Config.Policy.PinDir, time.Since(t0).Round(time.Millisecond))
			return nil
		},
	}
}

func checkCmd(f *flags) *cobra.Command {
	return &cobra.Command{
		Use:   "check-config",
		Short: "Validate the config as every hook run will read it; exit 1 naming the field if it is wrong",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := f.config
			if path == "" {
				path = enroll.DefaultConfigPath
			}
			cfg, err := hook.CheckConfig(path)
			if err != nil {
				return refusal{err}
			}
			t := hook.EffectiveTimeout(cfg)
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\nannotation_key: %s\nfail_mode: %s\nmode: %s\nhook_timeout: %s (runtime timeout %d s)\nhook_log: %s\nhook_metrics: %s\nstate_dir: %s\n",
				path, cfg.AnnotationKey, cfg.FailMode, cfg.Mode, t, hook.RuntimeTimeoutSeconds(t), orNone(cfg.HookLog), hook.MetricsPath(cfg), cfg.StateDir)
			return nil
		},
	}
}

func hooksDCmd(f *flags) *cobra.Command {
	var out, hookPath string
	c := &cobra.Command{
		Use:   "hooks-d --out DIR",
		Short: "Write podman/CRI-O hooks.d files for this config (runtime timeout derived from hook_timeout)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := enroll.DefaultConfig()
			if f.config != "" || exists(enroll.DefaultConfigPath) {
				c, err := hook.CheckConfig(f.config)
				if err != nil {
					return refusal{err}
				}
				cfg = c
			}
			if hookPath == "" {
				self, err := os.Executable()
				if err != nil {
					return err
				}
				if hookPath, err = filepath.EvalSymlinks(self); err != nil {
					return err
				}
			}
			cfgPath := f.config
			if cfgPath != "" {
				// The runtime runs hooks from the bundle, not from here.
				abs, err := filepath.Abs(cfgPath)
				if err != nil {
					return err
				}
				cfgPath = abs
			}
			paths, err := hook.WriteHooksD(out, hookPath, cfgPath, cfg)
			if err != nil {
				return refusal{err}
			}
			for _, p := range paths {
				fmt.Fprintln(cmd.OutOrStdout(), p)
			}
			return nil
		},
	}
	c.Flags().StringVar(&out, "out", "", "folder to write into (for example /etc/containers/oci/hooks.d)")
	c.Flags().StringVar(&hookPath, "hook-path", "", "absolute path of agentcg-hook in the files (default: this executable)")
	c.MarkFlagRequired("out")
	return c
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func orNone(s string) string {
	if s == "" {
		return "(none: stderr only)"
	}
	return s
}

func envDuration(key string) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(key)); err == nil && d > 0 {
		return d
	}
	return 0
}
