// Package bpf owns the memcg priority policy in the kernel: the BPF C
// programs (high and low memcg_bpf_ops, one struct_ops map per object), their
// committed bpf2go output, and the loader that probes, loads once per
// process, attaches one pinned link per cgroup, detaches, lists and reads
// counters. It knows no container runtime.
package bpf

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/agentcg/agentcg/cgroup"
	"github.com/agentcg/agentcg/policy"
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Priority indexes of the agentcg_totals map (AGENTCG_PRIO_* in common.bpf.h).
const (
	prioHigh uint32 = 1
	prioLow  uint32 = 2
)

// Names under Config.PinDir.
const (
	mapsSubdir    = "maps"  // maps pinned by name, shared by every process
	opsSubdir     = "ops"   // struct_ops maps, <priority>-<key>: ops.go
	linksSubdir   = "links" // one struct_ops link per cgroup: cg-<id>
	pinPrefix     = "cg-"
	ctrsMapName   = "agentcg_ctrs"
	highMapName   = "agentcg_high" // HIGH cgroup id -> GrowthSignal state
	totalsMapName = "agentcg_totals"
)

// Options configure a Policy.
type Options struct {
	Config    policy.Config // zero fields take policy defaults
	RecordDir string        // default DefaultRecordDir
	Logger    *slog.Logger  // default slog.Default()
	// Probe replaces the feature check of Load (tests). nil: none when
	// ops are already pinned under PinDir (they were loaded on this boot),
	// Probe otherwise.
	Probe func() error
}

// Policy is the BPF implementation of policy.Policy. Preload or the first
// Attach reopens the pinned ops of its knobs, or loads them when no process
// has yet (ops.go); List, Stats and Detach work from the pins and records
// alone, so they load nothing.
type Policy struct {
	cfg  policy.Config
	recs records
	log  *slog.Logger

	mu    sync.Mutex
	ops   *opsSet // nil until Preload or the first Attach
	loads int     // times this Policy loaded the objects (tests, logs)
}

var (
	_ policy.Policy       = (*Policy)(nil)
	_ policy.DirAttacher  = (*Policy)(nil)
	_ policy.TotalsReader = (*Policy)(nil)
)

// Load validates the config and checks the kernel: it returns a
// *MissingFeatureError when the kernel lacks memcg_bpf_ops. It loads
// nothing (Preload and Attach do), and skips the BTF probe when ops are
// pinned under PinDir already.
func Load(opts Options) (*Policy, error) {
	cfg := opts.Config.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	probe := opts.Probe
	if probe == nil {
		probe = func() error {
			if opsPinned(cfg.PinDir) {
				return nil
			}
			return Probe()
		}
	}
	if err := probe(); err != nil {
		return nil, err
	}
	if opts.RecordDir == "" {
		opts.RecordDir = RecordDirFor(cfg.PinDir)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Policy{cfg: cfg, recs: records{opts.RecordDir}, log: opts.Logger}, nil
}

// Mode implements policy.Policy.
func (p *Policy) Mode() policy.Mode { return policy.ModeBPF }

// Config returns the effective config.
func (p *Policy) Config() policy.Config { return p.cfg }

func (p *Policy) mapsDir() string  { return filepath.Join(p.cfg.PinDir, mapsSubdir) }
func (p *Policy) linksDir() string { return filepath.Join(p.cfg.PinDir, linksSubdir) }
func (p *Policy) pinPath(id uint64) string {
	return filepath.Join(p.linksDir(), pinPrefix+strconv.FormatUint(id, 10))
}

// Preload gets the BPF objects ready now instead of at the first Attach
// (reopening the pinned ones of its knobs, or loading them), so that a
// long-lived caller (the NRI plugin) pays any verifier cost at start-up and
// its request path only attaches, and so that mode auto sees any load
// failure before it commits to BPF.
func (p *Policy) Preload(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, err := p.ensureOps(ctx)
	return err
}

// Loads reports how many times this Policy loaded the objects (0 when it
// only reopened pinned ones).
func (p *Policy) Loads() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.loads
}

