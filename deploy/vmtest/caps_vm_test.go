//go:build vmtest

package vmtest_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentcg/agentcg/internal/vmtest"
)

// TestVMCapabilities measures which capabilities the policy really needs:
// agentcg attach (load both struct_ops objects, attach to a cgroup, pin the
// link) and detach run as uid 0 in the host's cgroup namespace with every
// capability outside a given set removed from the bounding set. The set
// the chart records (securityContext.capabilities; the chart's pod is
// privileged, which grants all, for the cgroup namespace alone) must work,
// and dropping any one of its capabilities must not.
func TestVMCapabilities(t *testing.T) {
	vmtest.Require(t)
	agentcg := bin(t, "agentcg")
	cg := "/sys/fs/cgroup/agentcg-caps"
	if err := os.MkdirAll(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(cg)
	chart := []string{"bpf", "perfmon"} // values.yaml securityContext.capabilities.add
	try := func(caps []string) (bool, string) {
		pin := "/sys/fs/bpf/agentcg-caps"
		bound := "-all"
		for _, c := range caps {
			bound += ",+" + c
		}
		args := []string{"--inh-caps", "-all", "--ambient-caps", "-all", "--bounding-set", bound, "--",
			agentcg, "attach", "--mode", "bpf", "--pin-dir", pin, "--low", cg}
		out, err := exec.Command("setpriv", args...).CombinedOutput()
		ok := err == nil
		if ok {
			if dout, derr := exec.Command("setpriv", append(args[:6:6], "--", agentcg, "detach", "--pin-dir", pin, "--all")...).CombinedOutput(); derr != nil {
				ok = false
				out = append(out, dout...)
			}
		}
		// Clean up with full privileges whatever happened.
		exec.Command(agentcg, "detach", "--pin-dir", pin, "--all").Run()
		return ok, strings.TrimSpace(string(out))
	}
	ok, out := try(chart)
	t.Logf("caps {%s}: attach+detach ok=%v %s", strings.Join(chart, ","), ok, firstLine(out))
	if !ok {
		t.Fatalf("the chart's capabilities %v do not suffice", chart)
	}
	for i := range chart {
		less := append(append([]string{}, chart[:i]...), chart[i+1:]...)
		ok, out := try(less)
		t.Logf("caps {%s}: attach+detach ok=%v %s", strings.Join(less, ","), ok, firstLine(out))
		if ok {
			t.Errorf("the chart adds %s, but attach and detach work without it (%v): drop it from values.yaml", chart[i], less)
		}
	}
}

// TestVMCapabilitiesPlugin: agentcg-nri itself with only the chart's
// capabilities connects to containerd and pins an annotated CRI
// container's link.
func TestVMCapabilitiesPlugin(t *testing.T) {
	vmtest.Require(t)
	if os.Getenv(vmtest.EnvProfile) == "systemd" {
		t.Skip("SKIP: the pod uses a cgroupfs-form cgroup_parent, and this profile's containerd uses the systemd driver; the default profile runs it")
	}
	chart := []string{"bpf", "perfmon"}
	dir := vmtest.ResultsDir(t)
	pinDir := "/sys/fs/bpf/agentcg-caps-nri"
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte("mode: bpf\nstate_dir: /run/agentcg-caps/containers\npolicy:\n  pin_dir: "+pinDir+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	startNRI(t, "setpriv", "--inh-caps", "-all", "--ambient-caps", "-all", "--bounding-set", "-all,+"+strings.Join(chart, ",+"), "--",
		bin(t, "agentcg-nri"), "--config", cfg)
	parent := "/agentcg-caps-pods"
	pod := writeJSON(t, dir, "pod.json", map[string]any{
		"metadata":      map[string]any{"name": "caps", "namespace": "tenant", "uid": "caps-uid"},
		"linux":         map[string]any{"cgroup_parent": parent, "security_context": map[string]any{"namespace_options": map[string]any{"network": 2}}},
		"log_directory": "/tmp/agentcg-caps-pod",
	})
	podID := strings.TrimSpace(run(t, "crictl", "runp", pod))
	t.Cleanup(func() { exec.Command("crictl", "stopp", podID).Run(); exec.Command("crictl", "rmp", "-f", podID).Run() })
	ctr := writeJSON(t, dir, "ctr.json", map[string]any{
		"metadata":    map[string]any{"name": "low"},
		"image":       map[string]any{"image": "docker.io/agentcg/pause:1"},
		"annotations": map[string]string{"agentcg.priority": "low"},
		"log_path":    "low.log",
	})
	id := strings.TrimSpace(run(t, "crictl", "create", podID, ctr, pod))
	run(t, "crictl", "start", id)
	pin := pinFor(t, pinDir, filepath.Join("/sys/fs/cgroup", parent, id))
	waitFor(t, "agentcg-nri with {"+strings.Join(chart, ",")+"} pins the link", 60*time.Second, func() error {
		if _, err := os.Stat(pin); err != nil {
			return fmt.Errorf("%v (pins %v)", err, pins(t, pinDir))
		}
		return nil
	})
	run(t, "crictl", "stop", "-t", "0", id)
	run(t, "crictl", "rm", id)
	waitFor(t, "link removed", 60*time.Second, func() error {
		if p := pins(t, pinDir); len(p) != 0 {
			return fmt.Errorf("pins %v", p)
		}
		return nil
	})
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + fmt.Sprintf(" (+%d lines)", strings.Count(s, "\n"))
	}
	return s
}
