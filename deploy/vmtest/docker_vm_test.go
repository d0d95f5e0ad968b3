//go:build vmtest

package vmtest_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentcg/agentcg/cgroup"
	"github.com/agentcg/agentcg/internal/vmtest"
)

// TestVMConfigureDocker: agentcg configure --runtime docker --set-default
// plus a dockerd restart: a plain `docker run --annotation
// agentcg.priority=low` gets its link, and a container without the
// annotation runs with no hook and no link.
func TestVMConfigureDocker(t *testing.T) {
	vmtest.Require(t)
	dir := vmtest.ResultsDir(t)
	var guest map[string]any
	old, err := os.ReadFile(dockerConfig)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(old, &guest); err != nil {
		t.Fatal(err)
	}
	delete(guest, "runtimes") // the guest's own agentcg runtime
	stock, _ := json.MarshalIndent(guest, "", "  ")
	swapFile(t, dockerConfig, stock, func() { restartDaemon(t, "dockerd", "docker", "version") })

	pinDir := "/sys/fs/bpf/agentcg-configure-docker"
	hookLog := filepath.Join(dir, "hook.log")
	if err := os.MkdirAll(filepath.Dir(agentcgConfig), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("mode: bpf\nhook_timeout: 60s\nstate_dir: /run/agentcg-configure-docker\nhook_log: %s\npolicy:\n  pin_dir: %s\n", hookLog, pinDir)
	if err := os.WriteFile(agentcgConfig, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(agentcgConfig) })

	configureTwice(t, dockerConfig, "--runtime", "docker", "--set-default", "--wrapper", bin(t, "agentcg-runc"))
	restartDaemon(t, "dockerd", "docker", "version")
	if rt := strings.TrimSpace(run(t, "docker", "info", "--format", "{{.DefaultRuntime}}")); rt != "agentcg" {
		t.Fatalf("docker default runtime %q, want agentcg", rt)
	}
	if exec.Command("docker", "image", "inspect", "agentcg/pause:1").Run() != nil {
		run(t, "docker", "load", "-i", "/usr/local/share/agentcg/pause.tar")
	}

	low := strings.TrimSpace(run(t, "docker", "run", "-d", "--network", "none", "--annotation", "agentcg.priority=low", "agentcg/pause:1"))
	plain := strings.TrimSpace(run(t, "docker", "run", "-d", "--network", "none", "agentcg/pause:1"))
	t.Cleanup(func() { exec.Command("docker", "rm", "-f", low, plain).Run() })
	for _, id := range []string{low, plain} {
		if rt := strings.TrimSpace(run(t, "docker", "inspect", "-f", "{{.HostConfig.Runtime}}", id)); rt != "agentcg" {
			t.Errorf("container %s ran with runtime %q, want agentcg (the default)", id[:12], rt)
		}
	}
	lowPin := pinFor(t, pinDir, cgroupOf(t, low))
	if _, err := os.Stat(lowPin); err != nil {
		t.Fatalf("annotated container has no link %s: %v\nhook log:\n%s", lowPin, err, logTail(hookLog, 20))
	}
	if p := pins(t, pinDir); len(p) != 1 {
		t.Errorf("pins %v, want only the annotated container's", p)
	}
	// The unannotated container's bundle carries no hook of ours.
	spec, err := os.ReadFile(filepath.Join("/run/containerd/io.containerd.runtime.v2.task/moby", plain, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(spec, []byte("agentcg-hook")) {
		t.Errorf("unannotated container's OCI spec has the agentcg hook")
	}
	if _, err := os.Stat(pinFor(t, pinDir, cgroupOf(t, plain))); err == nil {
		t.Errorf("unannotated container has a link")
	}
	run(t, "docker", "stop", "-t", "0", low, plain)
	waitFor(t, "link removed at poststop", 60*time.Second, func() error {
		if p := pins(t, pinDir); len(p) != 0 {
			return fmt.Errorf("pins %v", p)
		}
		return nil
	})
	if log, _ := os.ReadFile(hookLog); slices.Contains(strings.Fields(string(log)), plain) {
		t.Errorf("hook log mentions the unannotated container")
	}
}

func cgroupOf(t *testing.T, id string) string {
	t.Helper()
	pid := strings.TrimSpace(run(t, "docker", "inspect", "-f", "{{.State.Pid}}", id))
	b, err := os.ReadFile("/proc/" + pid + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	rest, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "0::")
	if !ok {
		t.Fatalf("/proc/%s/cgroup: %q", pid, b)
	}
	return filepath.Join(cgroup.Root, rest)
}
