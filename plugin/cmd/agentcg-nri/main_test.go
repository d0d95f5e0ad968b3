package main

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/agentcg/agentcg/enroll"
	"github.com/agentcg/agentcg/enroll/enrolltest"
	"github.com/agentcg/agentcg/policy"
	"github.com/agentcg/agentcg/policy/mode"
)

// preloadFails is a BPF policy whose eager load fails (bpffs missing,
// lockdown, no CAP_BPF).
type preloadFails struct{ *enrolltest.Policy }

func (preloadFails) Preload(context.Context) error { return errors.New("pin maps: bpffs not mounted") }

// fellBack is what mode.Open returns in auto mode when it fell back itself:
// the native policy carrying the reason.
type fellBack struct{ *enrolltest.Policy }

func (fellBack) FallbackReason() error {
	return &mode.FallbackError{Err: errors.New("pin maps: bpffs not mounted")}
}

func TestOpenPolicyFallsBackOnAnyBPFFailure(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	tests := []struct {
		name    string
		mode    policy.Mode
		bpf     func() (policy.Policy, error)
		want    policy.Mode
		wantErr string
		wantWhy string
	}{
		{"auto, load fails", policy.ModeAuto, func() (policy.Policy, error) { return nil, errors.New("load: operation not permitted") }, policy.ModeNative, "", "operation not permitted"},
		{"auto, preload fails", policy.ModeAuto, func() (policy.Policy, error) { return preloadFails{enrolltest.New(policy.ModeBPF)}, nil }, policy.ModeNative, "", "bpffs not mounted"},
		{"auto, open fell back itself", policy.ModeAuto, func() (policy.Policy, error) { return fellBack{enrolltest.New(policy.ModeNative)}, nil }, policy.ModeNative, "", "bpffs not mounted"},
		{"auto, works", policy.ModeAuto, func() (policy.Policy, error) { return enrolltest.New(policy.ModeBPF), nil }, policy.ModeBPF, "", ""},
		{"bpf, preload fails", policy.ModeBPF, func() (policy.Policy, error) { return preloadFails{enrolltest.New(policy.ModeBPF)}, nil }, "", "bpffs not mounted", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			open := func(_ context.Context, o mode.Options) (policy.Policy, error) {
				if o.Mode == policy.ModeNative {
					return enrolltest.New(policy.ModeNative), nil
				}
				return tc.bpf()
			}
			cfg := enroll.DefaultConfig()
			cfg.Mode = tc.mode
			pol, why, err := openPolicy(context.Background(), cfg, log, open)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || pol.Mode() != tc.want {
				t.Fatalf("openPolicy = %v, %v", pol, err)
			}
			if (tc.wantWhy == "") != (why == nil) || why != nil && !strings.Contains(why.Error(), tc.wantWhy) {
				t.Fatalf("why = %v, want %q", why, tc.wantWhy)
			}
		})
	}
}
