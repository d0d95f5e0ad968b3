// Package enrolltest provides a fake policy.Policy that records calls, for
// the unit tests of the enroller, the NRI plugin and the OCI hook.
package enrolltest

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"

	"github.com/agentcg/agentcg/policy"
)

// Call is one Attach or Detach seen by the fake.
type Call struct {
	Op       string // "attach" or "detach"
	Dir      string
	Priority policy.Priority
}

// Policy is an in-memory policy.Policy. Set AttachErr to make attaches fail
// and Block to make them wait until the channel is closed or ctx ends.
type Policy struct {
	PolicyMode policy.Mode
	AttachErr  error
	Block      chan struct{}

	mu    sync.Mutex
	calls []Call
	links map[string]policy.Link
	stats map[uint64]policy.Counters
}

// New returns a fake in the given mode (ModeBPF if empty).
func New(m policy.Mode) *Policy {
	if m == "" {
		m = policy.ModeBPF
	}
	return &Policy{PolicyMode: m, links: map[string]policy.Link{}, stats: map[uint64]policy.Counters{}}
}

func (p *Policy) Mode() policy.Mode { return p.PolicyMode }

func (p *Policy) Attach(ctx context.Context, dir string, prio policy.Priority) (policy.Link, error) {
	if p.Block != nil {
		select {
		case <-p.Block:
		case <-ctx.Done():
			return policy.Link{}, fmt.Errorf("fake attach %s: %w", dir, ctx.Err())
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, Call{Op: "attach", Dir: dir, Priority: prio})
	if p.AttachErr != nil {
		return policy.Link{}, p.AttachErr
	}
	l := policy.Link{CgroupID: uint64(len(p.links) + 1), CgroupPath: dir, Priority: prio, Mode: p.PolicyMode, PinPath: "/fake/pin" + dir}
	if old, ok := p.links[dir]; ok {
		l.CgroupID = old.CgroupID
	}
	p.links[dir] = l
	return l, nil
}

func (p *Policy) Detach(_ context.Context, dir string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, Call{Op: "detach", Dir: dir})
	delete(p.links, dir)
	return nil
}

// List reports links, marking those whose directory is gone as orphans.
func (p *Policy) List(context.Context) ([]policy.Link, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []policy.Link
	for _, l := range p.links {
		if _, err := os.Stat(l.CgroupPath); err != nil {
			l.Orphan = true
		}
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b policy.Link) int { return int(a.CgroupID) - int(b.CgroupID) })
	return out, nil
}

func (p *Policy) Stats(context.Context) (map[uint64]policy.Counters, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[uint64]policy.Counters, len(p.stats))
	for k, v := range p.stats {
		out[k] = v
	}
	return out, nil
}

func (p *Policy) Close() error { return nil }

// SetStats sets the counters reported for a cgroup id.
func (p *Policy) SetStats(id uint64, c policy.Counters) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stats[id] = c
}

// AddLink plants a link as if an earlier process had attached it.
func (p *Policy) AddLink(l policy.Link) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.links[l.CgroupPath] = l
}

// Calls returns the calls seen so far.
func (p *Policy) Calls() []Call {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.calls)
}

// Links returns the current attachments by cgroup dir.
func (p *Policy) Links() map[string]policy.Link {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]policy.Link, len(p.links))
	for k, v := range p.links {
		out[k] = v
	}
	return out
}

// Tree is a fake cgroup root and /proc for tests.
type Tree struct {
	CgroupRoot string
	ProcRoot   string
}

// NewTree creates an empty cgroup root and proc root under dir.
func NewTree(dir string) (Tree, error) {
	t := Tree{CgroupRoot: dir + "/cgroup", ProcRoot: dir + "/proc"}
	for _, d := range []string{t.CgroupRoot, t.ProcRoot} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return Tree{}, err
		}
	}
	return t, nil
}

// Cgroup creates rel under the cgroup root and returns its path.
func (t Tree) Cgroup(rel string) (string, error) {
	d := t.CgroupRoot + "/" + rel
	return d, os.MkdirAll(d, 0o755)
}

// Proc writes a /proc/<pid>/cgroup file with the unified line "0::<path>".
func (t Tree) Proc(pid int, path string) error {
	d := fmt.Sprintf("%s/%d", t.ProcRoot, pid)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return err
	}
	return os.WriteFile(d+"/cgroup", []byte("0::"+path+"\n"), 0o644)
}
