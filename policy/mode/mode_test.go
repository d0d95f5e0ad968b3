package mode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/agentcg/agentcg/bpf"
	"github.com/agentcg/agentcg/policy"
	"golang.org/x/sys/unix"
)

func TestOpen(t *testing.T) {
	missing := func() error { return &bpf.MissingFeatureError{Err: errors.New("type not found")} }
	for _, tc := range []struct {
		name    string
		mode    policy.Mode
		probe   func() error
		want    policy.Mode
		wantErr string
	}{
		{"auto without the feature picks native", policy.ModeAuto, missing, policy.ModeNative, ""},
		{"empty mode is auto", "", missing, policy.ModeNative, ""},
		{"explicit native never probes", policy.ModeNative, func() error { t.Fatal("probed"); return nil }, policy.ModeNative, ""},
		{"bpf without the feature fails naming it", policy.ModeBPF, missing, "", "memcg_bpf_ops"},
		{"unknown mode", "fast", missing, "", "allowed values"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Open(context.Background(), Options{Mode: tc.mode, Probe: tc.probe, NativeRecordDir: t.TempDir()})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if p.Mode() != tc.want {
				t.Errorf("mode = %s, want %s", p.Mode(), tc.want)
			}
		})
	}
}

// Auto falls back on any failure to get the BPF policy ready, not only on
// the feature probe, and says why: in a warning and through FallbackReason.
func TestAutoFallsBackOnLoadFailure(t *testing.T) {
	cause := fmt.Errorf("load low ops: %w", unix.EPERM) // e.g. lockdown, or no CAP_BPF
	for _, tc := range []struct {
		name  string
		opts  Options
		check func(t *testing.T, fe *FallbackError)
	}{
		{"injected load failure", Options{OpenBPF: func(context.Context, Options, bool) (policy.Policy, error) { return nil, cause }},
			func(t *testing.T, fe *FallbackError) {
				if !errors.Is(fe, unix.EPERM) {
					t.Errorf("reason %v does not wrap EPERM", fe)
				}
			}},
		// The probe passes, then the real loader fails: the host kernel has
		// no memcg_bpf_ops (or the process no CAP_BPF) and the pin dir is
		// not bpffs.
		{"real load failure after a passing probe", Options{Probe: func() error { return nil }, Config: policy.Config{PinDir: t.TempDir()}},
			func(t *testing.T, fe *FallbackError) {
				if bpf.IsMissingFeature(fe) {
					t.Errorf("reason %v is the probe's, want a load error", fe)
				}
			}},
		{"missing feature", Options{Probe: func() error { return &bpf.MissingFeatureError{Err: errors.New("type not found")} }},
			func(t *testing.T, fe *FallbackError) {
				if !bpf.IsMissingFeature(fe) {
					t.Errorf("reason %v is not a MissingFeatureError", fe)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs strings.Builder
			tc.opts.Mode = policy.ModeAuto
			tc.opts.NativeRecordDir = t.TempDir()
			tc.opts.BPFRecordDir = t.TempDir()
			tc.opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			p, err := Open(context.Background(), tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if p.Mode() != policy.ModeNative {
				t.Fatalf("mode %s, want native", p.Mode())
			}
			fe := FallbackReason(p)
			if fe == nil {
				t.Fatal("FallbackReason is nil for an auto fallback")
			}
			t.Logf("reason: %v", fe)
			tc.check(t, fe)
			if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "native fallback") {
				t.Errorf("no warning naming the fallback: %q", logs.String())
			}
		})
	}
	// Explicit bpf does not fall back; explicit native has no reason.
	if _, err := Open(context.Background(), Options{Mode: policy.ModeBPF, OpenBPF: func(context.Context, Options, bool) (policy.Policy, error) { return nil, cause }}); !errors.Is(err, unix.EPERM) {
		t.Errorf("mode bpf with a load failure: %v, want the error", err)
	}
	p, err := Open(context.Background(), Options{Mode: policy.ModeNative, NativeRecordDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if fe := FallbackReason(p); fe != nil {
		t.Errorf("native asked for has a fallback reason %v", fe)
	}
}
