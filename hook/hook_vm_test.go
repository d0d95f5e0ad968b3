//go:build vmtest

package hook_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentcg/agentcg/cgroup"
	"github.com/agentcg/agentcg/internal/vmtest"
)

// VM tests run `docker run --runtime agentcg` in the guest: dockerd's
// "agentcg" runtime is /agentcg/bin/agentcg-runc (built by `make build`),
// which injects /agentcg/bin/agentcg-hook. Without runtimeArgs the hook
// reads /etc/agentcg/config.yaml, which each test writes.

const guestConfig = "/etc/agentcg/config.yaml"

type dockerEnv struct {
	t       *testing.T
	pinDir  string
	hookLog string
}

func newDockerEnv(t *testing.T, name, failMode string) *dockerEnv {
	vmtest.Require(t)
	for _, b := range []string{"agentcg-runc", "agentcg-hook"} {
		if _, err := os.Stat(filepath.Join(vmtest.Src(t), "bin", b)); err != nil {
			t.Fatalf("bin/%s missing: run `make build` before the VM tier: %v", b, err)
		}
	}
	e := &dockerEnv{t: t, pinDir: "/sys/fs/bpf/agentcg-hook-" + name, hookLog: filepath.Join(vmtest.ResultsDir(t), "hook.log")}
	// Loading the BPF object takes about 5 s under TCG, so the default 5 s
	// hook timeout is too tight in the VM.
	cfg := fmt.Sprintf("mode: bpf\nfail_mode: %s\nhook_timeout: 60s\nstate_dir: /run/agentcg-hook-%s\nhook_log: %s\npolicy:\n  pin_dir: %s\n", failMode, name, e.hookLog, e.pinDir)
	if err := os.MkdirAll(filepath.Dir(guestConfig), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(guestConfig, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(guestConfig) })
	if exec.Command("docker", "image", "inspect", "agentcg/pause:1").Run() != nil {
		if out, err := exec.Command("docker", "load", "-i", "/usr/local/share/agentcg/pause.tar").CombinedOutput(); err != nil {
			t.Fatalf("docker load pause image: %v\n%s", err, out)
		}
	}
	return e
}

func (e *dockerEnv) docker(args ...string) (string, error) {
	out, err := exec.Command("docker", args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func (e *dockerEnv) mustDocker(args ...string) string {
	e.t.Helper()
	out, err := e.docker(args...)
	if err != nil {
		e.t.Fatalf("docker %s: %v\n%s\nhook log:\n%s", strings.Join(args, " "), err, out, e.log())
	}
	return out
}

func (e *dockerEnv) log() string {
	b, _ := os.ReadFile(e.hookLog)
	return string(b)
}

func (e *dockerEnv) pinCount() int {
	ents, err := os.ReadDir(filepath.Join(e.pinDir, "links"))
	if err != nil && !os.IsNotExist(err) {
		e.t.Fatal(err)
	}
	return len(ents)
}

// cgroupOf returns the running container's cgroup directory.
func (e *dockerEnv) cgroupOf(id string) string {
	pid := e.mustDocker("inspect", "-f", "{{.State.Pid}}", id)
	b, err := os.ReadFile("/proc/" + pid + "/cgroup")
	if err != nil {
		e.t.Fatal(err)
	}
	rest, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "0::")
	if !ok {
		e.t.Fatalf("/proc/%s/cgroup: %q", pid, b)
	}
	return filepath.Join(cgroup.Root, rest)
}

func (e *dockerEnv) run(prio string, extra ...string) (string, error) {
	args := append([]string{"run", "-d", "--runtime", "agentcg", "--network", "none", "--annotation", "agentcg.priority=" + prio}, extra...)
	return e.docker(append(args, "agentcg/pause:1")...)
}

func TestVMDockerLowPinnedWhileRunning(t *testing.T) {
	e := newDockerEnv(t, "low", "open")
	id, err := e.run("low")
	if err != nil {
		t.Fatalf("docker run: %v\n%s\nhook log:\n%s", err, id, e.log())
	}
	dir := e.cgroupOf(id)
	cgID, err := cgroup.ID(dir)
	if err != nil {
		t.Fatal(err)
	}
	pin := filepath.Join(e.pinDir, "links", "cg-"+strconv.FormatUint(cgID, 10))
	if _, err := os.Stat(pin); err != nil || e.pinCount() != 1 {
		t.Fatalf("no pin %s for running container (pins %d): %v\nhook log:\n%s", pin, e.pinCount(), err, e.log())
	}
	e.mustDocker("stop", "-t", "0", id)
	// poststop runs when the runtime deletes the exited container.
	deadline := time.Now().Add(30 * time.Second)
	for e.pinCount() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("pin still there after the container exited\nhook log:\n%s", e.log())
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.mustDocker("rm", id)
	if !strings.Contains(e.log(), "msg=attached") || !strings.Contains(e.log(), "msg=detached") {
		t.Fatalf("hook log lacks attach/detach:\n%s", e.log())
	}
}

func TestVMDockerInvalidFailsOpen(t *testing.T) {
	e := newDockerEnv(t, "open", "open")
	id, err := e.run("urgent")
	if err != nil {
		t.Fatalf("fail-open: docker run failed: %v\n%s", err, id)
	}
	defer e.docker("rm", "-f", id)
	if state := e.mustDocker("inspect", "-f", "{{.State.Running}}", id); state != "true" {
		t.Fatalf("container not running: %s", state)
	}
	if !strings.Contains(e.log(), "reason=invalid_value") || !strings.Contains(e.log(), "allowed values are high, low") {
		t.Fatalf("hook log does not say why:\n%s", e.log())
	}
	if n := e.pinCount(); n != 0 {
		t.Fatalf("%d pins for an invalid annotation", n)
	}
}

func TestVMDockerInvalidFailsClosed(t *testing.T) {
	e := newDockerEnv(t, "closed", "closed")
	out, err := e.run("urgent", "--name", "agentcg-failclosed")
	defer e.docker("rm", "-f", "agentcg-failclosed")
	if err == nil {
		t.Fatalf("fail-closed: docker run succeeded: %s", out)
	}
	if !strings.Contains(out, "allowed values are high, low") {
		t.Fatalf("docker run failed without the reason:\n%s", out)
	}
	t.Logf("docker run refused as configured: %s", tail(out))
}

func tail(s string) string {
	if len(s) > 400 {
		return "…" + s[len(s)-400:]
	}
	return s
}
