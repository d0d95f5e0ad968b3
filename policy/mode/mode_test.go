package mode

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/agentcg/agentcg/bpf"
	"github.com/agentcg/agentcg/policy"
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
