package bpf

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/agentcg/agentcg/internal/jsonfile"
	"github.com/agentcg/agentcg/policy"
	"golang.org/x/sys/unix"
)

// recordsFixture is a Policy over a pin dir and a record dir in plain
// folders: a "pin" is an ordinary file there, which unpin removes like a
// pin it cannot open as a link. Each of the two "cgroups" (plain folders,
// alive while they exist) has a pin; a has a valid record, b a corrupt one.
type recordsFixture struct {
	p      *Policy
	a, b   string // cgroup folders
	aID    uint64
	bID    uint64
	recDir string
}

func newRecordsFixture(t *testing.T) recordsFixture {
	t.Helper()
	root := t.TempDir()
	f := recordsFixture{a: filepath.Join(root, "a"), b: filepath.Join(root, "b"), recDir: filepath.Join(root, "records")}
	p, err := Load(Options{
		Config:    policy.Config{PinDir: filepath.Join(root, "pins")},
		RecordDir: f.recDir,
		Logger:    slog.New(slog.DiscardHandler),
		Probe:     func() error { return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	f.p = p
	for _, d := range []string{f.a, f.b, p.linksDir(), f.recDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f.aID, f.bID = inode(t, f.a), inode(t, f.b)
	for _, id := range []uint64{f.aID, f.bID} {
		if err := os.WriteFile(p.pinPath(id), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := jsonfile.Write(p.recs.path(f.aID), record{CgroupID: f.aID, CgroupPath: f.a, Priority: policy.Low, PinPath: p.pinPath(f.aID)}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.recs.path(f.bID), []byte(`{"cgroup_id": `), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestCorruptRecordIsSkipped: one unreadable record neither hides the
// others nor fails List, Reconcile or Detach, and its pin is never taken
// for an orphan (its cgroup may be alive).
func TestCorruptRecordIsSkipped(t *testing.T) {
	ctx := context.Background()
	f := newRecordsFixture(t)
	links, err := f.p.List(ctx)
	if err != nil {
		t.Fatalf("List with a corrupt record: %v", err)
	}
	byID := map[uint64]policy.Link{}
	for _, l := range links {
		byID[l.CgroupID] = l
	}
	if l, ok := byID[f.aID]; !ok || l.Orphan || l.CgroupPath != f.a {
		t.Errorf("the readable record: got %+v in %+v", l, links)
	}
	if l, ok := byID[f.bID]; !ok || l.Orphan {
		t.Errorf("the corrupt record's pin: want listed, not an orphan, got %+v in %+v", l, links)
	}
	removed, err := f.p.Reconcile(ctx)
	if err != nil || len(removed) != 0 {
		t.Errorf("Reconcile: removed %+v, err %v; want nothing removed", removed, err)
	}
	if !pinned(f.p.pinPath(f.bID)) {
		t.Fatal("Reconcile removed the pin of the corrupt record")
	}

	// Detach of the other cgroup works.
	if err := f.p.Detach(ctx, f.a); err != nil {
		t.Fatalf("Detach beside a corrupt record: %v", err)
	}
	if pinned(f.p.pinPath(f.aID)) || pinned(f.p.recs.path(f.aID)) {
		t.Error("Detach left the pin or the record of a")
	}
	// Detach by path of the corrupt record's cgroup finds it by id and
	// removes both the pin and the corrupt file.
	if err := f.p.Detach(ctx, f.b); err != nil {
		t.Fatalf("Detach of the corrupt record's cgroup: %v", err)
	}
	if pinned(f.p.pinPath(f.bID)) || pinned(f.p.recs.path(f.bID)) {
		t.Error("Detach left the pin or the corrupt record of b")
	}
}

// TestDetachAllRemovesCorruptRecords: detach --all leaves no record
// behind, unreadable ones included.
func TestDetachAllRemovesCorruptRecords(t *testing.T) {
	f := newRecordsFixture(t)
	if err := f.p.DetachAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(f.recDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() != ".lock" {
			t.Errorf("left in the record dir: %s", e.Name())
		}
	}
	if _, err := os.Stat(filepath.Join(f.p.cfg.PinDir, linksSubdir, pinPrefix+strconv.FormatUint(f.bID, 10))); !os.IsNotExist(err) {
		t.Errorf("pin of the corrupt record: %v", err)
	}
}

// TestDetachAllLeavesForeignPins: a pin dir shared with other tools (say,
// --pin-dir naming the bpffs root) loses only what agentcg pinned.
func TestDetachAllLeavesForeignPins(t *testing.T) {
	f := newRecordsFixture(t)
	pinDir := f.p.cfg.PinDir
	foreign := []string{filepath.Join(pinDir, "cilium_map"), filepath.Join(pinDir, mapsSubdir, "other_tool_map")}
	for _, p := range append(foreign, filepath.Join(pinDir, mapsSubdir, ctrsMapName), filepath.Join(pinDir, opsSubdir, "low-0123")) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.p.DetachAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, p := range foreign {
		if !pinned(p) {
			t.Errorf("DetachAll removed %s, which agentcg did not pin", p)
		}
	}
	for _, p := range []string{filepath.Join(pinDir, mapsSubdir, ctrsMapName), filepath.Join(pinDir, opsSubdir), filepath.Join(pinDir, linksSubdir)} {
		if pinned(p) {
			t.Errorf("DetachAll left %s", p)
		}
	}
}
