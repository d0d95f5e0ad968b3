//go:build vmtest

package hook_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentcg/agentcg/cgroup"
	"github.com/agentcg/agentcg/hook/hookstats"
	"github.com/agentcg/agentcg/internal/vmtest"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	"golang.org/x/sys/unix"
)

// VM tests run Docker in the guest: dockerd's "agentcg" runtime is
// /agentcg/bin/agentcg-runc (built by `make build`), which injects
// /agentcg/bin/agentcg-hook into annotated containers. Without
// --agentcg-config the hook reads /etc/agentcg/config.yaml, which each test
// writes; tests that also run the NRI plugin give it the same file, as on a
// real node.

const (
	guestConfig = "/etc/agentcg/config.yaml"
	pauseImage  = "agentcg/pause:1"
)

type dockerEnv struct {
	t        *testing.T
	name     string
	pinDir   string
	stateDir string
	hookLog  string
	metrics  string
	dc       *client.Client
	nri      *exec.Cmd
	nriLog   string
}

// newDockerEnv writes the shared config: bpf mode, its own pin and state
// folders, the hook's log and counters in the test's results, and extra
// (YAML lines, for example a fail_mode or a high: block).
func newDockerEnv(t *testing.T, name, extra string) *dockerEnv {
	vmtest.Require(t)
	for _, b := range []string{"agentcg-runc", "agentcg-hook"} {
		if _, err := os.Stat(filepath.Join(vmtest.Src(t), "bin", b)); err != nil {
			t.Fatalf("bin/%s missing: run `make build` before the VM tier: %v", b, err)
		}
	}
	res := vmtest.ResultsDir(t)
	// Log and counters live on the guest's tmpfs (as /run does on a node):
	// twenty hooks appending and fsyncing through the 9p results share
	// would measure 9p. They are copied to the results at the end.
	run := "/run/agentcg-hook-" + name
	e := &dockerEnv{t: t, name: name,
		pinDir:   "/sys/fs/bpf/agentcg-hook-" + name,
		stateDir: run + "/containers",
		hookLog:  run + "/hook.log",
		metrics:  run + "/hook.prom",
		nriLog:   filepath.Join(res, "agentcg-nri.log"),
	}
	os.RemoveAll(run)
	if err := os.MkdirAll(run, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, f := range []string{e.hookLog, e.metrics} {
			if b, err := os.ReadFile(f); err == nil {
				os.WriteFile(filepath.Join(res, filepath.Base(f)), b, 0o644)
			}
		}
	})
	// Loading the BPF object takes seconds under TCG, so the default 5 s
	// hook timeout is too tight here (the guest's daemon.json also passes
	// --agentcg-timeout=30s, which wins).
	cfg := fmt.Sprintf("mode: bpf\nhook_timeout: 60s\nstate_dir: %s\nhook_log: %s\nhook_metrics: %s\npolicy:\n  pin_dir: %s\n%s",
		e.stateDir, e.hookLog, e.metrics, e.pinDir, extra)
	if err := os.MkdirAll(filepath.Dir(guestConfig), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(guestConfig, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(filepath.Join(vmtest.Src(t), "bin", "agentcg-hook"), "check-config").CombinedOutput(); err != nil {
		t.Fatalf("agentcg-hook check-config: %v\n%s", err, out)
	}
	localBinaries(t)
	if exec.Command("docker", "image", "inspect", pauseImage).Run() != nil {
		if out, err := exec.Command("docker", "load", "-i", "/usr/local/share/agentcg/pause.tar").CombinedOutput(); err != nil {
			t.Fatalf("docker load pause image: %v\n%s", err, out)
		}
	}
	dc, err := client.New(client.FromEnv)
	if err != nil {
		t.Fatal(err)
	}
	e.dc = dc
	t.Cleanup(func() {
		e.stopNRI()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if l, err := dc.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: client.Filters{}.Add("label", "agentcg-test="+name)}); err == nil {
			for _, c := range l.Items {
				dc.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true})
			}
		}
		dc.Close()
		os.Remove(guestConfig)
	})
	return e
}

