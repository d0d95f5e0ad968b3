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

// Policy is an in-memory policy.Policy that also implements
// policy.DirAttacher (see PathOnly for one that does not) and
// policy.TotalsReader. Set AttachErr to make attaches fail and Block (or
// SetBlock) to make them wait until the channel is closed or ctx ends.
type Policy struct {
	PolicyMode policy.Mode
	AttachErr  error
	Block      chan struct{}

	mu       sync.Mutex
	calls    []Call
	viaFD    int
	links    map[string]policy.Link
	stats    map[uint64]policy.Counters
	totals   map[policy.Priority]policy.Counters
	attached chan string
}

// New returns a fake in the given mode (ModeBPF if empty).
func New(m policy.Mode) *Policy {
	if m == "" {
		m = policy.ModeBPF
	}
	return &Policy{PolicyMode: m, links: map[string]policy.Link{}, stats: map[uint64]policy.Counters{}}
}

func (p *Policy) Mode() policy.Mode { return p.PolicyMode }

// SetBlock makes later attaches wait for ch (nil: no wait).
func (p *Policy) SetBlock(ch chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.Block = ch
}

// Entered returns a channel that receives the cgroup dir of each attach
// as it starts (before any Block), for tests that must know an attach is
// in flight. Call it before the attaches.
func (p *Policy) Entered() <-chan string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.attached == nil {
		p.attached = make(chan string, 1024)
	}
	return p.attached
}

// AttachDir is policy.DirAttacher: the fake checks that dir is the open
// directory of path and counts the call.
func (p *Policy) AttachDir(ctx context.Context, dir *os.File, path string, prio policy.Priority) (policy.Link, error) {
	a, err := dir.Stat()
	if err != nil {
		return policy.Link{}, fmt.Errorf("fake attach: stat fd: %w", err)
	}
	b, err := os.Stat(path)
	if err != nil || !os.SameFile(a, b) {
		return policy.Link{}, fmt.Errorf("fake attach: fd %s is not %s (%v)", dir.Name(), path, err)
	}
	p.mu.Lock()
	p.viaFD++
	p.mu.Unlock()
	return p.Attach(ctx, path, prio)
}

// ViaFD counts the attaches that came through AttachDir.
func (p *Policy) ViaFD() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.viaFD
}

func (p *Policy) Attach(ctx context.Context, dir string, prio policy.Priority) (policy.Link, error) {
	p.mu.Lock()
	block, entered := p.Block, p.attached
	p.mu.Unlock()
	if entered != nil {
		entered <- dir
	}
	if block != nil {
		select {
		case <-block:
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

// Totals is policy.TotalsReader: whatever SetTotals set.
func (p *Policy) Totals(context.Context) (map[policy.Priority]policy.Counters, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[policy.Priority]policy.Counters, len(p.totals))
	for k, v := range p.totals {
		out[k] = v
	}
	return out, nil
}

// SetTotals sets the node-wide counters of a priority.
func (p *Policy) SetTotals(prio policy.Priority, c policy.Counters) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.totals == nil {
		p.totals = map[policy.Priority]policy.Counters{}
	}
	p.totals[prio] = c
}

// PathOnly hides the optional interfaces (DirAttacher, TotalsReader) of
// the fake, as a policy without them would look.
type PathOnly struct{ P *Policy }

func (o PathOnly) Mode() policy.Mode { return o.P.Mode() }
func (o PathOnly) Attach(ctx context.Context, dir string, prio policy.Priority) (policy.Link, error) {
	return o.P.Attach(ctx, dir, prio)
}
func (o PathOnly) Detach(ctx context.Context, dir string) error    { return o.P.Detach(ctx, dir) }
func (o PathOnly) List(ctx context.Context) ([]policy.Link, error) { return o.P.List(ctx) }
func (o PathOnly) Stats(ctx context.Context) (map[uint64]policy.Counters, error) {
	return o.P.Stats(ctx)
}
func (o PathOnly) Close() error { return nil }

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
