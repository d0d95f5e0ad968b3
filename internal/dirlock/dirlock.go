// Package dirlock serialises processes (the hook, the plugin, the CLI) that
// share a state folder, with flocks under the folder. Every wait is
// bounded: a holder that hangs makes the others fail with an error that
// names the folder, never hang behind it.
//
// A folder whose entries are independent (one file per key) is locked per
// key: LockKey takes the folder's lock shared and the key's own lock
// exclusive, so holders of different keys never wait on each other, while
// LockContext (exclusive on the folder) waits for every key holder and
// keeps new ones out.
package dirlock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
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
// The returned func releases the lock. A ctx that has already ended gets
// one attempt, so it never waits.
func LockContext(ctx context.Context, dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return LockFile(ctx, filepath.Join(dir, ".lock"))
}

// LockShared takes the folder's lock shared: any number of shared holders
// at once, none while LockContext holds it. Same bounds as LockContext.
func LockShared(ctx context.Context, dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	ctx, cancel := bound(ctx)
	defer cancel()
	return lockFile(ctx, filepath.Join(dir, ".lock"), unix.LOCK_SH, false)
}

// LockKey takes the folder's lock shared (as LockShared) and then key's own
// lock, <dir>/.<key>.lock, exclusive: it waits only for a holder of the
// same key, or for a LockContext holder. Both waits together are bounded
// as in LockContext. The key's lock file is removed on unlock, so keys
// that come and go (cgroup ids) leave no files behind.
func LockKey(ctx context.Context, dir, key string) (unlock func(), err error) {
	if err := validKey(key); err != nil {
		return nil, err
	}
	ctx, cancel := bound(ctx)
	defer cancel()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	unlockDir, err := lockFile(ctx, filepath.Join(dir, ".lock"), unix.LOCK_SH, false)
	if err != nil {
		return nil, err
	}
	unlockKey, err := lockFile(ctx, keyPath(dir, key), unix.LOCK_EX, true)
	if err != nil {
		unlockDir()
		return nil, err
	}
	return func() { unlockKey(); unlockDir() }, nil
}

// TryKey takes key's own lock exclusive without waiting, for a caller that
// already holds the folder's lock (LockShared or LockContext). ok is false
// when another process or goroutine holds the key.
func TryKey(dir, key string) (unlock func(), ok bool, err error) {
	if err := validKey(key); err != nil {
		return nil, false, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // one attempt, no wait
	unlock, err = lockFile(ctx, keyPath(dir, key), unix.LOCK_EX, true)
	if errors.Is(err, ErrTimeout) {
		return nil, false, nil
	}
	return unlock, err == nil, err
}

func keyPath(dir, key string) string { return filepath.Join(dir, "."+key+".lock") }

func validKey(key string) error {
	if key == "" || strings.ContainsAny(key, "/\x00") || key == "." || key == ".." {
		return fmt.Errorf("lock key %q: not a file name", key)
	}
	return nil
}

// LockFile takes an exclusive flock on the file p (created if needed) and
// gives up when ctx ends or after DefaultTimeout, whichever comes first: a
// caller's longer deadline (the plugin's 60 s work bound) never turns a
// stuck holder into a longer wait.
func LockFile(ctx context.Context, p string) (unlock func(), err error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	return lockFile(ctx, p, unix.LOCK_EX, false)
}

// lockFile takes a flock of kind how (LOCK_EX or LOCK_SH) on p until ctx
// ends. With removable, unlock removes p (before releasing it), and a
// taker that finds its lock on a file removed meanwhile (it opened p before
// the previous holder removed it) takes the current one instead.
func lockFile(ctx context.Context, p string, how int, removable bool) (unlock func(), err error) {
	for {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return nil, fmt.Errorf("lock %s: %w", p, err)
		}
		if err := flock(ctx, f, how); err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", p, err)
		}
		if !removable {
			return func() { f.Close() }, nil
		}
		if current(f, p) {
			return func() { os.Remove(p); f.Close() }, nil
		}
		f.Close()
	}
}

// flock polls with LOCK_NB: a blocking flock cannot be interrupted, and a
// goroutine stuck in it would hold the lock later for nobody. It tries once
// before it looks at ctx.
func flock(ctx context.Context, f *os.File, how int) error {
	wait := time.Millisecond
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w: %w", ErrTimeout, context.Cause(ctx))
		case <-t.C:
		}
		wait = min(wait*2, 50*time.Millisecond)
	}
}

// current reports whether f is still the file at p.
func current(f *os.File, p string) bool {
	var a, b unix.Stat_t
	return unix.Fstat(int(f.Fd()), &a) == nil && unix.Stat(p, &b) == nil && a.Dev == b.Dev && a.Ino == b.Ino
}

// bound limits ctx to DefaultTimeout from now (an earlier deadline stays).
func bound(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, DefaultTimeout)
}
