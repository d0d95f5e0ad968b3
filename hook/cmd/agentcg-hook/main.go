// Command agentcg-hook is the agentcg OCI hook: "createRuntime" attaches
// the priority named by the container's annotation, "poststop" removes it.
// It reads the runtime-spec state on stdin.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/agentcg/agentcg/enroll"
	"github.com/agentcg/agentcg/hook"
	"github.com/agentcg/agentcg/policy"
	"github.com/agentcg/agentcg/policy/mode"
)

func main() {
	fs := flag.NewFlagSet("agentcg-hook", flag.ContinueOnError)
	cfgPath := fs.String("config", os.Getenv("AGENTCG_CONFIG"), "config file (YAML or JSON; default "+enroll.DefaultConfigPath+" if present)")
	timeout := fs.Duration("timeout", envDuration("AGENTCG_HOOK_TIMEOUT", 0), "hard limit for one invocation (env AGENTCG_HOOK_TIMEOUT; default: hook_timeout from the config, else 5s)")
	if err := fs.Parse(os.Args[1:]); err != nil || fs.NArg() != 1 {
		fmt.Fprintln(os.Stderr, hook.ErrUsage)
		os.Exit(2)
	}
	stage, err := hook.ParseStage(fs.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "agentcg-hook:", err)
		os.Exit(2)
	}
	cfg, err := enroll.LoadConfig(*cfgPath)
	if err != nil {
		// Without a config we cannot know the fail mode: fail open.
		fmt.Fprintln(os.Stderr, "agentcg-hook: continuing without policy:", err)
		os.Exit(0)
	}
	var out io.Writer = os.Stderr
	if cfg.HookLog != "" {
		if f, err := os.OpenFile(cfg.HookLog, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); err == nil {
			defer f.Close()
			out = io.MultiWriter(os.Stderr, f)
		}
	}
	h := hook.Hook{Config: cfg, Open: open, Timeout: *timeout, Log: slog.New(slog.NewTextHandler(out, nil)).With("component", "agentcg-hook")}
	if err := h.Run(context.Background(), stage, os.Stdin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func open(ctx context.Context, cfg enroll.Config, recorded bool) (policy.Policy, error) {
	// The attach log line names the mode; mode.Open's own fallback notice
	// would repeat on every container.
	opts := mode.Options{Mode: cfg.Mode, Config: cfg.Policy, Logger: slog.New(slog.DiscardHandler)}
	if recorded {
		// An earlier attach already proved the mode works; parsing the
		// kernel's BTF again would cost most of the hook's time budget.
		opts.Probe = func() error { return nil }
	}
	return mode.Open(ctx, opts)
}

func envDuration(key string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(key)); err == nil && d > 0 {
		return d
	}
	return def
}
