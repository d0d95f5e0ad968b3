// Command agentcg-nri is the agentcg NRI plugin. It runs as an external
// daemon on containerd's NRI socket or as a pre-installed NN-agentcg plugin,
// loads the policy once, and attaches it to annotated containers.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/agentcg/agentcg/bpf"
	"github.com/agentcg/agentcg/enroll"
	"github.com/agentcg/agentcg/internal/version"
	"github.com/agentcg/agentcg/plugin"
	"github.com/agentcg/agentcg/policy"
	"github.com/agentcg/agentcg/policy/mode"
	"github.com/containerd/nri/pkg/stub"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "agentcg-nri:", err)
		os.Exit(1)
	}
}

func run() error {
	cfgPath := flag.String("config", os.Getenv("AGENTCG_CONFIG"), "config file, YAML or JSON (default "+enroll.DefaultConfigPath+" if present)")
	socket := flag.String("socket", "", "NRI socket (default /var/run/nri/nri.sock; ignored when started pre-installed)")
	name := flag.String("name", "agentcg", "plugin name (external mode)")
	idx := flag.String("idx", "50", "plugin index, two digits (external mode)")
	metrics := flag.String("metrics", "", "Prometheus listen address, e.g. :9464 (overrides metrics_addr)")
	debug := flag.Bool("debug", false, "debug logging")
	flag.Parse()

	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("component", "agentcg-nri")

	cfg, err := enroll.LoadConfig(*cfgPath)
	if err != nil {
		return err
	}
	if *metrics != "" {
		cfg.MetricsAddr = *metrics
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()

	// Load the policy (the BPF object) once; the request path only attaches.
	pol, err := mode.Open(ctx, mode.Options{Mode: cfg.Mode, Config: cfg.Policy, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return fmt.Errorf("open policy (mode %s): %w", cfg.Mode, err)
	}
	defer pol.Close()
	// The BPF policy loads its objects lazily; if it offers an eager load,
	// do it now so the first StartContainer pays only for the attach.
	if pre, ok := pol.(interface{ Preload(context.Context) error }); ok {
		if err := pre.Preload(ctx); err != nil {
			return fmt.Errorf("preload policy: %w", err)
		}
	}
	var probeErr error
	if cfg.Mode == policy.ModeAuto && pol.Mode() == policy.ModeNative {
		probeErr = bpf.Probe()
	}
	plugin.AnnounceMode(log, cfg.Mode, pol, probeErr)

	e, err := enroll.New(cfg, pol, log)
	if err != nil {
		return err
	}
	m := plugin.NewMetrics(pol)
	p := plugin.New(e, log, m)

	if cfg.MetricsAddr != "" {
		srv := &http.Server{Addr: cfg.MetricsAddr, Handler: promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})}
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server", "addr", cfg.MetricsAddr, "err", err)
			}
		}()
		defer srv.Close()
		log.Info("serving metrics", "addr", cfg.MetricsAddr, "path", "/metrics")
	}

	var opts []stub.Option
	if os.Getenv("NRI_PLUGIN_SOCKET") == "" {
		// External daemon: name ourselves. Pre-installed plugins take
		// name and index from NN-name and get a connected socket.
		opts = append(opts, stub.WithPluginName(*name), stub.WithPluginIdx(*idx))
		if *socket != "" {
			opts = append(opts, stub.WithSocketPath(*socket))
		}
	}
	lost := make(chan struct{})
	opts = append(opts, stub.WithOnClose(func() {
		log.Warn("NRI connection closed; exiting so the supervisor restarts us")
		close(lost)
		cancel()
	}))
	s, err := stub.New(p, opts...)
	if err != nil {
		return fmt.Errorf("nri stub: %w", err)
	}
	log.Info("starting", "version", version.Version, "mode", string(pol.Mode()), "cgroup_root", cfg.CgroupRoot, "annotation", cfg.AnnotationKey, "fail_mode", string(cfg.FailMode))
	err = s.Run(ctx)
	select {
	case <-lost:
		return errors.New("lost the NRI connection")
	default:
	}
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("nri stub: %w", err)
	}
	return nil
}
