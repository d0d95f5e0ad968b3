//go:build vmtest

package bpf

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
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

// TestConcurrentAttachDetach: two Policies over the same pins and records
// (as two processes, the plugin and a hook) attach, switch and detach 12
// cgroups at once while a third goroutine reconciles in a loop. Every
// cgroup ends with its last priority, the reconcile never removes a live
// attachment (one in progress is listed as a stray pin until its record is
// written), and after the detaches no pin and no extra link is left.
func TestConcurrentAttachDetach(t *testing.T) {
	vmtest.Require(t)
	ctx := context.Background()
	p := newPolicy(t, policy.DefaultConfig())
	q, err := Load(Options{Config: p.cfg, RecordDir: p.recs.dir})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	parent := cg(t, filepath.Join(cgRoot, "agentcg-concurrent"))
	var dirs []string
	for i := range 12 {
		dirs = append(dirs, cg(t, filepath.Join(parent, fmt.Sprintf("c%02d", i))))
	}
	ids0, err := LinkIDs()
	if err != nil {
		t.Fatal(err)
	}
	pol := func(i int) *Policy { return []*Policy{p, q}[i%2] }
	final := func(i int) policy.Priority { return []policy.Priority{policy.High, policy.Low}[(i/2)%2] }
	other := func(pr policy.Priority) policy.Priority {
		if pr == policy.High {
			return policy.Low
		}
		return policy.High
	}

	// run calls f for every cgroup at once while Reconcile loops; it
	// returns what the reconciles removed.
	run := func(f func(i int) error) []policy.Link {
		var stop atomic.Bool
		var removed []policy.Link
		rdone := make(chan error, 1)
		go func() {
			for !stop.Load() {
				r, err := p.Reconcile(ctx)
				removed = append(removed, r...)
				if err != nil {
					rdone <- err
					return
				}
			}
			rdone <- nil
		}()
		var wg sync.WaitGroup
		for i := range dirs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := f(i); err != nil {
					t.Errorf("%s: %v", dirs[i], err)
				}
			}()
		}
		wg.Wait()
		stop.Store(true)
		if err := <-rdone; err != nil {
			t.Errorf("reconcile: %v", err)
		}
		return removed
	}

	removed := run(func(i int) error {
		if _, err := pol(i).Attach(ctx, dirs[i], other(final(i))); err != nil {
			return err
		}
		_, err := pol(i+1).Attach(ctx, dirs[i], final(i)) // the other "process" switches it
		return err
	})
	if len(removed) != 0 {
		t.Fatalf("reconcile removed live attachments: %+v", removed)
	}
	links, err := p.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byPath := map[string]policy.Link{}
	for _, l := range links {
		byPath[l.CgroupPath] = l
	}
	for i, d := range dirs {
		if l, ok := byPath[d]; !ok || l.Orphan || l.Priority != final(i) || !pinned(l.PinPath) {
			t.Errorf("%s: %+v (listed %v), want %s, pinned", d, l, ok, final(i))
		}
	}
	ids, _ := LinkIDs()
	t.Logf("after concurrent attaches: %d links (before %d), %d listed", len(ids), len(ids0), len(links))
	if len(links) != len(dirs) || len(ids) != len(ids0)+len(dirs) {
		t.Errorf("%d listed, %d links (before %d); want %d of each", len(links), len(ids), len(ids0), len(dirs))
	}

	removed = run(func(i int) error { return pol(i).Detach(ctx, dirs[i]) })
	if len(removed) != 0 {
		t.Errorf("reconcile during the detaches removed %+v (nothing was orphaned)", removed)
	}
	ids, _ = LinkIDs()
	ents, _ := os.ReadDir(p.linksDir())
	if len(ids) != len(ids0) || len(ents) != 0 {
		t.Errorf("after concurrent detaches: %d links (want %d), %d pins", len(ids), len(ids0), len(ents))
	}
	recs, bad, err := p.recs.all()
	if len(recs) != 0 || len(bad) != 0 || err != nil {
		t.Errorf("records left: %+v %+v %v", recs, bad, err)
	}
}
