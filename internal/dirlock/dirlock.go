// Package dirlock serialises processes (the hook, the plugin, the CLI) that
// share a state folder, with an exclusive flock on <dir>/.lock. Every wait
// is bounded: a holder that hangs makes the others fail with an error that
// names the folder, never hang behind it.
package dirlock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultTimeout bounds Lock. Holders keep the lock for file operations
// only (milliseconds), so a wait this long means a holder is stuck.
const DefaultTimeout = 10 * time.Second

// ErrTimeout is returned (wrapped, with the path) when the lock was not
// obtained in time.
var ErrTimeout = errors.New("timed out waiting for the state lock")

// Lock is LockContext bounded by DefaultTimeout.
func Lock(dir string) (unlock func(), err error) {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	return LockContext(ctx, dir)
}

// LockContext takes the folder's lock, creating the folder if needed, and
// gives up when ctx ends or after DefaultTimeout, whichever comes first.
// The returned func releases the lock.
func LockContext(ctx context.Context, dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return LockFile(ctx, filepath.Join(dir, ".lock"))
}

// LockFile takes an exclusive flock on the file p (created if needed) and
// gives up when ctx ends or after DefaultTimeout, whichever comes first: a
// caller's longer deadline (the plugin's 60 s work bound) never turns a
// stuck holder into a longer wait.
func LockFile(ctx context.Context, p string) (unlock func(), err error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	// Poll with LOCK_NB: a blocking flock cannot be interrupted, and a
	// goroutine stuck in it would hold the lock later for nobody.
	wait := time.Millisecond
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", p, err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			f.Close()
			return nil, fmt.Errorf("lock %s: %w: %w", p, ErrTimeout, context.Cause(ctx))
		case <-t.C:
		}
		wait = min(wait*2, 50*time.Millisecond)
	}
}

// bound limits ctx to DefaultTimeout from now (an earlier deadline stays).
func bound(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, DefaultTimeout)
}
