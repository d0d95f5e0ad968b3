package bpf

import (
	"strings"
	"testing"

	"github.com/agentcg/agentcg/policy"
)

func TestDelayMs(t *testing.T) {
	def := policy.DefaultConfig() // gate 80%, 10..200 ms, window 2000 ms
	always := def
	always.HighActiveWindowMs = 0
	full := def
	full.GatePct = 100
	ungated := def
	ungated.GatePct = 0
	seed := policy.Config{GatePct: 0, DelayBaseMs: 2000, DelayMaxMs: 2000, HighActiveWindowMs: 0}
	for _, tc := range []struct {
		name   string
		cfg    policy.Config
		pm     uint64
		active bool
		want   uint32
	}{
		{"far below the gate", def, 500, true, 0},
		{"just below the gate", def, 799, true, 0},
		{"at the gate: base", def, 800, true, 10},
		{"halfway: midpoint", def, 900, true, 105},
		{"at the limit: cap", def, 1000, true, 200},
		{"over the limit is capped", def, 1500, true, 200},
		{"HIGH idle closes the gate", def, 1000, false, 0},
		{"window 0: HIGH activity ignored", always, 900, false, 105},
		{"gate 100%: cap at the limit", full, 1000, true, 200},
		{"gate 100%: nothing below", full, 999, true, 0},
		{"gate 0: base with no limited ancestor", ungated, 0, true, 10},
		{"gate 0: linear from 0", ungated, 500, true, 105},
		{"gate 0: HIGH idle still closes", ungated, 500, false, 0},
		{"BPF-Seed: 2000 ms unlimited", seed, 0, false, 2000},
		{"BPF-Seed: 2000 ms at the limit", seed, 1000, false, 2000},
	} {
		if got := DelayMs(tc.cfg, tc.pm, tc.active); got != tc.want {
			t.Errorf("%s: DelayMs(%d‰, active=%v) = %d, want %d", tc.name, tc.pm, tc.active, got, tc.want)
		}
	}
}

func TestLoadRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  policy.Config
		want string
	}{
		{policy.Config{GatePct: 101}, "gate_pct"},
		{policy.Config{DelayMaxMs: 3000}, "2000"},
		{policy.Config{DelayBaseMs: 300, DelayMaxMs: 200}, "exceeds"},
	} {
		_, err := Load(Options{Config: tc.cfg, RecordDir: t.TempDir()})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Load(%+v) = %v, want error containing %q", tc.cfg, err, tc.want)
		}
	}
}

func TestRecordDirFor(t *testing.T) {
	for pin, want := range map[string]string{
		policy.DefaultPinDir:       DefaultRecordDir,
		policy.DefaultPinDir + "/": DefaultRecordDir,
		"/sys/fs/bpf/agentcg-cli":  DefaultRecordDir + "-sys_fs_bpf_agentcg-cli",
	} {
		if got := RecordDirFor(pin); got != want {
			t.Errorf("RecordDirFor(%q) = %q, want %q", pin, got, want)
		}
	}
}

// A config file's explicit gate_pct: 0 survives WithDefaults (ungated),
// unlike the other zero knobs.
func TestGateZeroIsUngated(t *testing.T) {
	c := policy.DefaultConfig()
	c.GatePct = 0
	if got := c.WithDefaults().GatePct; got != 0 {
		t.Errorf("WithDefaults turned gate_pct 0 into %d", got)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("gate_pct 0 rejected: %v", err)
	}
}
