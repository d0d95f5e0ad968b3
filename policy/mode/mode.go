// Package mode owns choosing the enforcement mechanism: it opens the BPF
// policy, the native fallback, or (auto) whichever the kernel supports.
package mode

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/agentcg/agentcg/bpf"
	"github.com/agentcg/agentcg/policy"
	"github.com/agentcg/agentcg/policy/native"
)

// Options select and configure a policy.
type Options struct {
	Mode   policy.Mode   // bpf, native or auto (empty means auto)
	Config policy.Config // zero fields take defaults
	// Probe reports whether the BPF policy can run; nil means bpf.Probe.
	// Tests inject a failing probe to exercise auto.
	Probe func() error
	// BPFRecordDir and NativeRecordDir override the record folders.
	BPFRecordDir    string
	NativeRecordDir string
	Logger          *slog.Logger
}

// Open returns the policy for opts.Mode. With auto it returns the BPF
// policy when the probe passes and the native one otherwise (logging why);
// with bpf a failed probe is an error naming memcg_bpf_ops.
func Open(ctx context.Context, opts Options) (policy.Policy, error) {
	if opts.Probe == nil {
		opts.Probe = bpf.Probe
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	m := opts.Mode
	if m == "" {
		m = policy.ModeAuto
	}
	switch m {
	case policy.ModeAuto:
		if err := opts.Probe(); err != nil {
			opts.Logger.Info("BPF policy unavailable, using the native fallback", "err", err)
			return openNative(opts)
		}
		return openBPF(opts)
	case policy.ModeBPF:
		if err := opts.Probe(); err != nil {
			return nil, fmt.Errorf("mode bpf: %w", err)
		}
		return openBPF(opts)
	case policy.ModeNative:
		return openNative(opts)
	}
	_, err := policy.ParseMode(string(m))
	return nil, err
}

func openBPF(opts Options) (policy.Policy, error) {
	return bpf.Load(bpf.Options{Config: opts.Config, RecordDir: opts.BPFRecordDir, Logger: opts.Logger})
}

func openNative(opts Options) (policy.Policy, error) {
	return native.New(native.Options{Config: opts.Config, RecordDir: opts.NativeRecordDir})
}
