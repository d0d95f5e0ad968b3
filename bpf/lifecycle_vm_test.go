//go:build vmtest

package bpf

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/agentcg/agentcg/cgroup"
	"github.com/agentcg/agentcg/internal/vmtest"
	"github.com/agentcg/agentcg/policy"
)

// Test200Cycles: attach/detach cycles leave no pins and no extra links.
func Test200Cycles(t *testing.T) {
	vmtest.Require(t)
	ctx := context.Background()
	p := newPolicy(t, policy.DefaultConfig())
	parent := cg(t, filepath.Join(cgRoot, "agentcg-cycles"))
	a := cg(t, filepath.Join(parent, "a"))
	b := cg(t, filepath.Join(parent, "b"))
	ids0, err := LinkIDs()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		if _, err := p.Attach(ctx, a, policy.High); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		if _, err := p.Attach(ctx, b, policy.Low); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		if i == 0 {
			mid, _ := LinkIDs()
			t.Logf("links while attached: %d (before: %d)", len(mid), len(ids0))
			if len(mid) != len(ids0)+2 { // two struct_ops links, nothing else
				t.Errorf("while attached: %d links, want %d", len(mid), len(ids0)+2)
			}
		}
		if err := p.Detach(ctx, a); err != nil {
			t.Fatal(err)
		}
		if err := p.Detach(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	ids1, _ := LinkIDs()
	ents, _ := os.ReadDir(p.linksDir())
	t.Logf("after 200 cycles: %d links (before %d), %d pins", len(ids1), len(ids0), len(ents))
	if len(ids1) != len(ids0) || len(ents) != 0 {
		t.Errorf("leak: links %d -> %d, pins left %d", len(ids0), len(ids1), len(ents))
	}
}

// TestRemovedCgroup measures what happens to a link whose cgroup is removed,
// and checks that reconcile (and detach by path) cleans it up.
func TestRemovedCgroup(t *testing.T) {
	vmtest.Require(t)
	ctx := context.Background()
	p := newPolicy(t, policy.DefaultConfig())
	parent := cg(t, filepath.Join(cgRoot, "agentcg-removed"))
	if err := cgroup.Write(parent, "cgroup.subtree_control", "+memory"); err != nil {
		t.Fatal(err)
	}
	// A cgroup without its own memcg is refused (the kernel would attach
	// to the parent's memcg instead).
	nomem := filepath.Join(cgRoot, "agentcg-nomem")
	os.Mkdir(nomem, 0o755)
	os.Mkdir(filepath.Join(nomem, "c"), 0o755)
	if _, err := p.Attach(ctx, filepath.Join(nomem, "c"), policy.Low); err == nil {
		t.Errorf("attach to a cgroup without the memory controller succeeded")
	} else {
		t.Logf("no memory controller: %v", err)
	}
	os.Remove(filepath.Join(nomem, "c"))
	os.Remove(nomem)
	ids0, _ := LinkIDs()
	for _, how := range []string{"reconcile", "detach"} {
		dir := filepath.Join(parent, how)
		os.Mkdir(dir, 0o755)
		l, err := p.Attach(ctx, dir, policy.Low)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(dir); err != nil {
			t.Fatalf("rmdir attached cgroup: %v", err)
		}
		ids, _ := LinkIDs()
		links, _ := p.List(ctx)
		_, pinErr := os.Stat(l.PinPath)
		t.Logf("MEASURED after rmdir: links %d (before attach %d), pin present %v, list %+v", len(ids), len(ids0), pinErr == nil, links)
		if len(links) != 1 || !links[0].Orphan {
			t.Errorf("list after rmdir: %+v, want one orphan", links)
		}
		// A new cgroup of the same name is another cgroup: not attached.
		os.Mkdir(dir, 0o755)
		if links, _ := p.List(ctx); len(links) != 1 || !links[0].Orphan {
			t.Errorf("recreated dir: %+v", links)
		}
		os.Remove(dir)
		switch how {
		case "reconcile":
			removed, err := p.Reconcile(ctx)
			if err != nil || len(removed) != 1 {
				t.Errorf("reconcile: %v %+v", err, removed)
			}
		case "detach":
			if err := p.Detach(ctx, dir); err != nil {
				t.Errorf("detach of removed cgroup: %v", err)
			}
		}
		ids, _ = LinkIDs()
		links, _ = p.List(ctx)
		if len(ids) != len(ids0) || len(links) != 0 {
			t.Errorf("after %s: links %d (want %d), list %+v", how, len(ids), len(ids0), links)
		}
	}
}