// Attach implements policy.Policy: it opens dir and attaches through it
// (AttachDir).
func (p *Policy) Attach(ctx context.Context, dir string, prio policy.Priority) (policy.Link, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return policy.Link{}, err
	}
	f, err := os.Open(abs)
	if err != nil {
		return policy.Link{}, fmt.Errorf("attach %s ops: open cgroup: %w", prio, err)
	}
	defer f.Close()
	return p.AttachDir(ctx, f, abs, prio)
}

// AttachDir implements policy.DirAttacher: it pins one struct_ops link of
// the priority's ops to the cgroup open as dir, under PinDir/links/cg-<id>.
// The cgroup id (the directory's inode), the memory-controller check and
// BPF_LINK_CREATE all use dir's descriptor; path only goes into the record
// and messages.
func (p *Policy) AttachDir(ctx context.Context, dir *os.File, path string, prio policy.Priority) (policy.Link, error) {
	var ops func(*opsSet) *ebpf.Map
	switch prio {
	case policy.High:
		ops = func(o *opsSet) *ebpf.Map { return o.high }
	case policy.Low:
		ops = func(o *opsSet) *ebpf.Map { return o.low }
	default:
		return policy.Link{}, fmt.Errorf("attach %s: %w", path, errInvalidPriority(prio))
	}
	path = filepath.Clean(path)
	id, err := cgroupDirID(dir)
	if err != nil {
		return policy.Link{}, fmt.Errorf("attach %s ops to %s: %w", prio, path, err)
	}
	// Without its own memcg the kernel resolves the cgroup to the nearest
	// ancestor's memcg and would attach the ops there, to a whole subtree.
	if err := unix.Faccessat(int(dir.Fd()), "memory.current", unix.F_OK, 0); err != nil {
		return policy.Link{}, fmt.Errorf("attach %s ops to %s: no memory controller (enable +memory in the parent's cgroup.subtree_control): memory.current: %w", prio, path, err)
	}
	// Get the objects ready before the record lock, so that a load (the
	// verifier's seconds) never holds up other processes' attaches.
	if err := p.Preload(ctx); err != nil {
		return policy.Link{}, fmt.Errorf("attach %s ops to %s: %w", prio, path, err)
	}
	unlock, err := p.recs.lock(ctx)
	if err != nil {
		return policy.Link{}, err
	}
	defer unlock()
	p.mu.Lock()
	defer p.mu.Unlock()

	if _, err := p.reconcileLocked(ctx); err != nil {
		p.log.Warn("reconcile before attach", "err", err)
	}
	pin := p.pinPath(id)
	rec := record{CgroupID: id, CgroupPath: path, Priority: prio, PinPath: pin}
	if old, ok := p.findLocked(id); ok {
		if old.Priority == prio && pinned(pin) {
			return p.linkOf(old, false), nil
		}
		if err := p.detachLocked(old); err != nil {
			return policy.Link{}, err
		}
	} else if err := unpin(pin); err != nil {
		// A pin without a readable record (see List) would make the
		// kernel refuse this attach with EBUSY; this cgroup is live.
		return policy.Link{}, fmt.Errorf("attach %s: %w", path, err)
	}
	o, err := p.ensureOps(ctx) // what Preload got, unless detach --all removed it since
	if err != nil {
		return policy.Link{}, err
	}
	// A HIGH cgroup gets a fresh GrowthSignal state that LOW's programs
	// sample; it goes before the link so that no HIGH runs unobserved.
	undo := func() {}
	if prio == policy.High {
		if err := o.growth.Put(id, make([]byte, o.growth.ValueSize())); err != nil {
			return policy.Link{}, fmt.Errorf("attach %s: add HIGH cgroup %d to %s: %w", path, id, highMapName, err)
		}
		undo = func() { o.growth.Delete(id) }
	}
	l, err := attachToCgroup(ops(o), dir, path)
	if err != nil {
		undo()
		return policy.Link{}, fmt.Errorf("attach %s ops: %w", prio, err)
	}
	defer l.Close() // the pin keeps the link
	if err := os.MkdirAll(p.linksDir(), 0o755); err != nil {
		undo()
		return policy.Link{}, fmt.Errorf("attach %s: %w", path, err)
	}
	if err := l.Pin(pin); err != nil {
		undo()
		return policy.Link{}, fmt.Errorf("attach %s: pin %s: %w", path, pin, err)
	}
	if err := p.recs.put(rec); err != nil {
		// Detach now, not when the last fd goes: a retry would see EBUSY.
		if uerr := unpin(pin); uerr != nil {
			err = errors.Join(err, uerr)
		}
		undo()
		return policy.Link{}, err
	}
	p.log.Debug("attached", "cgroup", path, "id", id, "priority", prio, "pin", pin)
	return p.linkOf(rec, false), nil
}

