// Command agentcg-nri is the agentcg NRI plugin. It runs as an external
// daemon on containerd's NRI socket or as a pre-installed NN-agentcg plugin,
// loads the policy once, and attaches it to annotated containers. When the
// runtime drops it, it reconnects by itself (a pre-installed instance then
// reconnects through the NRI socket as an external plugin).
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/agentcg/agentcg/enroll"
	"github.com/agentcg/agentcg/internal/dirlock"
	"github.com/agentcg/agentcg/internal/version"
	"github.com/agentcg/agentcg/plugin"
	"github.com/agentcg/agentcg/policy"
	"github.com/agentcg/agentcg/policy/mode"
	"github.com/containerd/nri/pkg/api"
	"github.com/spf13/cobra"
)

type options struct {
	config, socket, name, idx, metrics string
	logFormat, logOutput               string
	debug                              bool
	faultBlockAttach                   string
}

func main() {
	var o options
	root := &cobra.Command{
		Use:   "agentcg-nri",
		Short: "agentcg NRI plugin: attach the memory priority policy to annotated containerd (CRI) containers",
		Long: `agentcg-nri attaches the agentcg memory policy to containers annotated
agentcg.priority: high|low (or agentcg.priority/container.<name>, agentcg.priority/pod).

Run it as a daemon on containerd's NRI socket (a systemd unit or a DaemonSet),
or pre-install it as /opt/nri/plugins/NN-agentcg. See plugin/README.md.`,
		Version:       version.Version,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE:          func(cmd *cobra.Command, _ []string) error { return run(cmd.Context(), o) },
	}
	f := root.Flags()
	f.StringVar(&o.config, "config", os.Getenv("AGENTCG_CONFIG"), "config file, YAML or JSON (default $AGENTCG_CONFIG, else "+enroll.DefaultConfigPath+" if present)")
	f.StringVar(&o.socket, "socket", "", "NRI socket (default "+api.DefaultSocketPath+"; also used to reconnect when pre-installed)")
	f.StringVar(&o.name, "name", "agentcg", "plugin name (external mode)")
	f.StringVar(&o.idx, "idx", "50", "plugin index, two digits (external mode)")
	f.StringVar(&o.metrics, "metrics", "", "listen address for /metrics, /healthz, /readyz, e.g. 127.0.0.1:9464 (overrides metrics_addr)")
	f.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&o.logOutput, "log-output", outAuto, "stderr, journald or a file path; auto is stderr, or when pre-installed journald if running, else "+defaultLogFile)
	f.BoolVar(&o.debug, "debug", false, "debug logging")
	f.StringVar(&o.faultBlockAttach, "fault-block-attach", "", "TEST ONLY: every attach waits while this file exists")
	f.MarkHidden("fault-block-attach")

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := root.ExecuteContext(ctx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "agentcg-nri:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	level := slog.LevelInfo
	if o.debug {
		level = slog.LevelDebug
	}
	log, closeLog, err := newLogger(o.logFormat, o.logOutput, level)
	if err != nil {
		return err
	}
	defer closeLog()
	log = log.With("component", "agentcg-nri")
	if err := serve(ctx, o, log); err != nil {
		log.Error("exiting", "err", err)
		return err
	}
	return nil
}

