//go:build vmtest

package plugin_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentcg/agentcg/cgroup"
	"github.com/agentcg/agentcg/enroll"
	"github.com/agentcg/agentcg/internal/vmtest"
	"github.com/agentcg/agentcg/plugin"
	"github.com/agentcg/agentcg/policy"
	"github.com/agentcg/agentcg/policy/mode"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// labelledImage imports into containerd a copy of the pause image whose
// image config carries labels (a Dockerfile LABEL line), and returns its tag.
func labelledImage(t *testing.T, labels map[string]string) string {
	t.Helper()
	const src, tag = "/usr/local/share/agentcg/pause.tar", "docker.io/agentcg/pause-labelled:1"
	base, err := name.NewTag("docker.io/agentcg/pause:1")
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(src, &base)
	if err != nil {
		t.Fatalf("read %s: %v", src, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg := cf.Config
	cfg.Labels = labels
	img, err = mutate.Config(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.NewTag(tag)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "labelled.tar")
	if err := tarball.WriteToFile(out, ref, img); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("ctr", "-n", "k8s.io", "images", "import", out).CombinedOutput(); err != nil {
		t.Fatalf("ctr import: %v\n%s", err, b)
	}
	return tag
}

// An image whose LABEL matches the pod-label allowlist, run in a namespace
// that may not claim high, gets nothing (issue 10's reproduction, with
// trust_pod_labels on): containerd copies the LABEL into the container's
// labels, and the plugin never reads those.
func TestVMImageLabelForgery(t *testing.T) {
	e := newVMEnvCfg(t, "label", func(c *enroll.Config) {
		c.High.PodLabels = map[string]string{"agentcg.io/tier": "gold"}
		c.High.TrustPodLabels = true
	})
	img := labelledImage(t, map[string]string{"agentcg.io/tier": "gold"})
	e.startNRI()
	pod, podJSON := e.runPodNS("label", vmTenant)
	forged, _ := e.createCtr(pod, podJSON, "forged", "high", img)
	// The forgery vector exists: containerd copied the LABEL into the
	// container's labels (which NRI hands to plugins as container labels).
	info, err := exec.Command("ctr", "-n", "k8s.io", "containers", "info", forged).CombinedOutput()
	if err != nil || !strings.Contains(string(info), `"agentcg.io/tier": "gold"`) {
		t.Fatalf("the image LABEL is not among the container's labels (%v), the test proves nothing:\n%s", err, info)
	}
	e.crictl("start", forged)
	lowID, lowDir := e.createCtr(pod, podJSON, "lowlabelled", "low", img)
	e.crictl("start", lowID)
	e.wantPins(lowDir) // low is attached, the forged high is not
	if !strings.Contains(e.log(), "container="+forged) || !strings.Contains(e.log(), "reason=not_allowed") {
		t.Fatalf("the refusal is not logged:\n%s", tail(e.log(), 20))
	}
	e.removeCtr(forged)
	e.removeCtr(lowID)
	e.wantPins()
}

// A blocked attach (--fault-block-attach) while 10 Stop/Remove events
// arrive: every event is answered, the plugin stays connected, the others
// detach while the attach is blocked, and once it is released every
// container ends in a correct state (no pin, no record).
func TestVMBlockedAttachWhileStopsArrive(t *testing.T) {
	e := newVMEnv(t, "block")
	block := filepath.Join(e.dir, "block-attach")
	e.startNRI("--fault-block-attach", block)
	pod, podJSON := e.runPod("block")
	var ids, dirs []string
	for i := range 10 {
		id, dir := e.startCtr(pod, podJSON, fmt.Sprintf("b%02d", i), "low")
		ids, dirs = append(ids, id), append(dirs, dir)
	}
	e.wantPins(dirs...)
	if err := os.WriteFile(block, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// fail_mode open: the start is answered when the NRI budget runs out.
	blocked, blockedDir := e.startCtr(pod, podJSON, "blocked", "low")
	if !strings.Contains(e.log(), "TEST ONLY: attach blocked") {
		t.Fatalf("the attach was not blocked:\n%s", tail(e.log(), 20))
	}
	for _, id := range ids {
		e.removeCtr(id) // crictl stop + rm: StopContainer and RemoveContainer
	}
	e.wantPins() // the 10 detached while the attach is still blocked
	e.removeCtr(blocked)
	st, err := plugin.ReadStatus(plugin.StatusPath(e.stateDir))
	if err != nil || !st.Connected || st.Reconnects != 0 {
		t.Fatalf("plugin status %+v, %v\n%s", st, err, tail(e.log(), 20))
	}
	if err := os.Remove(block); err != nil {
		t.Fatal(err)
	}
	// Released: the attach finds its cgroup removed meanwhile (attach_failed),
	// or it gave up before (timeout: under TCG the removals above can outlast
	// the plugin's 60 s bound on queued work), or it landed and the queued
	// Stop/Remove detached it. Each ends with no pin and no record.
	e.waitFor("the blocked container's queue to finish", 120*time.Second, func() bool {
		l := e.log()
		return strings.Contains(l, "msg=detached component=agentcg-nri container="+blocked) ||
			strings.Contains(l, "msg=\"container runs without policy (fail_mode open)\" component=agentcg-nri container="+blocked)
	})
	e.wantPins()
	if recs := e.records(); len(recs) != 0 {
		t.Fatalf("records left: %v", recs)
	}
	if _, err := os.Stat(blockedDir); err == nil {
		t.Fatalf("%s still exists", blockedDir)
	}
	// Still serving.
	after, afterDir := e.startCtr(pod, podJSON, "after", "high")
	e.wantPins(afterDir)
	e.removeCtr(after)
	e.wantPins()
	if strings.Contains(e.log(), "connection lost") {
		t.Fatalf("the plugin was dropped:\n%s", tail(e.log(), 30))
	}
}

// fail_mode closed with the plugin stopped. containerd before 2.2 (NRI
// before 0.10) has no required plugins, so it cannot refuse a container
// when the plugin is absent: this test records what the guest's containerd
// does, and shows that the plugin attaches the container when it comes
// back. With the plugin connected, closed refuses for real.
func TestVMClosedModePluginStopped(t *testing.T) {
	e := newVMEnvCfg(t, "closed", func(c *enroll.Config) { c.FailMode = enroll.FailClosed })
	out, _ := exec.Command("containerd", "--version").CombinedOutput()
	version := strings.TrimSpace(string(out))
	t.Logf("runtime: %s", version)
	e.startNRI()
	pod, podJSON := e.runPod("closed")
	// Connected: an invalid value is refused by containerd.
	bad, _ := e.createCtr(pod, podJSON, "invalid", "urgent", vmImage)
	if out, err := exec.Command("crictl", "start", bad).CombinedOutput(); err == nil || !strings.Contains(string(out), "allowed values are high, low") {
		t.Fatalf("closed mode did not refuse an invalid value: %v\n%s", err, out)
	}
	e.crictlOK("rm", "-f", bad)
	e.stopNRI()

	id, dir := e.createCtr(pod, podJSON, "absent", "low", vmImage)
	startOut, startErr := exec.Command("crictl", "start", id).CombinedOutput()
	refused := startErr != nil
	res := map[string]any{"runtime": version, "refused_without_plugin": refused, "crictl": string(startOut)}
	e.writeJSON("closed-mode-plugin-stopped.json", res)
	fmt.Printf("AGENTCG closed mode, plugin stopped, %s: refused=%v\n", version, refused)
	if refused {
		t.Logf("the runtime refused the container while the plugin was absent: %s", startOut)
		return
	}
	t.Logf("NOT REFUSED: %s started an annotated container with fail_mode closed while the plugin was stopped (no required plugins before containerd 2.2 / NRI 0.10); see plugin/README.md", version)
	if pins := e.pins(); len(pins) != 0 {
		t.Fatalf("pins without a plugin: %v", pins)
	}
	// Back: Synchronize attaches the container that started in the gap.
	e.startNRI()
	e.wantPins(dir)
	e.removeCtr(id)
	e.wantPins()
}

// A corrupt record does not stop the others from detaching; the corrupt
// one is moved aside and its link goes with the next orphan sweep. A
// running container whose record is corrupt when the plugin restarts is
// enrolled again, which rewrites the record.
func TestVMCorruptRecord(t *testing.T) {
	e := newVMEnv(t, "corrupt")
	e.startNRI()
	pod, podJSON := e.runPod("corrupt")
	var ids, dirs []string
	for i := range 3 {
		id, dir := e.startCtr(pod, podJSON, fmt.Sprintf("k%d", i), "low")
		ids, dirs = append(ids, id), append(dirs, dir)
	}
	e.wantPins(dirs...)
	corrupt := func(id string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(e.stateDir, id+".json"), []byte(`{"id": "`+id+`", "cgroup_`), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// 1. Corrupt while the plugin is down: Synchronize re-enrolls it.
	e.killNRI()
	corrupt(ids[2])
	if err := os.WriteFile(filepath.Join(e.stateDir, "stray.json"), []byte("\x00\x01garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.startNRI()
	if !strings.Contains(e.log(), "kept=2 attach_queued=1") || !strings.Contains(e.log(), "unreadable_records=2") {
		t.Fatalf("the corrupt records were not reported or re-enrolled:\n%s", tail(e.log(), 20))
	}
	e.waitFor("the record rewritten", 60*time.Second, func() bool {
		_, ok, err := (enroll.Records{Dir: e.stateDir}).Get(ids[2])
		return ok && err == nil
	})
	// 2. Corrupt while it runs, then remove all three: the other two
	// detach, the corrupt one is moved aside.
	corrupt(ids[1])
	corruptID, err := cgroup.ID(dirs[1])
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		e.removeCtr(id)
	}
	e.waitFor("the corrupt record moved aside", 60*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(e.stateDir, ".corrupt-"+ids[1]+".json"))
		return err == nil
	})
	e.wantPinIDs(corruptID) // its link outlives the cgroup until the next sweep
	e.stopNRI()
	e.startNRI() // Synchronize: the orphan sweep removes it
	e.wantPins()
	if recs := e.records(); len(recs) != 1 || recs[0] != "stray" {
		t.Fatalf("records left: %v (want only the stray file, which names no container)", recs)
	}
}

// kill -9 of the plugin, and its restart, never detach what the OCI hook
// enrolled (a Docker container, which NRI never lists). The hook's
// enrollment is made here through package enroll with Door hook, exactly
// as agentcg-hook does; the Docker version of this test is the hook's.
func TestVMKill9KeepsHookRecords(t *testing.T) {
	e := newVMEnv(t, "kill9")
	dir := vmtest.NewCgroup(t, "agentcg-nri-kill9-docker")
	sleeper := exec.Command("sleep", "600")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	if err := cgroup.Write(dir, "cgroup.procs", strconv.Itoa(sleeper.Process.Pid)); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	pol, err := mode.Open(ctx, mode.Options{Mode: policy.ModeBPF, Config: e.cfg.Policy})
	if err != nil {
		t.Fatal(err)
	}
	defer pol.Close()
	hookE, err := enroll.New(e.cfg, pol, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := hookE.Enroll(ctx, enroll.Container{ID: "dockerfake", Door: enroll.DoorHook, Pid: sleeper.Process.Pid,
		Annotations: map[string]string{"agentcg.priority": "low"}})
	if err != nil || res.Outcome != enroll.Attached {
		t.Fatalf("hook-door enroll: %+v, %v", res, err)
	}
	e.wantPins(dir)

	e.startNRI()
	pod, podJSON := e.runPod("kill9")
	_, criDir := e.startCtr(pod, podJSON, "cri", "low")
	e.wantPins(dir, criDir)
	e.killNRI()
	e.startNRI()
	e.wantPins(dir, criDir)
	if !strings.Contains(e.log(), "foreign_records=1") {
		t.Fatalf("the hook's record was not seen as foreign:\n%s", tail(e.log(), 20))
	}
	if _, ok, err := hookE.Records().Get("dockerfake"); !ok || err != nil {
		t.Fatalf("the hook's record is gone: %v", err)
	}
	// The hook's poststop removes it.
	if res, err := hookE.Unenroll(ctx, "dockerfake"); err != nil || res.Outcome != enroll.Detached {
		t.Fatalf("hook-door unenroll: %+v, %v", res, err)
	}
	e.wantPins(criDir)
}

// The kernel counters are Prometheus counters: agentcg_policy_delay_calls_total
// never decreases across a container's exit (the per-cgroup sums it
// replaces dropped when a container went away).
func TestVMMetricsCountersSurviveExit(t *testing.T) {
	const addr = "127.0.0.1:19464"
	e := newVMEnvCfg(t, "metrics", func(c *enroll.Config) { c.MetricsAddr = addr })
	e.startNRI()
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, body := httpGet(t, "http://"+addr+p); code != 200 {
			t.Fatalf("%s: %d %s", p, code, body)
		}
	}
	pod, podJSON := e.runPod("metrics")
	id, dir := e.startCtr(pod, podJSON, "alloc", "low")
	e.wantPins(dir)
	before := delayCalls(t, addr)
	// Allocate in the LOW container's cgroup: get_high_delay_ms runs on the
	// charges. (A process moved in from the host; the pause image has no
	// shell.)
	alloc := exec.Command("sh", "-c", "echo $$ > "+filepath.Join(dir, "cgroup.procs")+" && exec dd if=/dev/zero of=/dev/null bs=32M count=4")
	if out, err := alloc.CombinedOutput(); err != nil {
		t.Fatalf("alloc in %s: %v\n%s", dir, err, out)
	}
	during := delayCalls(t, addr)
	if during <= before {
		t.Fatalf("agentcg_policy_delay_calls_total{low} %v -> %v: no calls counted", before, during)
	}
	e.removeCtr(id)
	e.wantPins()
	after := delayCalls(t, addr)
	res := map[string]float64{"before": before, "during": during, "after_exit": after}
	e.writeJSON("delay-calls.json", res)
	fmt.Printf("AGENTCG agentcg_policy_delay_calls_total{priority=low,result=all}: before %v, after alloc %v, after exit %v\n", before, during, after)
	if after < during {
		t.Fatalf("counter decreased across the container's exit: %v -> %v", during, after)
	}
	if code, body := httpGet(t, "http://"+addr+"/metrics"); code != 200 || !strings.Contains(body, "agentcg_build_info{") || !strings.Contains(body, "process_open_fds") || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("metrics lack build_info or the process/Go collectors: %d", code)
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second}
	r, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return r.StatusCode, string(b)
}

// delayCalls reads agentcg_policy_delay_calls_total{priority="low",result="all"}.
func delayCalls(t *testing.T, addr string) float64 {
	t.Helper()
	code, body := httpGet(t, "http://"+addr+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "agentcg_policy_delay_calls_total{") && strings.Contains(line, `priority="low"`) && strings.Contains(line, `result="all"`) {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("no agentcg_policy_delay_calls_total{low,all} in /metrics:\n%s", body)
	return 0
}