func errInvalidPriority(p policy.Priority) error {
	_, err := policy.ParsePriority(string(p))
	return err
}

func pinned(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func (p *Policy) linkOf(rec record, orphan bool) policy.Link {
	return policy.Link{CgroupID: rec.CgroupID, CgroupPath: rec.CgroupPath, Priority: rec.Priority,
		Mode: policy.ModeBPF, PinPath: rec.PinPath, Orphan: orphan}
}

func (p *Policy) findLocked(id uint64) (record, bool) {
	recs, _, err := p.recs.all()
	if err != nil {
		return record{}, false
	}
	for _, r := range recs {
		if r.CgroupID == id {
			return r, true
		}
	}
	return record{}, false
}

// detachLocked removes the pin (which releases the link), the HIGH growth
// entry and the record. Counters stay readable until detach --all.
func (p *Policy) detachLocked(rec record) error {
	if err := unpin(rec.PinPath); err != nil {
		return fmt.Errorf("detach %s (cgroup %d): %w", rec.CgroupPath, rec.CgroupID, err)
	}
	if m, err := p.pinnedMap(highMapName); err == nil {
		if err := m.Delete(rec.CgroupID); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			p.log.Warn("delete HIGH growth entry", "cgroup", rec.CgroupPath, "err", err)
		}
		m.Close()
	}
	return p.recs.remove(rec.CgroupID)
}

// pinnedMap opens a shared map from its pin; fs.ErrNotExist when nothing
// was ever attached.
func (p *Policy) pinnedMap(name string) (*ebpf.Map, error) {
	return ebpf.LoadPinnedMap(filepath.Join(p.mapsDir(), name), nil)
}

// Detach implements policy.Policy. It finds the attachment by path through
// the records, so it works after the cgroup directory has been removed.
func (p *Policy) Detach(ctx context.Context, dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	unlock, err := p.recs.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	recs, bad, err := p.records()
	if err != nil {
		return err
	}
	id, idErr := cgroup.ID(abs)
	for _, r := range recs {
		if r.CgroupPath == abs || (idErr == nil && r.CgroupID == id) {
			if err := p.detachLocked(r); err != nil {
				return err
			}
		}
	}
	// A pin without a readable record (record dir lost, or the record
	// corrupt): the id names it while the cgroup exists.
	if idErr == nil {
		rec := record{CgroupID: id, CgroupPath: abs, PinPath: p.pinPath(id)}
		if slices.ContainsFunc(bad, func(b badRecord) bool { return b.id == id }) {
			return p.detachLocked(rec)
		}
		if err := unpin(rec.PinPath); err != nil {
			return fmt.Errorf("detach %s: %w", abs, err)
		}
	}
	return nil
}

// records returns the readable records and logs each one it had to skip.
func (p *Policy) records() ([]record, []badRecord, error) {
	recs, bad, err := p.recs.all()
	for _, b := range bad {
		p.log.Warn("skipping an unreadable link record; its pin is kept until its cgroup is detached by path or detach --all",
			"dir", p.recs.dir, "file", b.name, "err", b.err)
	}
	return recs, bad, err
}

