//go:build vmtest

package native

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/agentcg/agentcg/cgroup"
	"github.com/agentcg/agentcg/internal/vmtest"
	"github.com/agentcg/agentcg/policy"
)

// TestNativeSetsAndRestores on real cgroup files.
func TestNativeSetsAndRestores(t *testing.T) {
	vmtest.Require(t)
	ctx := context.Background()
	root := "/sys/fs/cgroup"
	if err := cgroup.Write(root, "cgroup.subtree_control", "+memory"); err != nil {
		t.Fatal(err)
	}
	parent := filepath.Join(root, "agentcg-native")
	os.Mkdir(parent, 0o755)
	defer os.Remove(parent)
	cgroup.Write(parent, "cgroup.subtree_control", "+memory")
	h, l := filepath.Join(parent, "high"), filepath.Join(parent, "low")
	for _, d := range []string{h, l} {
		os.Mkdir(d, 0o755)
		defer os.Remove(d)
	}
	cgroup.Write(h, "memory.low", "4096")
	p, err := New(Options{Config: policy.Config{NativeLowBytes: 64 << 20, NativeHighBytes: 32 << 20}, RecordDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		dir, file string
		prio      policy.Priority
		set, prev int64
	}{
		{h, "memory.low", policy.High, 64 << 20, 4096},
		{l, "memory.high", policy.Low, 32 << 20, cgroup.Max},
	} {
		if _, err := p.Attach(ctx, tc.dir, tc.prio); err != nil {
			t.Fatal(err)
		}
		if v, _ := cgroup.ReadBytes(tc.dir, tc.file); v != tc.set {
			t.Errorf("%s %s = %d after attach, want %d", tc.dir, tc.file, v, tc.set)
		}
	}
	if err := p.DetachAll(ctx); err != nil {
		t.Fatal(err)
	}
	if v, _ := cgroup.ReadBytes(h, "memory.low"); v != 4096 {
		t.Errorf("memory.low restored to %d, want 4096", v)
	}
	if v, _ := cgroup.ReadBytes(l, "memory.high"); v != cgroup.Max {
		t.Errorf("memory.high restored to %d, want max", v)
	}
}
