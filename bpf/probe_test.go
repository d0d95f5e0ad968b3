package bpf

import (
	"strings"
	"testing"

	"github.com/agentcg/agentcg/internal/vmtest"
)

// On the host (no patched kernel) Probe must fail with the typed error
// that names the feature and the series.
func TestProbeOnHost(t *testing.T) {
	if vmtest.InGuest() {
		t.Skip("SKIP: host-only check; the guest kernel has memcg_bpf_ops (TestProbeInGuest)")
	}
	err := Probe()
	if err == nil {
		t.Fatal("Probe() = nil on a host kernel without memcg_bpf_ops")
	}
	if !IsMissingFeature(err) {
		t.Fatalf("Probe() = %T %v, want *MissingFeatureError", err, err)
	}
	for _, want := range []string{"memcg_bpf_ops", "bpf_struct_ops_memcg_bpf_ops", "RFC series"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
}