// unpin detaches a pinned link synchronously (BPF_LINK_DETACH runs the
// ops' unreg now; dropping the last reference alone defers it to a
// workqueue, and an attach right after would see EBUSY), then removes the pin.
func unpin(pin string) error {
	l, err := link.LoadPinnedLink(pin, nil)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		if rmErr := os.Remove(pin); rmErr != nil && !errors.Is(rmErr, fs.ErrNotExist) {
			return fmt.Errorf("unpin %s: %w", pin, errors.Join(err, rmErr))
		}
		return nil
	}
	defer l.Close()
	if err := l.Detach(); err != nil && !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, ebpf.ErrNotSupported) {
		return fmt.Errorf("detach link %s: %w", pin, err)
	}
	if err := l.Unpin(); err != nil {
		return fmt.Errorf("unpin %s: %w", pin, err)
	}
	return nil
}

// DetachAll removes every attachment, the ops and the shared maps
// (counters included): nothing agentcg pinned is left under PinDir.
func (p *Policy) DetachAll(ctx context.Context) error {
	unlock, err := p.recs.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	recs, bad, err := p.records()
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range recs {
		errs = append(errs, p.detachLocked(r))
	}
	for _, b := range bad {
		errs = append(errs, os.Remove(filepath.Join(p.recs.dir, b.name)))
	}
	if p.ops != nil {
		p.ops.close()
		p.ops = nil
	}
	errs = append(errs, p.removePins())
	return errors.Join(errs...)
}

// removePins removes every pin agentcg makes under PinDir, and nothing
// else: the pin dir may be shared (a mistyped --pin-dir naming the bpffs
// root, where other tools pin their maps). Stray link pins go too, which
// detaches their links.
func (p *Policy) removePins() error {
	var errs []error
	for _, sub := range []struct {
		name  string
		owned func(string) bool
	}{
		{linksSubdir, func(n string) bool { return strings.HasPrefix(n, pinPrefix) }},
		{opsSubdir, func(n string) bool { return strings.HasPrefix(n, "high-") || strings.HasPrefix(n, "low-") }},
		{mapsSubdir, func(n string) bool { return slices.Contains(dataMapNames, n) }},
	} {
		dir := filepath.Join(p.cfg.PinDir, sub.name)
		ents, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, e := range ents {
			if !sub.owned(e.Name()) {
				p.log.Warn("leaving a pin agentcg did not make", "pin", filepath.Join(dir, e.Name()))
				continue
			}
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
		if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, unix.ENOTEMPTY) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// List implements policy.Policy: every record, plus pins without a record,
// with Orphan set when the cgroup is gone.
func (p *Policy) List(ctx context.Context) ([]policy.Link, error) {
	recs, bad, err := p.records()
	if err != nil {
		return nil, err
	}
	var out []policy.Link
	known := map[string]bool{}
	for _, r := range recs {
		known[r.PinPath] = true
		out = append(out, p.linkOf(r, !alive(r) || !pinned(r.PinPath)))
	}
	// The pin of an unreadable record is listed, but never as an orphan:
	// nothing says whether its cgroup is gone, and reconcile must not
	// detach a live container's policy.
	for _, b := range bad {
		if pin := p.pinPath(b.id); b.id != 0 && pinned(pin) {
			known[pin] = true
			out = append(out, policy.Link{CgroupID: b.id, Mode: policy.ModeBPF, PinPath: pin})
		}
	}
	ents, err := os.ReadDir(p.linksDir())
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", p.linksDir(), err)
	}
	for _, e := range ents {
		pin := filepath.Join(p.linksDir(), e.Name())
		if known[pin] {
			continue
		}
		id, _ := strconv.ParseUint(strings.TrimPrefix(e.Name(), pinPrefix), 10, 64)
		out = append(out, policy.Link{CgroupID: id, Mode: policy.ModeBPF, PinPath: pin, Orphan: true})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CgroupID < out[j].CgroupID })
	return out, nil
}

