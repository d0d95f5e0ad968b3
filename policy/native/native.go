// Package native owns the fallback policy for kernels without memcg_bpf_ops:
// HIGH cgroups get memory.low, LOW cgroups get memory.high, with values from
// policy.Config. The previous value is recorded outside the cgroup and
// restored on Detach.
package native

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/agentcg/agentcg/cgroup"
	"github.com/agentcg/agentcg/internal/dirlock"
	"github.com/agentcg/agentcg/internal/jsonfile"
	"github.com/agentcg/agentcg/policy"
	"golang.org/x/sys/unix"
)

// DefaultRecordDir holds one record per attached cgroup.
const DefaultRecordDir = "/run/agentcg/native"

// Options configure a Policy.
type Options struct {
	Config    policy.Config
	RecordDir string // default DefaultRecordDir
	// Fallback is why this policy stands in for the BPF one (set by mode
	// auto); FallbackReason returns it.
	Fallback error
	Logger   *slog.Logger // default slog.Default()
}

// Policy is the native implementation of policy.Policy. It is safe for
// concurrent use: attaches and detaches hold only their cgroup id's lock
// (see lockID), so one cgroup's memory.* write, which the kernel may make
// wait on reclaim, never holds up another cgroup.
type Policy struct {
	cfg      policy.Config
	dir      string
	fallback error
	log      *slog.Logger
}

var (
	_ policy.Policy      = (*Policy)(nil)
	_ policy.DirAttacher = (*Policy)(nil)
)

// record is RecordDir/<cgroup id>.json.
type record struct {
	CgroupID   uint64          `json:"cgroup_id"`
	CgroupPath string          `json:"cgroup_path"`
	Priority   policy.Priority `json:"priority"`
	File       string          `json:"file"`     // memory.low or memory.high
	Previous   string          `json:"previous"` // value before Attach
}

