package plugin

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"
)

// The NRI stub can block for ever between registering and being configured
// (containerd/nri#298). runAttempt abandons such an attempt when its
// watchdog fires or ctx ends, and never one that was configured. The
// watchdog is a channel the test fires, so nothing here depends on time.
func TestRunAttemptAbandonsUnconfigured(t *testing.T) {
	stuck := make(chan struct{})
	t.Cleanup(func() { close(stuck) })
	blockForever := func(context.Context) error { <-stuck; return nil }
	tests := []struct {
		name      string
		configure bool // run calls Configure first
		fire      bool // the watchdog fires (else ctx ends)
		wantErr   error
		hangUp    bool
	}{
		{"stuck, watchdog", false, true, errConfigureTimeout, true},
		{"stuck, shutdown", false, false, errConfigureTimeout, true},
		{"configured, watchdog then shutdown", true, true, context.Canceled, false},
		{"configured, shutdown", true, false, context.Canceled, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &Plugin{log: slog.New(slog.DiscardHandler)}
			configured := make(chan struct{})
			run := blockForever
			if tc.configure {
				run = func(ctx context.Context) error {
					p.Configure(ctx, "", "mock", "0")
					close(configured)
					<-ctx.Done()
					return ctx.Err()
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			expired := make(chan time.Time)
			hungUp := false
			res := make(chan error, 1)
			go func() { res <- p.runAttempt(ctx, run, expired, func() { hungUp = true }) }()
			if tc.configure {
				<-configured
			}
			if tc.fire {
				expired <- time.Time{} // unbuffered: runAttempt took it
			}
			if tc.configure || !tc.fire {
				cancel()
			}
			if err := <-res; !errors.Is(err, tc.wantErr) || hungUp != tc.hangUp {
				t.Fatalf("runAttempt = %v, hung up %v; want %v, %v", err, hungUp, tc.wantErr, tc.hangUp)
			}
		})
	}
}
