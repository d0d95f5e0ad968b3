//go:build vmtest

package plugin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentcg/agentcg/bpf"
	"github.com/agentcg/agentcg/cgroup"
	"github.com/agentcg/agentcg/enroll"
	"github.com/agentcg/agentcg/internal/jsonfile"
	"github.com/agentcg/agentcg/internal/vmtest"
	"github.com/agentcg/agentcg/policy"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// VM tests drive the real agentcg-nri binary (built by `make build`) against
// the guest's containerd through crictl, with the BPF policy on the patched
// kernel. Each test uses its own pin dir, state dir and cgroup parent.

const (
	vmNamespace = "agentcg-prod" // the allowlisted Kubernetes namespace
	vmTenant    = "agentcg-tenant"
	vmImage     = "docker.io/agentcg/pause:1"
)

type vmEnv struct {
	t        *testing.T
	dir      string // config, logs
	pinDir   string
	stateDir string
	parent   string // cgroup parent, cgroupfs form
	logPath  string
	cfgPath  string
	cfg      enroll.Config
	nri      *exec.Cmd
	endpoint string // CRI socket for crictl; "" = the guest's containerd (/etc/crictl.yaml)
}

func newVMEnv(t *testing.T, name string) *vmEnv { return newVMEnvCfg(t, name, nil) }

// newVMEnvCfg is newVMEnv with the configuration edited by edit.
func newVMEnvCfg(t *testing.T, name string, edit func(*enroll.Config)) *vmEnv {
	vmtest.Require(t)
	e := &vmEnv{
		t:        t,
		dir:      vmtest.ResultsDir(t),
		pinDir:   "/sys/fs/bpf/agentcg-nri-" + name,
		stateDir: "/run/agentcg-nri-" + name + "/containers",
		parent:   "/agentcg-nri-" + name,
	}
	e.logPath = filepath.Join(e.dir, "agentcg-nri.log")
	e.cfgPath = filepath.Join(e.dir, "config.json")
	cfg := enroll.DefaultConfig()
	cfg.Mode, cfg.FailMode, cfg.StateDir = policy.ModeBPF, enroll.FailOpen, e.stateDir
	cfg.High.Namespaces = []string{vmNamespace}
	cfg.Policy.PinDir = e.pinDir
	if edit != nil {
		edit(&cfg)
	}
	e.cfg = cfg
	if err := jsonfile.Write(e.cfgPath, cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.stopNRI()
		// Leave no pods behind for the next test.
		for _, ns := range []string{vmNamespace, vmTenant} {
			for _, id := range strings.Fields(e.crictlOK("pods", "-q", "--namespace", ns)) {
				e.crictlOK("stopp", id)
				e.crictlOK("rmp", "-f", id)
			}
		}
	})
	return e
}

func (e *vmEnv) bin(name string) string {
	p := filepath.Join(vmtest.Src(e.t), "bin", name)
	if _, err := os.Stat(p); err != nil {
		e.t.Fatalf("%s missing: run `make build` before the VM tier: %v", p, err)
	}
	return p
}

