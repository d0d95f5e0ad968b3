package dirlock

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
