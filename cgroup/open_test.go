package cgroup

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestOpenBeneath(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "kubepods", "pod1", "c1"), 0o755))
	must(os.Symlink(outside, filepath.Join(root, "escape")))
	must(os.Symlink("kubepods", filepath.Join(root, "inner")))
	must(os.WriteFile(filepath.Join(root, "file"), nil, 0o644))

	tests := []struct {
		rel     string
		wantErr error // nil: opens
	}{
		{"kubepods/pod1/c1", nil},
		{"kubepods", nil},
		{"", ErrEscape},
		{".", ErrEscape},
		{"..", ErrEscape},
		{"kubepods/../kubepods/pod1", ErrEscape},
		{"/kubepods", ErrEscape},
		{"kubepods//pod1", ErrEscape},
		{"escape", ErrEscape},
		{"inner/pod1", ErrEscape}, // even a symlink that stays inside
		{"missing", os.ErrNotExist},
	}
	for _, tc := range tests {
		t.Run(tc.rel, func(t *testing.T) {
			f, err := OpenBeneath(root, tc.rel)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				id, err := FileID(f)
				want, _ := ID(filepath.Join(root, tc.rel))
				if err != nil || id != want || f.Name() != filepath.Join(root, tc.rel) {
					t.Fatalf("FileID = %d, %v (want %d); name %s", id, err, want, f.Name())
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("OpenBeneath(%q) = %v, want %v", tc.rel, err, tc.wantErr)
			}
		})
	}
}

// The fallback walk must refuse the same things as openat2.
func TestOpenWalk(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(t.TempDir(), filepath.Join(root, "a", "s")); err != nil {
		t.Fatal(err)
	}
	rootf, err := os.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer rootf.Close()
	f, err := openWalk(rootf, "a/b", filepath.Join(root, "a/b"))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := openWalk(rootf, "a/s", filepath.Join(root, "a/s")); !errors.Is(err, ErrEscape) {
		t.Fatalf("symlink: %v", err)
	}
}
