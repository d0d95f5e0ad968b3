package plugin_test

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentcg/agentcg/enroll"
	"github.com/agentcg/agentcg/enroll/enrolltest"
	"github.com/agentcg/agentcg/plugin"
	"github.com/agentcg/agentcg/policy"
	"github.com/containerd/nri/pkg/adaptation"
	"github.com/containerd/nri/pkg/api"
)

func newRuntime(t *testing.T, dir string) *adaptation.Adaptation {
	t.Helper()
	syncFn := func(ctx context.Context, cb adaptation.SyncCB) error {
		_, err := cb(ctx, nil, nil)
		return err
	}
	updateFn := func(context.Context, []*api.ContainerUpdate) ([]*api.ContainerUpdate, error) { return nil, nil }
	rt, err := adaptation.New("mock", "0.0", syncFn, updateFn,
		adaptation.WithPluginPath(filepath.Join(dir, "plugins")),
		adaptation.WithPluginConfigPath(filepath.Join(dir, "conf.d")),
		adaptation.WithSocketPath(filepath.Join(dir, "nri.sock")))
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(); err != nil {
		t.Fatal(err)
	}
	return rt
}

// When the runtime goes away (dropped plugin, containerd restart), Run
// registers again by itself, and the status file counts the reconnect.
func TestRunReconnects(t *testing.T) {
	dir, err := os.MkdirTemp("", "nri") // unix socket paths are short
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	tr, err := enrolltest.NewTree(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := enroll.DefaultConfig()
	cfg.CgroupRoot, cfg.ProcRoot, cfg.StateDir = tr.CgroupRoot, tr.ProcRoot, filepath.Join(t.TempDir(), "state")
	en, err := enroll.New(cfg, enrolltest.New(policy.ModeBPF), nil)
	if err != nil {
		t.Fatal(err)
	}
	status := plugin.NewStatusFile(plugin.StatusPath(cfg.StateDir), "test", "bpf", nil)
	p := plugin.New(en, plugin.Options{Log: slog.New(slog.DiscardHandler), Status: status})

	rt := newRuntime(t, dir)
	defer rt.Stop()
	conns := make(chan net.Conn, 10)
	dial := func(path string) (net.Conn, error) {
		c, err := net.Dial("unix", path)
		if err == nil {
			conns <- c
		}
		return c, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- p.Run(ctx, plugin.RunOptions{Name: "agentcg", Idx: "10", Socket: filepath.Join(dir, "nri.sock"), Dialer: dial,
			MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	}()
	connected := func() bool { c, _ := p.Connected(); return c }
	waitFor(t, "first connection", connected)
	(<-conns).Close() // what a runtime restart does to the connection
	select {
	case <-conns: // dialled again
	case <-time.After(30 * time.Second):
		t.Fatal("no reconnection attempt")
	}
	waitFor(t, "reconnection", func() bool {
		st, err := plugin.ReadStatus(plugin.StatusPath(cfg.StateDir))
		return err == nil && st.Reconnects == 1 && connected()
	})
	st, err := plugin.ReadStatus(plugin.StatusPath(cfg.StateDir))
	if err != nil || !st.Connected || st.Reconnects != 1 {
		t.Fatalf("status %+v, %v", st, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v after cancel", err)
	}
}
