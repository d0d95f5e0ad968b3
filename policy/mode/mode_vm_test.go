//go:build vmtest

package mode

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentcg/agentcg/bpf"
	"github.com/agentcg/agentcg/internal/vmtest"
	"github.com/agentcg/agentcg/policy"
)

// On the patched kernel auto opens BPF with its objects loaded; with the
// pin dir outside bpffs (bpffs "missing") the load fails after a passing
// probe and auto falls back to native, saying so.
func TestAutoInGuest(t *testing.T) {
	vmtest.Require(t)
	ctx := context.Background()
	pinDir := filepath.Join("/sys/fs/bpf", "agentcg-mode-"+filepath.Base(t.TempDir()))
	opts := Options{Mode: policy.ModeAuto, Config: policy.Config{PinDir: pinDir}, BPFRecordDir: t.TempDir(), NativeRecordDir: t.TempDir()}
	p, err := Open(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if p.Mode() != policy.ModeBPF || FallbackReason(p) != nil {
		t.Fatalf("auto on the patched kernel: mode %s, reason %v", p.Mode(), FallbackReason(p))
	}
	if bp, ok := p.(*bpf.Policy); !ok || bp.Loads() != 1 {
		t.Errorf("auto did not load the objects at Open: %T", p)
	}
	p.(*bpf.Policy).DetachAll(ctx)
	p.Close()
	os.Remove(pinDir)

	opts.Config.PinDir = filepath.Join(t.TempDir(), "not-bpffs")
	p, err = Open(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	fe := FallbackReason(p)
	t.Logf("pin dir on tmpfs: mode %s, reason %v", p.Mode(), fe)
	if p.Mode() != policy.ModeNative || fe == nil || !strings.Contains(fe.Error(), "bpf filesystem") {
		t.Errorf("want native with a reason naming the bpf filesystem, got %s, %v", p.Mode(), fe)
	}
}