// localBinaries puts guest-local copies of the binaries over
// /agentcg/bin (bind mounts, undone when the test ends): dockerd's runtime
// path is /agentcg/bin/agentcg-runc, and the hook sits beside it. Over the
// 9p share, twenty hooks paging in a static binary at once spent most of
// their time in page-cache waits (folio_wait_bit_common) and outlived the
// runtime's timeout before reaching main; on a node the binaries are on a
// local disk.
func localBinaries(t *testing.T) {
	t.Helper()
	dir := "/run/agentcg-test-bin"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"agentcg-runc", "agentcg-hook", "agentcg-nri"} {
		src := filepath.Join(vmtest.Src(t), "bin", b)
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatalf("bin/%s missing: run `make build` before the VM tier: %v", b, err)
		}
		local := filepath.Join(dir, b)
		if err := os.WriteFile(local, data, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount(local, src, "", unix.MS_BIND, ""); err != nil {
			t.Fatalf("bind %s over %s: %v", local, src, err)
		}
		t.Cleanup(func() { unix.Unmount(src, unix.MNT_DETACH) })
	}
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

func (e *dockerEnv) counts() hookstats.Counts {
	e.t.Helper()
	c, err := hookstats.Read(e.metrics)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func (e *dockerEnv) pinCount() int {
	ents, err := os.ReadDir(filepath.Join(e.pinDir, "links"))
	if err != nil && !os.IsNotExist(err) {
		e.t.Fatal(err)
	}
	return len(ents)
}

// records counts the container records under the state folder (any
// per-door sub-folder included).
func (e *dockerEnv) records() int {
	n := 0
	filepath.WalkDir(e.stateDir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".json") && !strings.HasPrefix(d.Name(), ".") {
			n++
		}
		return nil
	})
	return n
}

// pinOf returns the pin path for a running container's cgroup.
func (e *dockerEnv) pinOf(id string) string {
	e.t.Helper()
	cgID, err := cgroup.ID(e.cgroupOf(id))
	if err != nil {
		e.t.Fatal(err)
	}
	return filepath.Join(e.pinDir, "links", "cg-"+strconv.FormatUint(cgID, 10))
}

// cgroupOf returns the running container's cgroup directory.
func (e *dockerEnv) cgroupOf(id string) string {
	e.t.Helper()
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

// run starts a container through the agentcg runtime with the priority
// annotation (and extra annotations) using the docker CLI.
func (e *dockerEnv) run(prio string, extra ...string) (string, error) {
	args := append([]string{"run", "-d", "--runtime", "agentcg", "--network", "none", "--label", "agentcg-test=" + e.name, "--annotation", "agentcg.priority=" + prio}, extra...)
	return e.docker(append(args, pauseImage)...)
}

// start creates and starts a container through the Engine API (faster
// than the CLI under emulation); ann may be nil.
func (e *dockerEnv) start(ctx context.Context, ann map[string]string) (string, error) {
	r, err := e.dc.ContainerCreate(ctx, client.ContainerCreateOptions{
		Config:     &container.Config{Image: pauseImage, Labels: map[string]string{"agentcg-test": e.name}},
		HostConfig: &container.HostConfig{Runtime: "agentcg", Annotations: ann, NetworkMode: "none"},
	})
	if err != nil {
		return "", fmt.Errorf("docker create: %w", err)
	}
	if _, err := e.dc.ContainerStart(ctx, r.ID, client.ContainerStartOptions{}); err != nil {
		return r.ID, fmt.Errorf("docker start %s: %w", r.ID, err)
	}
	return r.ID, nil
}

func (e *dockerEnv) remove(ctx context.Context, id string) error {
	if _, err := e.dc.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true}); err != nil {
		return fmt.Errorf("docker rm -f %s: %w", id, err)
	}
	return nil
}

