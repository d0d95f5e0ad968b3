package run

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/agentcg/agentcg/bpf"
	"github.com/agentcg/agentcg/enroll"
	"github.com/agentcg/agentcg/experiment/config"
	"github.com/agentcg/agentcg/experiment/results"
	"github.com/agentcg/agentcg/plugin"
	"github.com/agentcg/agentcg/policy"
)

// Enforcer is the BPF arm's front door: it makes the runtime's agentcg
// plugin (containerd) or hook (docker) apply a point's knobs, and reads
// back links and counters.
type Enforcer interface {
	// Prepare applies p's knobs to the next containers; logDir receives logs.
	Prepare(ctx context.Context, p config.Point, logDir string) error
	// Done undoes Prepare (stops a plugin it started).
	Done(ctx context.Context) error
	Links(ctx context.Context) ([]policy.Link, error)
	Stats(ctx context.Context) (map[uint64]policy.Counters, error)
	// DetachAll removes every pin (clean state between runs).
	DetachAll(ctx context.Context) error
	// Close restores whatever the enforcer changed on the machine.
	Close() error
}

// BPFEnforcer drives the real plugin or hook over the BPF policy.
type BPFEnforcer struct {
	Runtime    string // docker or containerd
	PluginPath string // agentcg-nri binary (containerd)
	ConfigPath string // config the hook reads (docker): enroll.DefaultConfigPath
	Base       policy.Config
	Log        *slog.Logger

	pol       *bpf.Policy
	plugin    *exec.Cmd
	pluginErr chan error
	backup    []byte
	backedUp  bool
	hadConfig bool
}

// NewBPFEnforcer probes the kernel; it fails with bpf's
// MissingFeatureError on kernels without memcg_bpf_ops.
func NewBPFEnforcer(e BPFEnforcer) (*BPFEnforcer, error) {
	p, err := bpf.Load(bpf.Options{Config: e.Base, Logger: e.Log})
	if err != nil {
		return nil, err
	}
	e.pol = p
	if e.ConfigPath == "" {
		e.ConfigPath = enroll.DefaultConfigPath
	}
	return &e, nil
}

// agentcgConfig is the enroll config for one point: every container of the
// experiment may claim high, and a failed attach refuses the container so
// that a BPF run never silently runs without the policy.
func agentcgConfig(p config.Point, base policy.Config, hookLog string) enroll.Config {
	c := enroll.DefaultConfig()
	c.High.AllowAll = true
	c.Mode = policy.ModeBPF
	c.FailMode = enroll.FailClosed
	pc := p.Policy
	pc.PinDir = base.WithDefaults().PinDir
	// Growth is measured in the scaled replay's bytes.
	pc.HighGrowthBytes = uint64(float64(pc.HighGrowthBytes) * p.MemScale)
	c.Policy = pc
	c.HookLog = hookLog
	return c
}

func (e *BPFEnforcer) Prepare(ctx context.Context, p config.Point, logDir string) error {
	cfg := agentcgConfig(p, e.Base, filepath.Join(logDir, "hook.log"))
	switch e.Runtime {
	case "docker":
		if !e.backedUp {
			b, err := os.ReadFile(e.ConfigPath)
			e.hadConfig = err == nil
			e.backup, e.backedUp = b, true
		}
		return results.WriteJSON(e.ConfigPath, cfg)
	case "containerd":
		path := filepath.Join(logDir, "agentcg-nri.yaml")
		if err := results.WriteJSON(path, cfg); err != nil {
			return err
		}
		if pid := runningPlugin(); pid != 0 {
			return fmt.Errorf("agentcg-nri already runs (pid %d): stop it so the experiment can start one per BPF point with that point's knobs", pid)
		}
		// agentcg-nri locks a file in its state dir and does not create it.
		if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
			return fmt.Errorf("agentcg-nri state dir: %w", err)
		}
		var err error
		// Under a loaded TCG guest the plugin's NRI registration can time
		// out; it then exits, and one more start usually makes it.
		for attempt := range 2 {
			if err = e.startPlugin(ctx, path, cfg.StateDir, filepath.Join(logDir, fmt.Sprintf("agentcg-nri-%d.log", attempt))); err == nil || ctx.Err() != nil {
				return err
			}
			if e.Log != nil {
				e.Log.Warn("agentcg-nri did not connect; starting it again", "err", err)
			}
		}
		return err
	}
	return fmt.Errorf("runtime %q", e.Runtime)
}

// pluginConnectTimeout bounds the wait for agentcg-nri to register with
// containerd and synchronise.
const pluginConnectTimeout = 90 * time.Second

// startPlugin starts agentcg-nri and waits until its status file says it
// is connected: containers created before that would start without it.
func (e *BPFEnforcer) startPlugin(ctx context.Context, config, stateDir, logPath string) error {
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	cmd := exec.Command(e.PluginPath, "--config", config)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", e.PluginPath, err)
	}
	e.plugin, e.pluginErr = cmd, make(chan error, 1)
	go func() { e.pluginErr <- cmd.Wait(); logf.Close() }()
	status := plugin.StatusPath(stateDir)
	deadline := time.After(pluginConnectTimeout)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		if st, err := plugin.ReadStatus(status); err == nil && st.Pid == cmd.Process.Pid && st.Connected {
			return nil
		}
		select {
		case err := <-e.pluginErr:
			e.plugin = nil
			return fmt.Errorf("agentcg-nri exited before it connected (%v): see %s", err, logPath)
		case <-deadline:
			e.Done(context.WithoutCancel(ctx))
			return fmt.Errorf("agentcg-nri did not connect to containerd within %v: see %s", pluginConnectTimeout, logPath)
		case <-ctx.Done():
			e.Done(context.WithoutCancel(ctx))
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func (e *BPFEnforcer) Done(ctx context.Context) error {
	if e.plugin == nil {
		return nil
	}
	e.plugin.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.pluginErr:
	case <-time.After(10 * time.Second):
		e.plugin.Process.Kill()
		<-e.pluginErr
	}
	e.plugin = nil
	return nil
}

func (e *BPFEnforcer) Links(ctx context.Context) ([]policy.Link, error) { return e.pol.List(ctx) }
func (e *BPFEnforcer) Stats(ctx context.Context) (map[uint64]policy.Counters, error) {
	return e.pol.Stats(ctx)
}
func (e *BPFEnforcer) DetachAll(ctx context.Context) error { return e.pol.DetachAll(ctx) }

func (e *BPFEnforcer) Close() error {
	errs := []error{e.Done(context.Background())}
	if e.backedUp {
		if e.hadConfig {
			errs = append(errs, os.WriteFile(e.ConfigPath, e.backup, 0o644))
		} else if err := os.Remove(e.ConfigPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(append(errs, e.pol.Close())...)
}

// runningPlugin returns the pid of a running agentcg-nri, or 0.
func runningPlugin() int {
	ents, _ := os.ReadDir("/proc")
	for _, d := range ents {
		var pid int
		if _, err := fmt.Sscan(d.Name(), &pid); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "comm"))
		if err == nil && strings.TrimSpace(string(b)) == "agentcg-nri" && pid != os.Getpid() {
			return pid
		}
	}
	return 0
}

// PinsLeft lists link pins under pinDir (bpffs), for the clean-state check.
func PinsLeft(pinDir string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(filepath.Join(pinDir, "links"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	return out, err
}
