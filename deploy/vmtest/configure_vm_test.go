//go:build vmtest

package vmtest_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentcg/agentcg/cgroup"
	"github.com/agentcg/agentcg/internal/vmtest"
)

const (
	containerdConfig = "/etc/containerd/config.toml"
	dockerConfig     = "/etc/docker/daemon.json"
	agentcgConfig    = "/etc/agentcg/config.yaml"
	namespace        = "agents-prod"
)

// configureTwice runs agentcg configure ARGS twice: the first run must
// change the file (with a backup), the second nothing.
func configureTwice(t *testing.T, file string, args ...string) {
	t.Helper()
	agentcg := bin(t, "agentcg")
	out := run(t, agentcg, append([]string{"configure"}, args...)...)
	t.Logf("first configure:\n%s", out)
	if !strings.Contains(out, "changed:") || !strings.Contains(out, "backup: ") {
		t.Fatalf("first configure changed nothing:\n%s", out)
	}
	first, _ := os.ReadFile(file)
	backups, _ := filepath.Glob(file + ".agentcg-backup-*")
	time.Sleep(1100 * time.Millisecond) // a second backup would get a new name
	out = run(t, agentcg, append([]string{"configure"}, args...)...)
	if !strings.Contains(out, "has everything") {
		t.Fatalf("second configure:\n%s", out)
	}
	second, _ := os.ReadFile(file)
	again, _ := filepath.Glob(file + ".agentcg-backup-*")
	if !bytes.Equal(first, second) || len(again) != len(backups) {
		t.Fatalf("second configure changed the file (%v) or made a backup (%d -> %d)", !bytes.Equal(first, second), len(backups), len(again))
	}
	run(t, agentcg, append([]string{"configure", "--check"}, args...)...)
}

// TestVMConfigureContainerd: on the stock config of the guest's containerd
// (`containerd config default`), agentcg configure plus a restart is all
// an annotated CRI container needs to get its link.
func TestVMConfigureContainerd(t *testing.T) {
	vmtest.Require(t)
	dir := vmtest.ResultsDir(t)
	stock := run(t, "containerd", "config", "default")
	swapFile(t, containerdConfig, []byte(stock), func() { restartDaemon(t, "containerd", "ctr", "version") })
	// The stock config pins registry.k8s.io/pause; the guest has no
	// registry, so give the local pause image that name too.
	run(t, "ctr", "-n", "k8s.io", "images", "tag", "--force", "docker.io/agentcg/pause:1", "registry.k8s.io/pause:3.10")

	// Unconfigured, check names what is missing and exits 1.
	out, err := exec.Command(bin(t, "agentcg"), "configure", "--runtime", "containerd", "--check").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "container_annotations") {
		t.Fatalf("check on the stock config: %v\n%s", err, out)
	}
	configureTwice(t, containerdConfig, "--runtime", "containerd")
	restartDaemon(t, "containerd", "ctr", "version")

	pinDir := "/sys/fs/bpf/agentcg-configure"
	cfg := fmt.Sprintf("mode: bpf\nstate_dir: /run/agentcg-configure/containers\nhigh:\n  namespaces: [%s]\npolicy:\n  pin_dir: %s\n", namespace, pinDir)
	cfgFile := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logFile := startNRI(t, bin(t, "agentcg-nri"), "--config", cfgFile)

	parent := "/agentcg-configure"
	pod := writeJSON(t, dir, "pod.json", map[string]any{
		"metadata":      map[string]any{"name": "configure", "namespace": namespace, "uid": "configure-uid"},
		"linux":         map[string]any{"cgroup_parent": parent, "security_context": map[string]any{"namespace_options": map[string]any{"network": 2}}},
		"log_directory": "/tmp/agentcg-configure-pod",
	})
	podID := strings.TrimSpace(run(t, "crictl", "runp", pod))
	t.Cleanup(func() { exec.Command("crictl", "stopp", podID).Run(); exec.Command("crictl", "rmp", "-f", podID).Run() })
	ctr := writeJSON(t, dir, "ctr.json", map[string]any{
		"metadata":    map[string]any{"name": "agent"},
		"image":       map[string]any{"image": "docker.io/agentcg/pause:1"},
		"annotations": map[string]string{"agentcg.priority": "high"},
		"log_path":    "agent.log",
	})
	id := strings.TrimSpace(run(t, "crictl", "create", podID, ctr, pod))
	run(t, "crictl", "start", id)
	pin := pinFor(t, pinDir, filepath.Join(cgroup.Root, parent, id))
	waitFor(t, "link pinned for the annotated CRI container", 60*time.Second, func() error {
		if _, err := os.Stat(pin); err != nil {
			return fmt.Errorf("%v (pins %v)\nplugin log:\n%s", err, pins(t, pinDir), logTail(logFile, 15))
		}
		return nil
	})
	run(t, "crictl", "stop", "-t", "0", id)
	run(t, "crictl", "rm", id)
	waitFor(t, "link removed with the container", 60*time.Second, func() error {
		if p := pins(t, pinDir); len(p) != 0 {
			return fmt.Errorf("pins %v", p)
		}
		return nil
	})
}
