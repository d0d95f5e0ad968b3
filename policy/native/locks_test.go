package native

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/agentcg/agentcg/internal/dirlock"
	"github.com/agentcg/agentcg/policy"
)

// ended is a context that has already ended: every lock gets one attempt,
// so a call that would wait for another holder fails instead (no clock).
func ended() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// TestStuckWriteHoldsOnlyItsCgroup: cgroup a's memory.high is a FIFO, so
// a's attach blocks in the kernel (as a write that waits on reclaim would)
// while it holds a's lock. Meanwhile b attaches and detaches without
// waiting at all; a second attach of a, and DetachAll, would wait; a
// reconcile does not.
func TestStuckWriteHoldsOnlyItsCgroup(t *testing.T) {
	p, err := New(Options{Config: policy.Config{NativeLowBytes: 1000, NativeHighBytes: 2000}, RecordDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	a, b := fakeCgroup(t, "0", "max"), fakeCgroup(t, "0", "max")
	fifo := filepath.Join(a, "memory.high")
	if err := os.Remove(fifo); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	stuck := make(chan error, 1)
	go func() {
		_, err := p.Attach(context.Background(), a, policy.Low)
		stuck <- err
	}()
	// This open returns once a's attach has opened memory.high to read the
	// previous value, under a's lock; it waits there until w is closed.
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}

	// Errors, not Fatal, below: a must be released whatever happens.
	if _, err := p.Attach(ended(), b, policy.Low); err != nil {
		t.Errorf("attach of another cgroup while one is stuck: %v", err)
	} else if got := strings.TrimSpace(read(t, b, "memory.high")); got != "2000" {
		t.Errorf("b's memory.high = %q, want 2000", got)
	}
	if err := p.Detach(ended(), b); err != nil {
		t.Errorf("detach of another cgroup while one is stuck: %v", err)
	} else if got := strings.TrimSpace(read(t, b, "memory.high")); got != "max" {
		t.Errorf("b's memory.high after detach = %q, want max", got)
	}
	if _, err := p.Attach(ended(), a, policy.High); !errors.Is(err, dirlock.ErrTimeout) {
		t.Errorf("second attach of the stuck cgroup: err = %v, want it to wait (ErrTimeout)", err)
	}
	if err := p.DetachAll(ended()); !errors.Is(err, dirlock.ErrTimeout) {
		t.Errorf("DetachAll during an attach: err = %v, want it to wait (ErrTimeout)", err)
	}
	if removed, err := p.Reconcile(ended()); err != nil || len(removed) != 0 {
		t.Errorf("reconcile during the stuck attach: removed %+v, err %v", removed, err)
	}

	// Release a: its previous value, then read what it writes.
	if _, err := w.WriteString("max\n"); err != nil {
		t.Fatal(err)
	}
	w.Close()
	r, err := os.Open(fifo) // returns once a's attach opens it to write
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || string(got) != "2000" {
		t.Errorf("a's attach wrote %q (%v), want 2000", got, err)
	}
	if err := <-stuck; err != nil {
		t.Fatalf("a's attach, released: %v", err)
	}
	if links, err := p.List(context.Background()); err != nil || len(links) != 1 || links[0].CgroupPath != a {
		t.Errorf("links after: %+v, %v; want a only", links, err)
	}
}

// countHandler counts the records the policy logs as unreadable.
type countHandler struct {
	slog.Handler
	mu  *sync.Mutex
	bad *int
}

func (h countHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h countHandler) Handle(ctx context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "unreadable") {
		h.mu.Lock()
		*h.bad++
		h.mu.Unlock()
	}
	return nil
}

// TestAttachReadsOnlyItsRecord: every other record file is unreadable (a
// directory), and the policy logs each unreadable record it reads: attach,
// re-attach, priority switch and detach of a live cgroup log none, so they
// read no record but their own and do not list the folder.
func TestAttachReadsOnlyItsRecord(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	var mu sync.Mutex
	bad := 0
	p, err := New(Options{Config: policy.Config{NativeLowBytes: 1000, NativeHighBytes: 2000}, RecordDir: dir,
		Logger: slog.New(countHandler{Handler: slog.DiscardHandler, mu: &mu, bad: &bad})})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := os.Mkdir(filepath.Join(dir, fmt.Sprintf("%d.json", 1000+i)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	c := fakeCgroup(t, "0", "max")
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
		mu.Lock()
		n := bad
		mu.Unlock()
		if n != 0 {
			t.Fatalf("%s read %d other (unreadable) records; want none", step.name, n)
		}
	}
	// The check can fail: a listing does log them.
	if _, err := p.List(ctx); err != nil {
		t.Fatal(err)
	}
	if bad != 5 {
		t.Errorf("List logged %d unreadable records, want 5", bad)
	}
}