// New returns the native policy.
func New(opts Options) (*Policy, error) {
	cfg := opts.Config.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.RecordDir == "" {
		opts.RecordDir = DefaultRecordDir
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Policy{cfg: cfg, dir: opts.RecordDir, fallback: opts.Fallback, log: opts.Logger}, nil
}

// FallbackReason is why mode auto chose this policy over BPF; nil when
// native was asked for.
func (p *Policy) FallbackReason() error { return p.fallback }

// Mode implements policy.Policy.
func (p *Policy) Mode() policy.Mode { return policy.ModeNative }

// setting returns the file and value a priority writes.
func (p *Policy) setting(prio policy.Priority) (string, string, error) {
	switch prio {
	case policy.High:
		return "memory.low", cgroup.FormatBytes(p.cfg.NativeLowBytes), nil
	case policy.Low:
		return "memory.high", cgroup.FormatBytes(p.cfg.NativeHighBytes), nil
	}
	_, err := policy.ParsePriority(string(prio))
	return "", "", err
}

func (p *Policy) path(id uint64) string {
	return filepath.Join(p.dir, strconv.FormatUint(id, 10)+".json")
}

// Attach implements policy.Policy: it opens dir and attaches through it
// (AttachDir).
func (p *Policy) Attach(ctx context.Context, dir string, prio policy.Priority) (policy.Link, error) {
	return policy.AttachPath(ctx, p, dir, prio)
}

// AttachDir implements policy.DirAttacher: the cgroup id is the inode of
// dir and memory.low/memory.high are opened relative to dir, so the files
// written belong to the directory the caller opened, whatever path names
// now. path goes into the record (Detach restores through it while the
// cgroup with the recorded id is still there).
func (p *Policy) AttachDir(ctx context.Context, dir *os.File, path string, prio policy.Priority) (policy.Link, error) {
	file, value, err := p.setting(prio)
	if err != nil {
		return policy.Link{}, fmt.Errorf("attach %s: %w", path, err)
	}
	path = filepath.Clean(path)
	var st unix.Stat_t
	if err := unix.Fstat(int(dir.Fd()), &st); err != nil {
		return policy.Link{}, fmt.Errorf("attach %s to %s: fstat: %w", prio, path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return policy.Link{}, fmt.Errorf("attach %s to %s: not a directory", prio, path)
	}
	id := st.Ino
	unlock, err := p.lockID(ctx, id)
	if err != nil {
		return policy.Link{}, fmt.Errorf("attach %s to %s: %w", prio, path, err)
	}
	defer unlock()
	switch old, err := p.read(p.path(id)); {
	case err == nil && old.Priority == prio:
		return linkOf(old, false), nil
	case err == nil:
		if err := p.restore(old); err != nil {
			return policy.Link{}, err
		}
	case !errors.Is(err, fs.ErrNotExist):
		// The value it kept is lost; the one in place now becomes it.
		p.log.Warn("replacing an unreadable native record", "cgroup", path, "err", err)
	}
	prev, err := readAt(dir, file)
	if err != nil {
		return policy.Link{}, fmt.Errorf("attach %s to %s: %w", prio, path, err)
	}
	rec := record{CgroupID: id, CgroupPath: path, Priority: prio, File: file, Previous: prev}
	// Record first: a crash between the two steps still restores.
	if err := p.write(rec); err != nil {
		return policy.Link{}, err
	}
	if err := writeAt(dir, file, value); err != nil {
		os.Remove(p.path(id))
		return policy.Link{}, fmt.Errorf("attach %s to %s: %w", prio, path, err)
	}
	return linkOf(rec, false), nil
}

// readAt returns the trimmed content of the interface file name in dir.
func readAt(dir *os.File, name string) (string, error) {
	f, err := openAt(dir, name, unix.O_RDONLY)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", name, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// writeAt writes value to the interface file name in dir (which must exist).
func writeAt(dir *os.File, name, value string) error {
	f, err := openAt(dir, name, unix.O_WRONLY|unix.O_TRUNC)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(value); err != nil {
		f.Close()
		return fmt.Errorf("write %q to %s: %w", value, name, err)
	}
	return f.Close()
}

func openAt(dir *os.File, name string, flags int) (*os.File, error) {
	fd, err := unix.Openat(int(dir.Fd()), name, flags|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// restore writes the previous value back (if the cgroup still exists) and
// drops the record.
func (p *Policy) restore(rec record) error {
	if alive(rec) {
		if err := cgroup.Write(rec.CgroupPath, rec.File, rec.Previous); err != nil {
			return fmt.Errorf("detach: restore: %w", err)
		}
	}
	if err := os.Remove(p.path(rec.CgroupID)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("detach %s: %w", rec.CgroupPath, err)
	}
	return nil
}

// Detach implements policy.Policy; it works after the cgroup is gone.
// While dir exists, it restores the cgroup it names (by its id: one record
// read); once dir is gone, it finds the records with that path.
func (p *Policy) Detach(ctx context.Context, dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if id, err := cgroup.ID(abs); err == nil {
		return p.detachID(ctx, id, abs)
	}
	recs, _, err := p.all()
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range recs {
		if r.CgroupPath == abs {
			errs = append(errs, p.detachID(ctx, r.CgroupID, abs))
		}
	}
	return errors.Join(errs...)
}

// detachID restores one cgroup id under its lock, from its record as it is
// now.
func (p *Policy) detachID(ctx context.Context, id uint64, path string) error {
	unlock, err := p.lockID(ctx, id)
	if err != nil {
		return fmt.Errorf("detach %s: %w", path, err)
	}
	defer unlock()
	switch r, err := p.read(p.path(id)); {
	case err == nil:
		return p.restore(r)
	case errors.Is(err, fs.ErrNotExist):
		return nil
	default:
		// An unreadable record cannot be restored: drop it.
		p.log.Warn("dropping an unreadable native record", "cgroup", path, "err", err)
		if err := os.Remove(p.path(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("detach %s: %w", path, err)
		}
		return nil
	}
}

// DetachAll restores every recorded cgroup. It holds the whole record dir:
// it waits (bounded) for the attaches and detaches in progress and keeps
// new ones out until it is done.
func (p *Policy) DetachAll(ctx context.Context) error {
	unlock, err := p.lockAll(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	recs, bad, err := p.all()
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range recs {
		errs = append(errs, p.restore(r))
	}
	for _, b := range bad {
		errs = append(errs, os.Remove(b))
	}
	return errors.Join(errs...)
}

// List implements policy.Policy.
func (p *Policy) List(ctx context.Context) ([]policy.Link, error) {
	recs, _, err := p.all()
	if err != nil {
		return nil, err
	}
	out := make([]policy.Link, 0, len(recs))
	for _, r := range recs {
		out = append(out, linkOf(r, !alive(r)))
	}
	return out, nil
}

// Reconcile drops records of removed cgroups. It waits for no attach:
// each candidate's id is locked without waiting and checked again; a busy
// one is left for the next reconcile.
func (p *Policy) Reconcile(ctx context.Context) ([]policy.Link, error) {
	unlock, err := dirlock.LockShared(ctx, p.dir)
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
		unlockID, ok, err := dirlock.TryKey(p.dir, strconv.FormatUint(l.CgroupID, 10))
		if err != nil {
			errs = append(errs, err)
		}
		if !ok {
			continue // busy: an attach or detach of this id is in progress
		}
		// Still an orphan under its lock?
		if r, err := p.read(p.path(l.CgroupID)); err == nil && !alive(r) {
			if err := os.Remove(p.path(l.CgroupID)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			} else {
				removed = append(removed, l)
			}
		}
		unlockID()
	}
	return removed, errors.Join(errs...)
}

// Stats implements policy.Policy: the native policy keeps no counters.
func (p *Policy) Stats(ctx context.Context) (map[uint64]policy.Counters, error) {
	return map[uint64]policy.Counters{}, nil
}

// Close implements policy.Policy.
func (p *Policy) Close() error { return nil }

func linkOf(r record, orphan bool) policy.Link {
	return policy.Link{CgroupID: r.CgroupID, CgroupPath: r.CgroupPath, Priority: r.Priority, Mode: policy.ModeNative, Orphan: orphan}
}

func alive(r record) bool {
	id, err := cgroup.ID(r.CgroupPath)
	return err == nil && id == r.CgroupID
}

func (p *Policy) read(path string) (record, error) {
	var r record
	b, err := os.ReadFile(path)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("parse %s: %w", path, err)
	}
	return r, nil
}

func (p *Policy) write(r record) error {
	if err := jsonfile.Write(p.path(r.CgroupID), r); err != nil {
		return fmt.Errorf("record %s: %w", r.CgroupPath, err)
	}
	return nil
}

// all returns every readable record, sorted by cgroup id, and the paths of
// the record files it skipped (each logged): one corrupt file never hides
// the others (design §6).
func (p *Policy) all() ([]record, []string, error) {
	ents, err := os.ReadDir(p.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", p.dir, err)
	}
	var out []record
	var bad []string
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		path := filepath.Join(p.dir, e.Name())
		r, err := p.read(path)
		if err != nil {
			p.log.Warn("skipping an unreadable native record", "file", path, "err", err)
			bad = append(bad, path)
			continue
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CgroupID < out[j].CgroupID })
	return out, bad, nil
}

// Locks, as in the BPF policy (bpf/README.md, "Locks"): attach and detach
// hold the record dir shared and their cgroup id's lock exclusive, so
// processes (hook, plugin, CLI) and goroutines working on different
// cgroups never wait on each other; DetachAll holds the dir exclusive.
// Every wait ends with ctx, or after dirlock.DefaultTimeout.

func (p *Policy) lockID(ctx context.Context, id uint64) (func(), error) {
	return dirlock.LockKey(ctx, p.dir, strconv.FormatUint(id, 10))
}

func (p *Policy) lockAll(ctx context.Context) (func(), error) { return dirlock.LockContext(ctx, p.dir) }
