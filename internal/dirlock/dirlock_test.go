package dirlock

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestLockExcludesUntilUnlocked(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	unlock, err := Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	// While held, a second taker with an already-ended context fails with
	// ErrTimeout instead of waiting (no clock involved).
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if u, err := LockContext(ctx, dir); !errors.Is(err, ErrTimeout) {
		if u != nil {
			u()
		}
		t.Fatalf("second LockContext while held: err = %v, want ErrTimeout", err)
	}
	got := make(chan func(), 1)
	go func() {
		u, err := Lock(dir)
		if err != nil {
			t.Error(err)
			close(got)
			return
		}
		got <- u
	}()
	unlock()
	if u := <-got; u != nil {
		u()
	}
}

func TestLockErrorNamesPath(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dir := filepath.Join(t.TempDir(), "s")
	u, err := Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer u()
	_, err = LockContext(ctx, dir)
	if err == nil || !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), filepath.Join(dir, ".lock")) {
		t.Fatalf("err = %v", err)
	}
}

// A caller's deadline later than DefaultTimeout is cut to it; an earlier
// one is kept (deadline arithmetic only, no waiting).
func TestBound(t *testing.T) {
	long, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	short, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	shortDL, _ := short.Deadline()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		keep bool // the caller's deadline stays
	}{
		{"none", context.Background(), false},
		{"later", long, false},
		{"earlier", short, true},
	} {
		ctx, cancel := bound(tc.ctx)
		dl, ok := ctx.Deadline()
		cancel()
		if tc.keep && !dl.Equal(shortDL) {
			t.Errorf("%s: deadline %v, want the caller's %v", tc.name, dl, shortDL)
		}
		if limit := time.Now().Add(DefaultTimeout); !ok || dl.After(limit) {
			t.Errorf("%s: deadline %v (set %v), want at most %v", tc.name, dl, ok, limit)
		}
	}
}

// done is a context that has already ended: a lock call gets one attempt
// and never waits, so "would it block?" is answered without a clock.
func done() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

func TestKeysAndShared(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	a, err := LockKey(done(), dir, "1")
	if err != nil {
		t.Fatal(err)
	}
	// Another key, and shared holders, never wait for a key holder.
	b, err := LockKey(done(), dir, "2")
	if err != nil {
		t.Fatalf("key 2 while key 1 is held: %v", err)
	}
	s, err := LockShared(done(), dir)
	if err != nil {
		t.Fatalf("shared while keys are held: %v", err)
	}
	// The same key waits.
	if u, err := LockKey(done(), dir, "1"); !errors.Is(err, ErrTimeout) {
		if u != nil {
			u()
		}
		t.Fatalf("key 1 twice: err = %v, want ErrTimeout", err)
	}
	if u, ok, err := TryKey(dir, "1"); ok || err != nil {
		if u != nil {
			u()
		}
		t.Fatalf("TryKey of a held key: ok %v, err %v", ok, err)
	}
	// The folder's exclusive lock waits for every key and shared holder.
	for _, release := range []func(){a, b} {
		if u, err := LockContext(done(), dir); !errors.Is(err, ErrTimeout) {
			if u != nil {
				u()
			}
			t.Fatalf("exclusive while held: err = %v, want ErrTimeout", err)
		}
		release()
	}
	if u, err := LockContext(done(), dir); !errors.Is(err, ErrTimeout) {
		if u != nil {
			u()
		}
		t.Fatalf("exclusive while a shared holder remains: err = %v, want ErrTimeout", err)
	}
	s()
	x, err := LockContext(done(), dir)
	if err != nil {
		t.Fatalf("exclusive once all are released: %v", err)
	}
	// ... and keeps key takers out.
	if u, err := LockKey(done(), dir, "3"); !errors.Is(err, ErrTimeout) {
		if u != nil {
			u()
		}
		t.Fatalf("key under the exclusive lock: err = %v, want ErrTimeout", err)
	}
	x()
	// Released keys leave no files.
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() != ".lock" {
			t.Errorf("left in %s: %s", dir, e.Name())
		}
	}
	u, ok, err := TryKey(dir, "1")
	if !ok || err != nil {
		t.Fatalf("TryKey of a free key: ok %v, err %v", ok, err)
	}
	u()
	for _, bad := range []string{"", "a/b", "..", "."} {
		if _, err := LockKey(done(), dir, bad); err == nil {
			t.Errorf("key %q accepted", bad)
		}
	}
}

// A taker that locked a key file its previous holder removed (it opened it
// before the removal) must not count as holding the key: it takes the
// file now at the path.
func TestKeyFileRemovedUnderATaker(t *testing.T) {
	dir := t.TempDir()
	p := keyPath(dir, "7")
	stale, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer stale.Close()
	if err := os.Remove(p); err != nil { // as the previous holder's unlock does
		t.Fatal(err)
	}
	if current(stale, p) {
		t.Fatal("current: a removed file counts as the one at the path")
	}
	u, err := lockFile(done(), p, unix.LOCK_EX, true)
	if err != nil {
		t.Fatal(err)
	}
	defer u()
	f, err := os.Open(p)
	if err != nil {
		t.Fatalf("the lock holds no file at %s: %v", p, err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Fatalf("the file at the path is not the locked one: flock = %v", err)
	}
}