// startNRI starts the plugin and waits for its Synchronize and the reconcile
// that Synchronize queues.
func (e *vmEnv) startNRI(args ...string) {
	e.t.Helper()
	// Synchronize queues the reconcile (stale detaches, orphan sweep) and
	// returns: wait for both, or a test could pass before the sweep ran.
	before, beforeRec := strings.Count(e.log(), "msg=synchronized"), strings.Count(e.log(), "msg=reconciled")
	f, err := os.OpenFile(e.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		e.t.Fatal(err)
	}
	cmd := exec.Command(e.bin("agentcg-nri"), append([]string{"--config", e.cfgPath, "--idx", "50"}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	f.Close()
	e.nri = cmd
	e.waitFor("plugin synchronized and reconciled", 60*time.Second, func() bool {
		return strings.Count(e.log(), "msg=synchronized") > before && strings.Count(e.log(), "msg=reconciled") > beforeRec
	})
}

func (e *vmEnv) stopNRI() {
	if e.nri == nil {
		return
	}
	vmtest.Interrupt(e.nri, 10*time.Second)
	e.nri = nil
}

func (e *vmEnv) killNRI() {
	e.nri.Process.Kill() // SIGKILL: no cleanup of any kind
	e.nri.Wait()
	e.nri = nil
}

func (e *vmEnv) log() string {
	b, _ := os.ReadFile(e.logPath)
	return string(b)
}

func (e *vmEnv) waitFor(what string, d time.Duration, ok func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s; plugin log:\n%s", what, tail(e.log(), 40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// crictlCmd is crictl against e.endpoint.
func (e *vmEnv) crictlCmd(args ...string) *exec.Cmd {
	if e.endpoint != "" {
		args = append([]string{"--runtime-endpoint", e.endpoint, "--image-endpoint", e.endpoint}, args...)
	}
	return exec.Command("crictl", args...)
}

func (e *vmEnv) crictlOK(args ...string) string {
	out, _ := e.crictlCmd(args...).Output()
	return strings.TrimSpace(string(out))
}

func (e *vmEnv) crictl(args ...string) string {
	e.t.Helper()
	out, err := e.crictlCmd(args...).CombinedOutput()
	if err != nil {
		e.t.Fatalf("crictl %s: %v\n%s\nplugin log:\n%s", strings.Join(args, " "), err, out, tail(e.log(), 20))
	}
	return strings.TrimSpace(string(out))
}

func (e *vmEnv) writeJSON(name string, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		e.t.Fatal(err)
	}
	p := filepath.Join(e.dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// runPod starts a host-network pod in the allowlisted namespace.
func (e *vmEnv) runPod(name string) (id, podJSON string) { return e.runPodNS(name, vmNamespace) }

// runPodNS starts a host-network pod in namespace ns.
func (e *vmEnv) runPodNS(name, ns string) (id, podJSON string) {
	podJSON = e.writeJSON("pod-"+name+".json", map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": ns, "uid": name + "-uid"},
		"linux":         map[string]any{"cgroup_parent": e.parent, "security_context": map[string]any{"namespace_options": map[string]any{"network": 2}}},
		"log_directory": "/tmp/agentcg-nri-pods/" + name,
	})
	return e.crictl("runp", podJSON), podJSON
}

// startCtr creates and starts a container with the priority annotation
// ("" for none) and returns its id and cgroup directory.
func (e *vmEnv) startCtr(pod, podJSON, name, prio string) (string, string) {
	id, dir := e.createCtr(pod, podJSON, name, prio, vmImage)
	e.crictl("start", id)
	return id, dir
}

// ctrJSON writes a container config of image with the priority
// annotation ("" for none) and returns its path.
func (e *vmEnv) ctrJSON(name, prio, image string) string {
	ann := map[string]string{}
	if prio != "" {
		ann["agentcg.priority"] = prio
	}
	return e.writeJSON("ctr-"+name+".json", map[string]any{
		"metadata":    map[string]any{"name": name},
		"image":       map[string]any{"image": image},
		"annotations": ann,
		"log_path":    name + ".log",
	})
}

// createCtr creates (not starts) a container of image.
func (e *vmEnv) createCtr(pod, podJSON, name, prio, image string) (string, string) {
	id := e.crictl("create", pod, e.ctrJSON(name, prio, image), podJSON)
	return id, filepath.Join(cgroup.Root, e.parent, id)
}

// records lists the container records (<id>.json) in the state dir.
func (e *vmEnv) records() []string {
	ents, _ := os.ReadDir(e.stateDir)
	var out []string
	for _, d := range ents {
		if id, ok := strings.CutSuffix(d.Name(), ".json"); ok && !strings.HasPrefix(id, ".") {
			out = append(out, id)
		}
	}
	return out
}

func (e *vmEnv) removeCtr(id string) {
	e.crictl("stop", "-t", "0", id)
	e.crictl("rm", id)
}

// pins maps each pinned link's cgroup id to its pin path.
func (e *vmEnv) pins() map[uint64]string {
	e.t.Helper()
	ents, err := os.ReadDir(filepath.Join(e.pinDir, "links"))
	if err != nil && !os.IsNotExist(err) {
		e.t.Fatal(err)
	}
	out := map[uint64]string{}
	for _, d := range ents {
		id, err := strconv.ParseUint(strings.TrimPrefix(d.Name(), "cg-"), 10, 64)
		if err != nil {
			e.t.Fatalf("unexpected pin %s", d.Name())
		}
		out[id] = filepath.Join(e.pinDir, "links", d.Name())
	}
	return out
}

// wantPins checks that the pins become exactly those of dirs (an attach
// that outlived the NRI request budget lands a little later).
func (e *vmEnv) wantPins(dirs ...string) {
	e.t.Helper()
	var ids []uint64
	for _, d := range dirs {
		id, err := cgroup.ID(d)
		if err != nil {
			e.t.Fatal(err)
		}
		ids = append(ids, id)
	}
	e.wantPinIDs(ids...)
}

// wantPinIDs is wantPins by cgroup id (for cgroups already removed).
func (e *vmEnv) wantPinIDs(ids ...uint64) {
	e.t.Helper()
	dirs := ids
	want := map[uint64]bool{}
	for _, id := range ids {
		want[id] = true
	}
	check := func() error {
		got := e.pins()
		var gotIDs []uint64
		for id := range got {
			gotIDs = append(gotIDs, id)
			if !want[id] {
				return fmt.Errorf("pin %s is for no expected cgroup (want %d)", got[id], len(dirs))
			}
		}
		if len(got) != len(want) {
			return fmt.Errorf("%d pins %v, want %d", len(got), gotIDs, len(want))
		}
		return nil
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%v\nplugin log:\n%s", err, tail(e.log(), 15))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestVMCRIHighPinnedThenGone(t *testing.T) {
	e := newVMEnv(t, "high")
	e.startNRI()
	pod, podJSON := e.runPod("high")
	id, dir := e.startCtr(pod, podJSON, "c-high", "high")
	plain, _ := e.startCtr(pod, podJSON, "c-plain", "")
	e.wantPins(dir)
	if !strings.Contains(e.log(), "container="+id) || !strings.Contains(e.log(), "priority=high") {
		t.Fatalf("attach not logged with container id and priority:\n%s", tail(e.log(), 20))
	}
	e.removeCtr(id)
	e.removeCtr(plain)
	e.wantPins()
	if recs := e.records(); len(recs) != 0 {
		t.Fatalf("records left: %v", recs)
	}
}

var latencyRE = regexp.MustCompile(`msg="attach latency" .*latency_ms=([0-9.]+)`)

func TestVMCRIAttachLatency(t *testing.T) {
	const n = 50
	// 25 of them high: lift the default cap of 8 (an explicit 0 is no cap).
	e := newVMEnvCfg(t, "lat", func(c *enroll.Config) { c.High.MaxConcurrent = new(0) })
	e.startNRI()
	pod, podJSON := e.runPod("lat")
	var ids, dirs []string
	for i := range n {
		id, dir := e.startCtr(pod, podJSON, fmt.Sprintf("c%02d", i), []string{"high", "low"}[i%2])
		ids, dirs = append(ids, id), append(dirs, dir)
	}
	e.wantPins(dirs...)
	var ms []float64
	for _, m := range latencyRE.FindAllStringSubmatch(e.log(), -1) {
		v, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, v)
	}
	if len(ms) != n {
		t.Fatalf("%d attach latency lines, want %d", len(ms), n)
	}
	sort.Float64s(ms)
	// Nearest-rank percentiles; with n=50, p99 is the maximum.
	pct := func(p float64) float64 { return ms[max(0, int(p*float64(n)+0.999999)-1)] }
	res := map[string]any{"n": n, "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": ms[n-1], "min_ms": ms[0], "samples_ms": ms}
	e.writeJSON("attach-latency.json", res)
	t.Logf("attach latency (StartContainer received -> link pinned) over %d containers: p50 %.2f ms, p99 %.2f ms (= max at n=50), min %.2f ms",
		n, pct(0.50), pct(0.99), ms[0])
	fmt.Printf("AGENTCG attach latency n=%d p50=%.2fms p99=%.2fms\n", n, pct(0.50), pct(0.99))
	for _, id := range ids {
		e.removeCtr(id)
	}
	e.wantPins()
}

func TestVMRestartReconciles(t *testing.T) {
	e := newVMEnv(t, "restart")
	e.startNRI()
	pod, podJSON := e.runPod("restart")
	var dirs []string
	for i, p := range []string{"high", "low", "low"} {
		_, dir := e.startCtr(pod, podJSON, fmt.Sprintf("r%d", i), p)
		dirs = append(dirs, dir)
	}
	e.wantPins(dirs...)
	e.killNRI()
	// A pin whose cgroup vanished while the plugin was down: make a
	// cgroup, attach through a second plugin run, then kill and rmdir.
	e.startNRI()
	orphanID, orphanDir := e.startCtr(pod, podJSON, "orphan", "low")
	e.wantPins(append(slices.Clone(dirs), orphanDir)...)
	e.killNRI()
	e.crictl("stop", "-t", "0", orphanID)
	e.crictl("rm", orphanID) // no RemoveContainer reaches the dead plugin

	e.startNRI()
	e.wantPins(dirs...) // exactly 3 links, 0 orphans
	if !strings.Contains(tail(e.log(), 5), "orphans_removed=") {
		t.Logf("log tail:\n%s", tail(e.log(), 5))
	}
	if n := len(e.records()); n != 3 {
		t.Fatalf("%d container records after restart, want 3", n)
	}
}

// criClient talks CRI over gRPC directly: the churn test would otherwise
// spend most of its time starting crictl under emulation.
type criClient struct {
	rt   cri.RuntimeServiceClient
	conn *grpc.ClientConn
}

func newCRI(t *testing.T) *criClient {
	conn, err := grpc.NewClient("unix:///run/containerd/containerd.sock", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &criClient{rt: cri.NewRuntimeServiceClient(conn), conn: conn}
}

// cycle creates, starts, stops and removes one container in pod.
func (c *criClient) cycle(ctx context.Context, pod string, podCfg *cri.PodSandboxConfig, name, prio string) error {
	cr, err := c.rt.CreateContainer(ctx, &cri.CreateContainerRequest{
		PodSandboxId: pod,
		Config: &cri.ContainerConfig{
			Metadata:    &cri.ContainerMetadata{Name: name},
			Image:       &cri.ImageSpec{Image: vmImage},
			Annotations: map[string]string{"agentcg.priority": prio},
			LogPath:     name + ".log",
		},
		SandboxConfig: podCfg,
	})
	if err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	id := cr.GetContainerId()
	if _, err := c.rt.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: id}); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	if _, err := c.rt.StopContainer(ctx, &cri.StopContainerRequest{ContainerId: id, Timeout: 0}); err != nil {
		return fmt.Errorf("stop %s: %w", name, err)
	}
	if _, err := c.rt.RemoveContainer(ctx, &cri.RemoveContainerRequest{ContainerId: id}); err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	return nil
}

func TestVMChurn(t *testing.T) {
	cycles := 200
	if v, err := strconv.Atoi(os.Getenv("AGENTCG_CHURN_CYCLES")); err == nil && v > 0 {
		cycles = v
	}
	e := newVMEnv(t, "churn")
	e.startNRI()
	before, err := bpf.LinkIDs()
	if err != nil {
		t.Fatal(err)
	}
	c := newCRI(t)
	ctx := context.Background()
	podCfg := &cri.PodSandboxConfig{
		Metadata:     &cri.PodSandboxMetadata{Name: "churn", Namespace: vmNamespace, Uid: "churn-uid"},
		LogDirectory: "/tmp/agentcg-nri-pods/churn",
		Linux: &cri.LinuxPodSandboxConfig{CgroupParent: e.parent, SecurityContext: &cri.LinuxSandboxSecurityContext{
			NamespaceOptions: &cri.NamespaceOption{Network: cri.NamespaceMode_NODE}}},
	}
	pr, err := c.rt.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: podCfg})
	if err != nil {
		t.Fatal(err)
	}
	pod := pr.GetPodSandboxId()
	start := time.Now()
	for i := range cycles {
		if err := c.cycle(ctx, pod, podCfg, fmt.Sprintf("churn%03d", i), []string{"high", "low"}[i%2]); err != nil {
			t.Fatalf("cycle %d: %v\nplugin log:\n%s", i, err, tail(e.log(), 20))
		}
		if i%50 == 49 {
			t.Logf("%d cycles in %s", i+1, time.Since(start).Round(time.Second))
		}
		// A plugin restart every 100 cycles, alternately clean and kill -9:
		// the restarted plugin's Synchronize finishes whatever was queued.
		if i%100 == 99 {
			if (i/100)%2 == 0 {
				e.stopNRI()
			} else {
				e.killNRI()
			}
			e.startNRI()
		}
	}
	e.wantPins()
	// The plugin must have handled every cycle (a dropped plugin would
	// leave 0 pins too).
	if e.nri.ProcessState != nil {
		t.Fatalf("plugin exited during churn:\n%s", tail(e.log(), 20))
	}
	e.waitFor("the last queued detaches", 60*time.Second, func() bool { return strings.Count(e.log(), "msg=detached") >= cycles })
	if a, d := strings.Count(e.log(), "msg=attached"), strings.Count(e.log(), "msg=detached"); a != cycles || d != cycles {
		t.Fatalf("plugin logged %d attaches and %d detaches, want %d each:\n%s", a, d, cycles, tail(e.log(), 20))
	}
	after, err := bpf.LinkIDs()
	if err != nil {
		t.Fatal(err)
	}
	leaked := 0
	for _, id := range after {
		if !slices.Contains(before, id) {
			leaked++
		}
	}
	if leaked != 0 {
		t.Fatalf("%d BPF links leaked after %d cycles (before %v, after %v)", leaked, cycles, before, after)
	}
	if ents, _ := os.ReadDir(e.stateDir); slices.ContainsFunc(ents, func(d os.DirEntry) bool { return strings.HasSuffix(d.Name(), ".json") }) {
		t.Fatalf("container records left after churn: %v", ents)
	}
	t.Logf("%d create/remove cycles (plugin restarted every 100) in %s: 0 pins, 0 leaked links, 0 records", cycles, time.Since(start).Round(time.Second))
}
