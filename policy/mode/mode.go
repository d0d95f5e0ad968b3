// Package mode owns choosing the enforcement mechanism: it opens the BPF
// policy, the native fallback, or (auto) whichever the kernel supports.
package mode

import (
	"context"
	"errors"
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
	// Probe replaces the BPF policy's kernel check (bpf.Options.Probe);
	// nil keeps bpf's own. Tests inject a failing probe to exercise auto.
	Probe func() error
	// OpenBPF replaces opening the BPF policy (bpf.Load, and for auto
	// Preload); tests inject load failures through it. nil: the real one.
	OpenBPF func(ctx context.Context, opts Options, preload bool) (policy.Policy, error)
	// BPFRecordDir and NativeRecordDir override the record folders.
	BPFRecordDir    string
	NativeRecordDir string
	Logger          *slog.Logger
}

// FallbackError says why mode auto chose the native policy: the kernel
// lacks memcg_bpf_ops (bpf.IsMissingFeature), or loading failed (bpffs not
// mounted, lockdown, no CAP_BPF, a verifier error, ...).
type FallbackError struct {
	Err error
}

func (e *FallbackError) Error() string {
	return "BPF policy unavailable, using the native fallback: " + e.Err.Error()
}

func (e *FallbackError) Unwrap() error { return e.Err }

// FallbackReason returns why mode auto fell back, for a policy Open
// returned; nil when the policy is not an auto fallback (bpf, or native
// asked for).
func FallbackReason(p policy.Policy) *FallbackError {
	f, ok := p.(interface{ FallbackReason() error })
	if !ok {
		return nil
	}
	var fe *FallbackError
	if errors.As(f.FallbackReason(), &fe) {
		return fe
	}
	return nil
}

// Open returns the policy for opts.Mode.
//   - auto: the BPF policy with its objects ready (bpf.Policy.Preload, which
//     reopens pinned ones or loads them), so that any failure to load, not
//     only a kernel without memcg_bpf_ops, makes it return the native policy
//     instead. It logs the reason at warning level and keeps it for
//     FallbackReason.
//   - bpf: the BPF policy; a kernel without the feature is an error naming
//     memcg_bpf_ops. It loads lazily (status and detach load nothing).
//   - native: the native policy.
func Open(ctx context.Context, opts Options) (policy.Policy, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.OpenBPF == nil {
		opts.OpenBPF = openBPF
	}
	m := opts.Mode
	if m == "" {
		m = policy.ModeAuto
	}
	switch m {
	case policy.ModeAuto:
		p, err := opts.OpenBPF(ctx, opts, true)
		if err != nil {
			fe := &FallbackError{Err: err}
			opts.Logger.Warn("BPF policy unavailable, using the native fallback", "reason", err)
			return openNative(opts, fe)
		}
		return p, nil
	case policy.ModeBPF:
		p, err := opts.OpenBPF(ctx, opts, false)
		if err != nil {
			return nil, fmt.Errorf("mode bpf: %w", err)
		}
		return p, nil
	case policy.ModeNative:
		return openNative(opts, nil)
	}
	_, err := policy.ParseMode(string(m))
	return nil, err
}

func openBPF(ctx context.Context, opts Options, preload bool) (policy.Policy, error) {
	p, err := bpf.Load(bpf.Options{Config: opts.Config, RecordDir: opts.BPFRecordDir, Logger: opts.Logger, Probe: opts.Probe})
	if err != nil {
		return nil, err
	}
	if preload {
		if err := p.Preload(ctx); err != nil {
			p.Close()
			return nil, err
		}
	}
	return p, nil
}

func openNative(opts Options, fallback error) (policy.Policy, error) {
	return native.New(native.Options{Config: opts.Config, RecordDir: opts.NativeRecordDir, Fallback: fallback, Logger: opts.Logger})
}
