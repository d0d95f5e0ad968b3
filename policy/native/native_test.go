package native

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/agentcg/agentcg/policy"
)

// A plain directory with memory.low/memory.high files stands in for a
// cgroup: the policy only reads and writes those files.
func fakeCgroup(t *testing.T, low, high string) string {
	t.Helper()
	d := t.TempDir()
	os.WriteFile(filepath.Join(d, "memory.low"), []byte(low+"\n"), 0o644)
	os.WriteFile(filepath.Join(d, "memory.high"), []byte(high+"\n"), 0o644)
	return d
}

func read(t *testing.T, dir, f string) string {
	b, err := os.ReadFile(filepath.Join(dir, f))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestAttachRestore(t *testing.T) {
	ctx := context.Background()
	p, err := New(Options{Config: policy.Config{NativeLowBytes: 1000, NativeHighBytes: 2000}, RecordDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		prio       policy.Priority
		file, want string
	}{
		{policy.High, "memory.low", "1000"},
		{policy.Low, "memory.high", "2000"},
	} {
		d := fakeCgroup(t, "7", "max")
		before := read(t, d, tc.file)
		if _, err := p.Attach(ctx, d, tc.prio); err != nil {
			t.Fatal(err)
		}
		if got := read(t, d, tc.file); got != tc.want {
			t.Errorf("%s: %s = %q, want %q", tc.prio, tc.file, got, tc.want)
		}
		if _, err := p.Attach(ctx, d, tc.prio); err != nil { // idempotent
			t.Fatal(err)
		}
		if l, _ := p.List(ctx); len(l) != 1 || l[0].Priority != tc.prio || l[0].Orphan {
			t.Errorf("list: %+v", l)
		}
		if err := p.Detach(ctx, d); err != nil {
			t.Fatal(err)
		}
		if got := read(t, d, tc.file); got+"\n" != before && got != before {
			t.Errorf("%s: %s restored to %q, want %q", tc.prio, tc.file, got, before)
		}
		if l, _ := p.List(ctx); len(l) != 0 {
			t.Errorf("list after detach: %+v", l)
		}
	}
}

func TestDetachAfterRemoval(t *testing.T) {
	ctx := context.Background()
	p, _ := New(Options{RecordDir: t.TempDir()})
	d := fakeCgroup(t, "0", "max")
	if _, err := p.Attach(ctx, d, policy.Low); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(d)
	if l, _ := p.List(ctx); len(l) != 1 || !l[0].Orphan {
		t.Fatalf("list: %+v", l)
	}
	if err := p.Detach(ctx, d); err != nil {
		t.Fatal(err)
	}
	if l, _ := p.List(ctx); len(l) != 0 {
		t.Errorf("list after detach: %+v", l)
	}
}

// AttachDir writes through the descriptor the caller opened: a directory
// swapped in at the same path after the open is left alone.
func TestAttachDirUsesTheOpenedDirectory(t *testing.T) {
	ctx := context.Background()
	p, err := New(Options{Config: policy.Config{NativeLowBytes: 1000, NativeHighBytes: 2000}, RecordDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	d := fakeCgroup(t, "7", "max")
	f, err := os.Open(d)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	moved := d + "-moved"
	if err := os.Rename(d, moved); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(moved) })
	if err := os.Mkdir(d, 0o755); err != nil { // the swapped-in directory
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(d, "memory.low"), []byte("5\n"), 0o644)
	l, err := p.AttachDir(ctx, f, d, policy.High)
	if err != nil {
		t.Fatal(err)
	}
	if got := read(t, moved, "memory.low"); got != "1000" {
		t.Errorf("opened directory: memory.low = %q, want 1000", got)
	}
	if got := read(t, d, "memory.low"); got != "5\n" {
		t.Errorf("swapped-in directory: memory.low = %q, want it untouched", got)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(moved, &st); err != nil {
		t.Fatal(err)
	}
	if l.CgroupID != st.Ino {
		t.Errorf("link cgroup id %d, want the opened directory's inode %d", l.CgroupID, st.Ino)
	}
}

func TestAttachDirRefusesAFile(t *testing.T) {
	p, _ := New(Options{RecordDir: t.TempDir()})
	d := fakeCgroup(t, "0", "max")
	f, err := os.Open(filepath.Join(d, "memory.low"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := p.AttachDir(context.Background(), f, d, policy.High); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("AttachDir on a file: %v, want 'not a directory'", err)
	}
}

// TestCorruptRecordIsSkipped: one unreadable record neither fails List
// nor stops another cgroup's Detach from restoring its value; Detach of the
// corrupt record's own cgroup drops the file.
func TestCorruptRecordIsSkipped(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	p, err := New(Options{Config: policy.Config{NativeLowBytes: 1000}, RecordDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	good, bad := fakeCgroup(t, "7", "max"), fakeCgroup(t, "7", "max")
	if _, err := p.Attach(ctx, good, policy.High); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(bad, &st); err != nil {
		t.Fatal(err)
	}
	corrupt := p.path(st.Ino)
	if err := os.WriteFile(corrupt, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if l, err := p.List(ctx); err != nil || len(l) != 1 || l[0].CgroupPath != good {
		t.Fatalf("List beside a corrupt record: %+v, %v", l, err)
	}
	if err := p.Detach(ctx, good); err != nil {
		t.Fatalf("Detach beside a corrupt record: %v", err)
	}
	if got := read(t, good, "memory.low"); strings.TrimSpace(got) != "7" {
		t.Errorf("memory.low after detach = %q, want 7", got)
	}
	if err := p.Detach(ctx, bad); err != nil {
		t.Fatalf("Detach of the corrupt record's cgroup: %v", err)
	}
	if _, err := os.Stat(corrupt); !os.IsNotExist(err) {
		t.Errorf("corrupt record still there: %v", err)
	}
}