// waitPins waits until the pin folder holds n links.
func (e *dockerEnv) waitPins(n int, d time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(d)
	for e.pinCount() != n {
		if time.Now().After(deadline) {
			e.t.Fatalf("%d pins, want %d\nhook log:\n%s", e.pinCount(), n, tail(e.log(), 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startNRI runs agentcg-nri on the shared config and waits for its
// Synchronize.
func (e *dockerEnv) startNRI() {
	e.t.Helper()
	// Synchronize queues the reconcile (stale detaches, orphan sweep) and
	// returns: wait for both, or a test could pass before the sweep ran.
	before, beforeRec := strings.Count(e.nriLogText(), "msg=synchronized"), strings.Count(e.nriLogText(), "msg=reconciled")
	f, err := os.OpenFile(e.nriLog, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		e.t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(vmtest.Src(e.t), "bin", "agentcg-nri"), "--config", guestConfig)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	f.Close()
	e.nri = cmd
	deadline := time.Now().Add(90 * time.Second)
	for strings.Count(e.nriLogText(), "msg=synchronized") <= before || strings.Count(e.nriLogText(), "msg=reconciled") <= beforeRec {
		if time.Now().After(deadline) {
			e.t.Fatalf("agentcg-nri did not synchronize and reconcile:\n%s", tail(e.nriLogText(), 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// killNRI kills the plugin with SIGKILL: no cleanup of any kind.
func (e *dockerEnv) killNRI() {
	if e.nri == nil {
		return
	}
	e.nri.Process.Kill()
	e.nri.Wait()
	e.nri = nil
}

func (e *dockerEnv) stopNRI() {
	if e.nri == nil {
		return
	}
	vmtest.Interrupt(e.nri, 10*time.Second)
	e.nri = nil
}

func (e *dockerEnv) nriLogText() string {
	b, _ := os.ReadFile(e.nriLog)
	return string(b)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func TestVMDockerLowPinnedWhileRunning(t *testing.T) {
	e := newDockerEnv(t, "low", "fail_mode: open\n")
	id, err := e.run("low")
	if err != nil {
		t.Fatalf("docker run: %v\n%s\nhook log:\n%s", err, id, e.log())
	}
	pin := e.pinOf(id)
	if _, err := os.Stat(pin); err != nil || e.pinCount() != 1 {
		t.Fatalf("no pin %s for running container (pins %d): %v\nhook log:\n%s", pin, e.pinCount(), err, e.log())
	}
	e.mustDocker("stop", "-t", "0", id)
	// poststop runs when the runtime deletes the exited container.
	e.waitPins(0, 30*time.Second)
	e.mustDocker("rm", id)
	if !strings.Contains(e.log(), "msg=attached") || !strings.Contains(e.log(), "msg=detached") {
		t.Fatalf("hook log lacks attach/detach:\n%s", e.log())
	}
	c := e.counts()
	if c.Total("createRuntime", "attached") != 1 || c.Total("poststop", "detached") != 1 || hookstats.Sum(c.WithoutPolicy) != 0 {
		t.Fatalf("hook counters %+v", c.RunList())
	}
}

// With agentcg as the runtime, a container without the annotation gets no
// hook at all: its bundle is passed to runc untouched.
func TestVMDockerUnannotatedUntouched(t *testing.T) {
	e := newDockerEnv(t, "plain", "fail_mode: closed\n")
	out := e.mustDocker("run", "-d", "--runtime", "agentcg", "--network", "none", "--label", "agentcg-test=plain", pauseImage)
	defer e.docker("rm", "-f", out)
	if n := e.pinCount(); n != 0 {
		t.Fatalf("%d pins for an unannotated container", n)
	}
	if _, err := os.Stat(e.metrics); !os.IsNotExist(err) {
		t.Fatalf("the hook ran for an unannotated container (counters %v):\n%s", err, e.log())
	}
}

func TestVMDockerInvalidFailsOpen(t *testing.T) {
	e := newDockerEnv(t, "open", "fail_mode: open\n")
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
	// Fail-open is visible: counted as a container without policy.
	if c := e.counts(); c.WithoutPolicy["invalid_value"] != 1 {
		t.Fatalf("without-policy counter %v", c.WithoutPolicy)
	}
}

func TestVMDockerInvalidFailsClosed(t *testing.T) {
	e := newDockerEnv(t, "closed", "fail_mode: closed\n")
	out, err := e.run("urgent", "--name", "agentcg-failclosed")
	defer e.docker("rm", "-f", "agentcg-failclosed")
	if err == nil {
		t.Fatalf("fail-closed: docker run succeeded: %s", out)
	}
	if !strings.Contains(out, "allowed values are high, low") {
		t.Fatalf("docker run failed without the reason:\n%s", out)
	}
	t.Logf("docker run refused as configured: %s", clip(out))
}

// A config typo refuses annotated containers (its fail_mode is unknown) and
// leaves unannotated ones alone.
func TestVMDockerBrokenConfig(t *testing.T) {
	e := newDockerEnv(t, "broken", "fail_mode: open\n")
	if err := os.WriteFile(guestConfig, []byte("fail_mod: open\nhook_log: "+e.hookLog+"\nhook_metrics: "+e.metrics+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := e.run("low", "--name", "agentcg-broken")
	defer e.docker("rm", "-f", "agentcg-broken")
	if err == nil || !strings.Contains(out, "fail_mod") {
		t.Fatalf("annotated container under a broken config: err %v\n%s", err, out)
	}
	plain := e.mustDocker("run", "-d", "--runtime", "agentcg", "--network", "none", "--label", "agentcg-test=broken", pauseImage)
	e.mustDocker("rm", "-f", plain)
	if c := e.counts(); c.Refused["config_invalid"] != 1 {
		t.Fatalf("refused %v", c.Refused)
	}
}

// design.md §6: the hook path never authorises high from an annotation.
// Any caller of `docker run --annotation` can write
// io.kubernetes.pod.namespace; naming the allowlisted namespace there gets
// the container low or nothing, never high.
func TestVMDockerForgedNamespaceNotHigh(t *testing.T) {
	e := newDockerEnv(t, "forge", "fail_mode: open\nhigh:\n  namespaces: [agents-prod]\n")
	id, err := e.run("high", "--annotation", "io.kubernetes.pod.namespace=agents-prod", "--label", "io.kubernetes.pod.namespace=agents-prod")
	if err != nil {
		t.Fatalf("docker run: %v\n%s", err, id)
	}
	defer e.docker("rm", "-f", id)
	if n := e.pinCount(); n != 0 {
		b, _ := os.ReadFile(filepath.Join(e.stateDir, id+".json"))
		t.Fatalf("forged namespace got %d pin(s); record %s\nhook log:\n%s", n, b, e.log())
	}
	if c := e.counts(); c.Runs[hookstats.Key{Stage: "createRuntime", Outcome: "rejected", Reason: "not_allowed"}] != 1 {
		t.Fatalf("hook counters %+v\nhook log:\n%s", c.RunList(), e.log())
	}
}

// issue 10: a plugin restart (SIGKILL, then a new agentcg-nri whose
// Synchronize reconciles) must leave the links the hook made for Docker
// containers alone: NRI never lists Docker containers.
func TestVMDockerLinkSurvivesPluginRestart(t *testing.T) {
	vmtest.Require(t)
	if _, err := os.Stat(filepath.Join(vmtest.Src(t), "bin", "agentcg-nri")); err != nil {
		t.Fatalf("bin/agentcg-nri missing: run `make build`: %v", err)
	}
	e := newDockerEnv(t, "restart", "fail_mode: open\n")
	e.startNRI()
	id, err := e.run("low")
	if err != nil {
		t.Fatalf("docker run: %v\n%s", err, id)
	}
	defer e.docker("rm", "-f", id)
	pin := e.pinOf(id)
	if _, err := os.Stat(pin); err != nil {
		t.Fatalf("no pin before the restart: %v\nhook log:\n%s", err, e.log())
	}
	e.killNRI()
	e.startNRI()
	if _, err := os.Stat(pin); err != nil {
		t.Fatalf("the plugin's restart removed the Docker container's link %s: %v\nplugin log:\n%s", pin, err, tail(e.nriLogText(), 20))
	}
	if n := e.records(); n != 1 {
		t.Fatalf("%d records after the plugin's restart, want the hook's 1", n)
	}
	e.mustDocker("rm", "-f", id)
	e.waitPins(0, 30*time.Second)
}

func clip(s string) string {
	if len(s) > 400 {
		return "…" + s[len(s)-400:]
	}
	return s
}
