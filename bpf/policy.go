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
	"sync/atomic"

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
// alone, so they load nothing. It is safe for concurrent use; attaches and
// detaches of different cgroups never wait on each other (README, "Locks").
type Policy struct {
	cfg  policy.Config
	recs records
	log  *slog.Logger
	kern kernel

	// opsMu, a one-slot semaphore taken with the caller's context, guards
	// ops. It is held across a load (once per boot and knob set) but never
	// across a per-cgroup kernel call: an attach links through its own
	// duplicates of the maps (opsFor).
	opsMu chan struct{}
	ops   *opsSet      // nil until Preload or the first Attach
	loads atomic.Int64 // times this Policy loaded the objects (tests, logs)
}

// kernel is the part of an attach that needs cgroup2 and memcg_bpf_ops;
// host tests replace it to run the locking and record logic without them.
type kernel struct {
	// cgroupID is the id of the cgroup open as dir (cgroupDirID).
	cgroupID func(dir *os.File) (uint64, error)
	// prepare gets the objects ready (Preload); AttachDir calls it before
	// taking any lock.
	prepare func(ctx context.Context) error
	// link adds a HIGH cgroup's growth entry, links the priority's ops to
	// the cgroup open as dir and pins the link at pin; on an error it
	// leaves nothing behind.
	link func(ctx context.Context, dir *os.File, path string, prio policy.Priority, id uint64, pin string) error
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
	p := &Policy{cfg: cfg, recs: records{dir: opts.RecordDir}, log: opts.Logger, opsMu: make(chan struct{}, 1)}
	p.kern = kernel{cgroupID: cgroupDirID, prepare: p.Preload, link: p.linkAndPin}
	return p, nil
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
	unlock, err := p.lockOps(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	_, err = p.ensureOps(ctx)
	return err
}

// lockOps takes opsMu, or gives up when ctx ends.
func (p *Policy) lockOps(ctx context.Context) (func(), error) {
	unlock := func() { <-p.opsMu }
	select {
	case p.opsMu <- struct{}{}:
		return unlock, nil
	default:
	}
	select {
	case p.opsMu <- struct{}{}:
		return unlock, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for this process's load of the BPF objects: %w", context.Cause(ctx))
	}
}

// opsFor returns this caller's own handles (duplicated descriptors) on the
// priority's ops and on the HIGH growth map: it links with them holding no
// lock of this process, and a reload or Close meanwhile cannot close them.
func (p *Policy) opsFor(ctx context.Context, prio policy.Priority) (ops, growth *ebpf.Map, err error) {
	unlock, err := p.lockOps(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer unlock()
	o, err := p.ensureOps(ctx) // what Preload got, unless detach --all removed it since
	if err != nil {
		return nil, nil, err
	}
	src := o.low
	if prio == policy.High {
		src = o.high
	}
	if ops, err = src.Clone(); err != nil {
		return nil, nil, fmt.Errorf("duplicate %s ops: %w", prio, err)
	}
	if growth, err = o.growth.Clone(); err != nil {
		ops.Close()
		return nil, nil, fmt.Errorf("duplicate %s: %w", highMapName, err)
	}
	return ops, growth, nil
}

// Loads reports how many times this Policy loaded the objects (0 when it
// only reopened pinned ones).
func (p *Policy) Loads() int { return int(p.loads.Load()) }

// Attach implements policy.Policy: it opens dir and attaches through it
// (AttachDir).
func (p *Policy) Attach(ctx context.Context, dir string, prio policy.Priority) (policy.Link, error) {
	return policy.AttachPath(ctx, p, dir, prio)
}

// AttachDir implements policy.DirAttacher: it pins one struct_ops link of
// the priority's ops to the cgroup open as dir, under PinDir/links/cg-<id>.
// The cgroup id (the directory's inode), the memory-controller check and
// BPF_LINK_CREATE all use dir's descriptor; path only goes into the record
// and messages.
func (p *Policy) AttachDir(ctx context.Context, dir *os.File, path string, prio policy.Priority) (policy.Link, error) {
	if prio != policy.High && prio != policy.Low {
		return policy.Link{}, fmt.Errorf("attach %s: %w", path, errInvalidPriority(prio))
	}
	path = filepath.Clean(path)
	id, err := p.kern.cgroupID(dir)
	if err != nil {
		return policy.Link{}, fmt.Errorf("attach %s ops to %s: %w", prio, path, err)
	}
	// Without its own memcg the kernel resolves the cgroup to the nearest
	// ancestor's memcg and would attach the ops there, to a whole subtree.
	if err := unix.Faccessat(int(dir.Fd()), "memory.current", unix.F_OK, 0); err != nil {
		return policy.Link{}, fmt.Errorf("attach %s ops to %s: no memory controller (enable +memory in the parent's cgroup.subtree_control): memory.current: %w", prio, path, err)
	}
	// Get the objects ready before any lock, so that a load (the
	// verifier's seconds) never holds up other attaches.
	if err := p.kern.prepare(ctx); err != nil {
		return policy.Link{}, fmt.Errorf("attach %s ops to %s: %w", prio, path, err)
	}
	// This cgroup's lock only: the record, the pin and the link of another
	// cgroup are never read or waited for here.
	unlock, err := p.recs.lockID(ctx, id)
	if err != nil {
		return policy.Link{}, fmt.Errorf("attach %s ops to %s: %w", prio, path, err)
	}
	defer unlock()

	pin := p.pinPath(id)
	rec := record{CgroupID: id, CgroupPath: path, Priority: prio, PinPath: pin}
	switch old, err := p.recs.get(id); {
	case err == nil && old.Priority == prio && pinned(pin):
		return p.linkOf(old, false), nil
	case err == nil:
		if err := p.detachLocked(old); err != nil {
			return policy.Link{}, err
		}
	case !errors.Is(err, fs.ErrNotExist):
		p.log.Warn("replacing an unreadable link record", "cgroup", path, "id", id, "err", err)
	}
	// A pin without a readable record (see List) would make the kernel
	// refuse this attach with EBUSY; this cgroup is live.
	if err := unpin(pin); err != nil {
		return policy.Link{}, fmt.Errorf("attach %s: %w", path, err)
	}
	if err := p.kern.link(ctx, dir, path, prio, id, pin); err != nil {
		return policy.Link{}, err
	}
	if err := p.recs.put(rec); err != nil {
		// Detach now, not when the last fd goes: a retry would see EBUSY.
		if derr := p.detachLocked(rec); derr != nil {
			err = errors.Join(err, derr)
		}
		return policy.Link{}, err
	}
	p.log.Debug("attached", "cgroup", path, "id", id, "priority", prio, "pin", pin)
	return p.linkOf(rec, false), nil
}

// linkAndPin is kernel.link.
func (p *Policy) linkAndPin(ctx context.Context, dir *os.File, path string, prio policy.Priority, id uint64, pin string) error {
	ops, growth, err := p.opsFor(ctx, prio)
	if err != nil {
		return fmt.Errorf("attach %s ops to %s: %w", prio, path, err)
	}
	defer ops.Close()
	defer growth.Close()
	// A HIGH cgroup gets a fresh GrowthSignal state that LOW's programs
	// sample; it goes before the link so that no HIGH runs unobserved.
	undo := func() {}
	if prio == policy.High {
		if err := growth.Put(id, make([]byte, growth.ValueSize())); err != nil {
			return fmt.Errorf("attach %s: add HIGH cgroup %d to %s: %w", path, id, highMapName, err)
		}
		undo = func() { growth.Delete(id) }
	}
	l, err := attachToCgroup(ops, dir, path)
	if err != nil {
		undo()
		return fmt.Errorf("attach %s ops: %w", prio, err)
	}
	defer l.Close() // the pin keeps the link
	if err := os.MkdirAll(p.linksDir(), 0o755); err != nil {
		undo()
		return fmt.Errorf("attach %s: %w", path, err)
	}
	if err := l.Pin(pin); err != nil {
		undo()
		return fmt.Errorf("attach %s: pin %s: %w", path, pin, err)
	}
	return nil
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

// detachLocked removes the pin (which releases the link), the HIGH growth
// entry and the record. Counters stay readable until detach --all. The
// caller holds the cgroup id's lock, or the whole record dir.
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

// Detach implements policy.Policy. While dir exists, it detaches the
// cgroup it names (found by its id: one record read); once dir is gone, it
// finds the attachments recorded under that path in the records. Either
// way it holds only the lock of each cgroup id it detaches.
func (p *Policy) Detach(ctx context.Context, dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if id, err := cgroup.ID(abs); err == nil {
		return p.detachID(ctx, id, abs)
	}
	recs, _, err := p.records()
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range recs {
		if r.CgroupPath == abs {
			errs = append(errs, p.detachID(ctx, r.CgroupID, abs))
		}
	}
	// Having read every record anyway, also remove the other attachments
	// whose cgroup is gone: on a node with only the OCI hook (no plugin
	// reconciling), a poststop that never ran would otherwise leave its
	// link until someone runs agentcg status. Busy ids are skipped, never
	// waited for.
	for _, r := range recs {
		if r.CgroupPath == abs || alive(r) {
			continue
		}
		l := p.linkOf(r, true)
		if gone, err := p.removeOrphan(l); err != nil {
			p.log.Warn("remove orphan link", "cgroup", r.CgroupPath, "id", r.CgroupID, "err", err)
		} else if gone {
			p.log.Info("removed orphan link", "cgroup", r.CgroupPath, "id", r.CgroupID, "pin", r.PinPath)
		}
	}
	return errors.Join(errs...)
}

// detachID detaches one cgroup id under its lock, from its record as it is
// now. A pin without a readable record (record dir lost, or the record
// corrupt) goes too: the id names it.
func (p *Policy) detachID(ctx context.Context, id uint64, path string) error {
	unlock, err := p.recs.lockID(ctx, id)
	if err != nil {
		return fmt.Errorf("detach %s: %w", path, err)
	}
	defer unlock()
	rec, err := p.recs.get(id)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			p.log.Warn("removing an unreadable link record with its cgroup's pin", "cgroup", path, "id", id, "err", err)
		}
		rec = record{CgroupID: id, CgroupPath: path, PinPath: p.pinPath(id)}
	}
	return p.detachLocked(rec)
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
// It holds the whole record dir: it waits for every attach and detach in
// progress (each within its bound) and keeps new ones out until it is done.
func (p *Policy) DetachAll(ctx context.Context) error {
	unlock, err := p.recs.lockAll(ctx)
	if err != nil {
		return err
	}
	defer unlock()
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
	if unlockOps, err := p.lockOps(ctx); err == nil {
		if p.ops != nil {
			p.ops.close()
			p.ops = nil
		}
		unlockOps()
	} // else this process's handles stay open; the next attach finds their pins gone and reloads
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
// removed by hand) and stray pins without a record. It returns what it
// removed. It waits for no attach: each candidate's cgroup id is locked
// without waiting and checked again under that lock; one held by an attach
// or detach in progress is left for the next reconcile.
func (p *Policy) Reconcile(ctx context.Context) ([]policy.Link, error) {
	unlock, err := p.recs.lockShared(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
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
		gone, err := p.removeOrphan(l)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if gone {
			p.log.Info("removed orphan link", "cgroup", l.CgroupPath, "id", l.CgroupID, "pin", l.PinPath)
			removed = append(removed, l)
		}
	}
	return removed, errors.Join(errs...)
}

// removeOrphan removes what List reported as the orphan l, if it still is
// one under its cgroup id's lock. gone is false when the id is busy or l
// is no longer an orphan.
func (p *Policy) removeOrphan(l policy.Link) (gone bool, err error) {
	if l.CgroupID == 0 {
		// A pin not named cg-<id>: no attach makes or uses it.
		return true, unpin(l.PinPath)
	}
	unlock, ok, err := p.recs.tryID(l.CgroupID)
	if err != nil || !ok {
		if !ok && err == nil {
			p.log.Debug("orphan candidate busy; left for the next reconcile", "id", l.CgroupID, "pin", l.PinPath)
		}
		return false, err
	}
	defer unlock()
	rec, err := p.recs.get(l.CgroupID)
	switch {
	case err == nil:
		if alive(rec) && pinned(rec.PinPath) {
			return false, nil // attached again since List
		}
	case errors.Is(err, fs.ErrNotExist):
		if !pinned(l.PinPath) {
			return false, nil // detached since List
		}
		rec = record{CgroupID: l.CgroupID, PinPath: l.PinPath}
	default:
		return false, nil // unreadable now: its cgroup may be alive (see List)
	}
	return true, p.detachLocked(rec)
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
	unlock, _ := p.lockOps(context.Background()) // waits out a load in progress
	defer unlock()
	if p.ops != nil {
		p.ops.close()
		p.ops = nil
	}
	return nil
}