// Reconcile removes attachments whose cgroup is gone (or whose pin was
// removed by hand) and stray pins without a record. It returns what it removed.
func (p *Policy) Reconcile(ctx context.Context) ([]policy.Link, error) {
	unlock, err := p.recs.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	removed, err := p.reconcileLocked(ctx)
	if err != nil {
		return removed, err
	}
	return removed, nil
}

func (p *Policy) reconcileLocked(ctx context.Context) ([]policy.Link, error) {
	links, err := p.List(ctx)
	if err != nil {
		return nil, err
	}
	var removed []policy.Link
	var errs []error
	for _, l := range links {
		if !l.Orphan {
			continue
		}
		rec := record{CgroupID: l.CgroupID, CgroupPath: l.CgroupPath, Priority: l.Priority, PinPath: l.PinPath}
		if err := p.detachLocked(rec); err != nil {
			errs = append(errs, err)
			continue
		}
		p.log.Info("removed orphan link", "cgroup", l.CgroupPath, "id", l.CgroupID, "pin", l.PinPath)
		removed = append(removed, l)
	}
	return removed, errors.Join(errs...)
}

// Stats implements policy.Policy: the counters of every cgroup the programs
// have seen since the maps were created (detached cgroups included).
func (p *Policy) Stats(ctx context.Context) (map[uint64]policy.Counters, error) {
	out := map[uint64]policy.Counters{}
	m, err := p.pinnedMap(ctrsMapName)
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open counters map: %w", err)
	}
	defer m.Close()
	var id uint64
	var c highAgentcgCounters
	it := m.Iterate()
	for it.Next(&id, &c) {
		out[id] = countersOf(c)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read counters: %w", err)
	}
	return out, nil
}

// Totals implements policy.TotalsReader: the counters of every cgroup each
// priority's programs ran for, summed since the shared maps were created.
// Detach and counter eviction never reduce them; DetachAll (which removes
// the maps) starts them again from zero. Both priorities are always present.
func (p *Policy) Totals(ctx context.Context) (map[policy.Priority]policy.Counters, error) {
	out := map[policy.Priority]policy.Counters{policy.High: {}, policy.Low: {}}
	m, err := p.pinnedMap(totalsMapName)
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open totals map: %w", err)
	}
	defer m.Close()
	for prio, key := range map[policy.Priority]uint32{policy.High: prioHigh, policy.Low: prioLow} {
		var perCPU []highAgentcgCounters
		if err := m.Lookup(key, &perCPU); err != nil {
			return nil, fmt.Errorf("read %s totals: %w", prio, err)
		}
		var c policy.Counters
		for _, v := range perCPU {
			c = addCounters(c, countersOf(v))
		}
		out[prio] = c
	}
	return out, nil
}

func countersOf(c highAgentcgCounters) policy.Counters {
	return policy.Counters{
		DelayCalls: c.DelayCalls, DelayNonZero: c.DelayNonzero, DelayTotalMs: c.DelayTotalMs,
		BelowLowCalls: c.BelowLowCalls, BelowLowTrue: c.BelowLowTrue, BelowMinTrue: c.BelowMinTrue,
	}
}

func addCounters(a, b policy.Counters) policy.Counters {
	return policy.Counters{
		DelayCalls: a.DelayCalls + b.DelayCalls, DelayNonZero: a.DelayNonZero + b.DelayNonZero,
		DelayTotalMs: a.DelayTotalMs + b.DelayTotalMs, BelowLowCalls: a.BelowLowCalls + b.BelowLowCalls,
		BelowLowTrue: a.BelowLowTrue + b.BelowLowTrue, BelowMinTrue: a.BelowMinTrue + b.BelowMinTrue,
	}
}

// Close releases this process's objects; pinned links stay attached.
func (p *Policy) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ops != nil {
		p.ops.close()
		p.ops = nil
	}
	return nil
}
