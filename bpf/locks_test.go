package bpf

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/agentcg/agentcg/internal/dirlock"
	"github.com/agentcg/agentcg/policy"
	"golang.org/x/sys/unix"
)

// lockFixture runs the loader's locking and record logic on the host: a
// "cgroup" is a plain folder with a memory.current file (its id is the
// folder's inode, as on cgroup2), and a "link" is a plain file at its pin.
// Linking a cgroup whose pin is still there fails with EBUSY, as the
// kernel refuses ops on a memcg that has some.
type lockFixture struct {
	p    *Policy
	root string

	mu      sync.Mutex
	block   map[uint64]chan struct{} // a link of this id waits, pinned, until closed
	entered chan uint64              // ids whose link is waiting
	seen    []string                 // record files read ("" for a listing)
}

func newLockFixture(t *testing.T) *lockFixture {
	t.Helper()
	root := t.TempDir()
	p, err := Load(Options{
		Config:    policy.Config{PinDir: filepath.Join(root, "pins")},
		RecordDir: filepath.Join(root, "records"),
		Logger:    slog.New(slog.DiscardHandler),
		Probe:     func() error { return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	f := &lockFixture{p: p, root: root, block: map[uint64]chan struct{}{}, entered: make(chan uint64, 8)}
	p.kern = kernel{
		cgroupID: func(d *os.File) (uint64, error) {
			var st unix.Stat_t
			err := unix.Fstat(int(d.Fd()), &st)
			return st.Ino, err
		},
		prepare: func(context.Context) error { return nil },
		link: func(ctx context.Context, dir *os.File, path string, prio policy.Priority, id uint64, pin string) error {
			if pinned(pin) {
				return fmt.Errorf("BPF_LINK_CREATE to cgroup %s: %w", path, unix.EBUSY)
			}
			if err := os.MkdirAll(p.linksDir(), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(pin, nil, 0o644); err != nil {
				return err
			}
			f.mu.Lock()
			ch := f.block[id]
			f.mu.Unlock()
			if ch != nil {
				f.entered <- id
				<-ch // a kernel call that does not return
			}
			return nil
		},
	}
	p.recs.seen = func(name string) {
		f.mu.Lock()
		f.seen = append(f.seen, name)
		f.mu.Unlock()
	}
	return f
}

func (f *lockFixture) cgroup(t *testing.T, name string) (string, uint64) {
	t.Helper()
	d := filepath.Join(f.root, "cg", name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "memory.current"), []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return d, inode(t, d)
}

// reads returns the record files read since the last call.
func (f *lockFixture) reads() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.seen
	f.seen = nil
	return out
}

func recName(id uint64) string { return strconv.FormatUint(id, 10) + ".json" }

// ended is a context that has already ended: every lock gets one attempt,
// so a call that would wait for another holder fails instead (no clock).
func ended() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// TestStuckAttachHoldsOnlyItsCgroup: while one cgroup's attach is stuck in
// the kernel (pinned, record not yet written), every other cgroup attaches,
// switches priority and detaches without waiting at all; the same cgroup,
// and detach --all, would wait; a reconcile neither waits nor takes the
// half-made attachment for an orphan.
func TestStuckAttachHoldsOnlyItsCgroup(t *testing.T) {
	f := newLockFixture(t)
	p := f.p
	a, aID := f.cgroup(t, "a")
	b, bID := f.cgroup(t, "b")
	release := make(chan struct{})
	f.block[aID] = release
	type result struct {
		l   policy.Link
		err error
	}
	stuck := make(chan result, 1)
	go func() {
		l, err := p.Attach(context.Background(), a, policy.High)
		stuck <- result{l, err}
	}()
	<-f.entered
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	finished := false
	defer func() { // on an early failure too: no goroutine outlives the test
		unblock()
		if !finished {
			<-stuck
		}
	}()

	if _, err := p.Attach(ended(), b, policy.Low); err != nil {
		t.Fatalf("attach of another cgroup while one is stuck: %v", err)
	}
	if _, err := p.Attach(ended(), b, policy.High); err != nil {
		t.Fatalf("priority switch of another cgroup while one is stuck: %v", err)
	}
	if rec, err := p.recs.get(bID); err != nil || rec.Priority != policy.High || !pinned(p.pinPath(bID)) {
		t.Fatalf("b after the switch: record %+v (%v), pinned %v", rec, err, pinned(p.pinPath(bID)))
	}
	if err := p.Detach(ended(), b); err != nil {
		t.Fatalf("detach of another cgroup while one is stuck: %v", err)
	}
	if pinned(p.pinPath(bID)) || pinned(p.recs.path(bID)) {
		t.Fatal("detach of b left its pin or record")
	}

	if _, err := p.Attach(ended(), a, policy.Low); !errors.Is(err, dirlock.ErrTimeout) {
		t.Errorf("second attach of the stuck cgroup: err = %v, want it to wait (ErrTimeout)", err)
	}
	if err := p.Detach(ended(), a); !errors.Is(err, dirlock.ErrTimeout) {
		t.Errorf("detach of the stuck cgroup: err = %v, want it to wait (ErrTimeout)", err)
	}
	if err := p.DetachAll(ended()); !errors.Is(err, dirlock.ErrTimeout) {
		t.Errorf("detach --all while an attach is in progress: err = %v, want it to wait (ErrTimeout)", err)
	}
	// a's pin is there without a record: List calls it an orphan, and the
	// reconcile must leave it to the attach that holds the id.
	removed, err := p.Reconcile(ended())
	if err != nil || len(removed) != 0 {
		t.Errorf("reconcile during the stuck attach: removed %+v, err %v; want nothing, no error", removed, err)
	}
	if !pinned(p.pinPath(aID)) {
		t.Fatal("reconcile removed the pin of an attach in progress")
	}

	unblock()
	r := <-stuck
	finished = true
	if r.err != nil || r.l.Priority != policy.High {
		t.Fatalf("the stuck attach, released: %+v, %v", r.l, r.err)
	}
	if rec, err := p.recs.get(aID); err != nil || rec.Priority != policy.High || !pinned(p.pinPath(aID)) {
		t.Fatalf("a after its attach: record %+v (%v), pinned %v", rec, err, pinned(p.pinPath(aID)))
	}
	if removed, err := p.Reconcile(context.Background()); err != nil || len(removed) != 0 {
		t.Errorf("reconcile after the attach: removed %+v, err %v", removed, err)
	}
	// No key lock file outlives its holder.
	ents, err := os.ReadDir(p.recs.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() != ".lock" && e.Name() != recName(aID) {
			t.Errorf("left in the record dir: %s", e.Name())
		}
	}
}

// TestAttachReadsOnlyItsRecord: attach, re-attach, priority switch and
// detach of a live cgroup read that cgroup's record and no other, and do
// not list the record dir, however many records (live, orphaned, corrupt)
// it holds: each is O(1) in the number of records. Orphans are left to
// Reconcile, which removes them and nothing else.
func TestAttachReadsOnlyItsRecord(t *testing.T) {
	ctx := context.Background()
	f := newLockFixture(t)
	p := f.p
	// Every folder exists before any is removed: the host's file system
	// may give a removed folder's inode (its "cgroup id") to the next one.
	c, cID := f.cgroup(t, "c")
	_, corruptID := f.cgroup(t, "corrupt")
	var live, dead []uint64
	var deadDirs []string
	for i := range 8 {
		d, id := f.cgroup(t, fmt.Sprintf("other%d", i))
		if _, err := p.Attach(ctx, d, []policy.Priority{policy.High, policy.Low}[i%2]); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			dead, deadDirs = append(dead, id), append(deadDirs, d)
		} else {
			live = append(live, id)
		}
	}
	for _, d := range deadDirs {
		if err := os.RemoveAll(d); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(p.recs.path(corruptID), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.pinPath(corruptID), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	const strayID = 999999999 // a pin without a record, of no cgroup
	if err := os.WriteFile(p.pinPath(strayID), nil, 0o644); err != nil {
		t.Fatal(err)
	}

	f.reads()
	for _, step := range []struct {
		name string
		run  func() error
	}{
		{"attach", func() error { _, err := p.Attach(ctx, c, policy.Low); return err }},
		{"attach again", func() error { _, err := p.Attach(ctx, c, policy.Low); return err }},
		{"switch priority", func() error { _, err := p.Attach(ctx, c, policy.High); return err }},
		{"detach", func() error { return p.Detach(ctx, c) }},
	} {
		if err := step.run(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if got := f.reads(); len(got) == 0 || slices.ContainsFunc(got, func(n string) bool { return n != recName(cID) }) {
			t.Errorf("%s read %q; want only %s", step.name, got, recName(cID))
		}
	}
	for _, id := range dead {
		if !pinned(p.recs.path(id)) || !pinned(p.pinPath(id)) {
			t.Errorf("an attach removed orphan %d: the sweep belongs to Reconcile", id)
		}
	}

	removed, err := p.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for _, l := range removed {
		got = append(got, l.CgroupID)
	}
	want := append(slices.Clone(dead), strayID)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("reconcile removed %v, want the dead cgroups and the stray pin %v", got, want)
	}
	for _, id := range dead {
		if pinned(p.recs.path(id)) || pinned(p.pinPath(id)) {
			t.Errorf("reconcile left orphan %d", id)
		}
	}
	for _, id := range append(slices.Clone(live), corruptID) {
		if !pinned(p.pinPath(id)) {
			t.Errorf("reconcile removed the pin of live cgroup %d", id)
		}
	}
}

// TestAttachReplacesAStalePinOfItsID: a pin without a readable record on
// the cgroup's own id (record lost, or corrupt) would make the kernel
// refuse the attach with EBUSY; the attach removes it first.
func TestAttachReplacesAStalePinOfItsID(t *testing.T) {
	ctx := context.Background()
	f := newLockFixture(t)
	p := f.p
	for _, corrupt := range []bool{false, true} {
		d, id := f.cgroup(t, fmt.Sprintf("stale-%v", corrupt))
		if err := os.MkdirAll(p.linksDir(), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p.pinPath(id), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if corrupt {
			if err := os.MkdirAll(p.recs.dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p.recs.path(id), []byte("{"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := p.Attach(ctx, d, policy.Low); err != nil {
			t.Fatalf("attach over a stale pin (corrupt record %v): %v", corrupt, err)
		}
		if rec, err := p.recs.get(id); err != nil || rec.Priority != policy.Low || rec.CgroupPath != d {
			t.Errorf("record after the attach (corrupt record %v): %+v, %v", corrupt, rec, err)
		}
	}
}

// TestDetachOfARemovedCgroupFindsItByPath: once the folder is gone, only
// the records know the id; Detach finds it by path.
func TestDetachOfARemovedCgroupFindsItByPath(t *testing.T) {
	ctx := context.Background()
	f := newLockFixture(t)
	p := f.p
	d, id := f.cgroup(t, "gone")
	other, otherID := f.cgroup(t, "other")
	for _, c := range []string{d, other} {
		if _, err := p.Attach(ctx, c, policy.High); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.RemoveAll(d); err != nil {
		t.Fatal(err)
	}
	if err := p.Detach(ctx, d); err != nil {
		t.Fatal(err)
	}
	if pinned(p.pinPath(id)) || pinned(p.recs.path(id)) {
		t.Error("detach of a removed cgroup left its pin or record")
	}
	if !pinned(p.pinPath(otherID)) || !pinned(p.recs.path(otherID)) {
		t.Error("detach of a removed cgroup took another one's attachment")
	}
}

// A node with only the OCI hook has no plugin reconciling: a detach of a
// removed cgroup (a poststop) also removes the other attachments whose
// cgroup is gone, and leaves live ones alone.
func TestDetachOfARemovedCgroupSweepsOtherOrphans(t *testing.T) {
	ctx := context.Background()
	f := newLockFixture(t)
	p := f.p
	gone, goneID := f.cgroup(t, "gone")
	lost, lostID := f.cgroup(t, "lost") // its poststop never ran
	live, liveID := f.cgroup(t, "live")
	for _, c := range []string{gone, lost, live} {
		if _, err := p.Attach(ctx, c, policy.Low); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []string{gone, lost} {
		if err := os.RemoveAll(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Detach(ctx, gone); err != nil {
		t.Fatal(err)
	}
	for _, id := range []uint64{goneID, lostID} {
		if pinned(p.pinPath(id)) || pinned(p.recs.path(id)) {
			t.Errorf("cgroup %d: pin or record left after the detach of a removed cgroup", id)
		}
	}
	if !pinned(p.pinPath(liveID)) || !pinned(p.recs.path(liveID)) {
		t.Error("the sweep took a live cgroup's attachment")
	}
}