func serve(ctx context.Context, o options, log *slog.Logger) error {
	cfg, err := enroll.LoadConfig(o.config)
	if err != nil {
		return err
	}
	if o.metrics != "" {
		cfg.MetricsAddr = o.metrics
	}

	// One plugin per state dir: a pre-installed instance that reconnected
	// externally must not run beside the one containerd starts next.
	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	lockCtx, cancelLock := context.WithTimeout(ctx, 5*time.Second)
	unlock, err := dirlock.LockFile(lockCtx, plugin.LockPath(cfg.StateDir))
	cancelLock()
	if err != nil && !errors.Is(err, dirlock.ErrTimeout) {
		return err
	}
	if err != nil {
		if st, serr := plugin.ReadStatus(plugin.StatusPath(cfg.StateDir)); serr == nil {
			return fmt.Errorf("another agentcg-nri (pid %d) serves state dir %s: %w", st.Pid, cfg.StateDir, err)
		}
		return fmt.Errorf("another agentcg-nri serves state dir %s: %w", cfg.StateDir, err)
	}
	defer unlock()

	pol, probeErr, err := openPolicy(ctx, cfg, log, mode.Open)
	if err != nil {
		return err
	}
	defer pol.Close()
	plugin.AnnounceMode(log, cfg.Mode, pol, probeErr)

	opts := []enroll.Option{enroll.WithOpener(func(ctx context.Context, m policy.Mode) (policy.Policy, error) {
		return mode.Open(ctx, mode.Options{Mode: m, Config: cfg.Policy, Logger: log.With("component", "policy", "mode", string(m))})
	})}
	if o.faultBlockAttach != "" {
		log.Warn("TEST ONLY: attaches wait while a file exists", "file", o.faultBlockAttach)
		opts = append(opts, enroll.WithAttachHook(blockWhileExists(o.faultBlockAttach, log)))
	}
	e, err := enroll.New(cfg, pol, log, opts...)
	if err != nil {
		return err
	}
	defer e.Close()
	status := plugin.NewStatusFile(plugin.StatusPath(cfg.StateDir), version.Version, string(pol.Mode()), log)
	m := plugin.NewMetrics(pol, plugin.BuildInfo{Version: version.Version})
	p := plugin.New(e, plugin.Options{Log: log, Metrics: m, Status: status})

	if cfg.MetricsAddr != "" {
		srv := plugin.NewServer(cfg.MetricsAddr, m.Handler(func() bool { c, _ := p.Connected(); return c }))
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server", "addr", cfg.MetricsAddr, "err", err)
			}
		}()
		defer srv.Close()
		log.Info("serving metrics", "addr", cfg.MetricsAddr, "paths", "/metrics /healthz /readyz")
	}

	log.Info("starting", "version", version.Version, "mode", string(pol.Mode()), "cgroup_root", cfg.CgroupRoot, "state_dir", cfg.StateDir,
		"annotation", cfg.AnnotationKey, "fail_mode", string(cfg.FailMode), "preinstalled", plugin.Preinstalled())
	err = p.Run(ctx, plugin.RunOptions{Name: o.name, Idx: o.idx, Socket: o.socket, StubLogger: nriLogger{log.With("source", "nri-stub")}})

	// Let queued detaches finish (bounded) so a clean stop leaves no pins.
	drain, cancelDrain := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelDrain()
	if werr := p.Wait(drain); werr != nil {
		log.Warn("exiting with work queued", "err", werr)
	}
	status.Remove()
	return err
}

// openPolicy loads the policy once (the request path only attaches). With
// mode auto, any BPF failure, at open or at the eager load, falls back to
// the native policy and the reason is returned for AnnounceMode.
func openPolicy(ctx context.Context, cfg enroll.Config, log *slog.Logger, open func(context.Context, mode.Options) (policy.Policy, error)) (policy.Policy, error, error) {
	plog := log.With("component", "policy")
	pol, err := open(ctx, mode.Options{Mode: cfg.Mode, Config: cfg.Policy, Logger: plog})
	var why error
	if err == nil {
		// The BPF policy loads its objects lazily; load them now so the
		// first StartContainer pays only for the attach.
		if pre, ok := pol.(interface{ Preload(context.Context) error }); ok {
			if err = pre.Preload(ctx); err != nil {
				pol.Close()
				err = fmt.Errorf("preload policy: %w", err)
			}
		}
	}
	if err != nil {
		if cfg.Mode != policy.ModeAuto {
			return nil, nil, fmt.Errorf("open policy (mode %s): %w", cfg.Mode, err)
		}
		why = err
		pol, err = open(ctx, mode.Options{Mode: policy.ModeNative, Config: cfg.Policy, Logger: plog})
		if err != nil {
			return nil, nil, fmt.Errorf("open the native fallback after the BPF policy failed (%v): %w", why, err)
		}
	}
	if why == nil && cfg.Mode == policy.ModeAuto && pol.Mode() == policy.ModeNative {
		// mode.Open fell back itself: its reason names the real cause
		// (missing memcg_bpf_ops, no bpffs, no CAP_BPF, a verifier error).
		if fe := mode.FallbackReason(pol); fe != nil {
			why = fe.Err
		} else {
			why = errors.New("mode auto chose the native policy")
		}
	}
	return pol, why, nil
}

// blockWhileExists is the --fault-block-attach test hook: an attach waits
// while file exists (or until its context ends).
func blockWhileExists(file string, log *slog.Logger) enroll.AttachHook {
	return func(ctx context.Context, id, dir string) error {
		logged := false
		for {
			if _, err := os.Stat(file); err != nil {
				return nil
			}
			if !logged {
				log.Warn("TEST ONLY: attach blocked", "container", id, "cgroup", dir, "file", file)
				logged = true
			}
			t := time.NewTimer(50 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("fault-block-attach: %w", ctx.Err())
			case <-t.C:
			}
		}
	}
}
