//go:build vmtest_systemd

package kubetest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/agentcg/agentcg/cgroup"
	"github.com/agentcg/agentcg/internal/kubetest"
	"github.com/agentcg/agentcg/internal/vmtest"
)

// These tests run in the VM's systemd profile (scripts/vm/vmtest.sh
// --profile systemd): systemd is PID 1, containerd runs with
// SystemdCgroup = true and a standalone kubelet with cgroupDriver: systemd
// runs static pods from manifestDir. The plugin runs as the static-pod form
// of the Helm chart's DaemonSet; workloads are static pods of the pause image.

const (
	manifestDir = "/etc/kubernetes/manifests"
	// chartManifests is deploy/helm/agentcg rendered by `make vmtest-kube`
	// with config.high.namespaces={agents-prod} and config.mode=bpf.
	chartManifests = "build/kubetest/agentcg.yaml"
	pluginImageTar = "build/images/agentcg-nri.tar" // `make images`
	workNS         = "agents-prod"                  // allowlisted for high by the render
	podTimeout     = 3 * time.Minute
	linkTimeout    = 60 * time.Second
)

// TestKubeletSystemdDriver checks the profile itself: systemd as PID 1, the
// kubelet answering, and the systemd cgroup driver on both sides.
func TestKubeletSystemdDriver(t *testing.T) {
	vmtest.RequireSystemd(t)
	comm, err := os.ReadFile("/proc/1/comm")
	if err != nil || strings.TrimSpace(string(comm)) != "systemd" {
		t.Errorf("PID 1 is %q (%v), want systemd", strings.TrimSpace(string(comm)), err)
	}
	pods, err := kubetest.Pods(t.Context(), kubetest.ReadOnlyURL)
	if err != nil {
		t.Fatalf("kubelet read-only API: %v", err)
	}
	t.Logf("kubelet runs %d pods", len(pods))
	if _, err := os.Stat(filepath.Join(cgroup.Root, "kubepods.slice")); err != nil {
		t.Errorf("the kubelet's systemd driver made no kubepods.slice: %v", err)
	}
	var info struct {
		Config struct {
			ContainerdConfig struct {
				Runtimes map[string]struct {
					Options map[string]any `json:"options"`
				} `json:"runtimes"`
			} `json:"containerd"`
		} `json:"config"`
	}
	out := vmtest.Run(t, "crictl", "info")
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("crictl info: %v", err)
	}
	if v := info.Config.ContainerdConfig.Runtimes["runc"].Options["SystemdCgroup"]; v != true {
		t.Errorf("containerd runc option SystemdCgroup = %v, want true", v)
	}
	if b, err := os.ReadFile("/run/agentcg-boot-times"); err == nil {
		t.Logf("guest uptime when the kubelet first answered /healthz: %s", strings.TrimSpace(string(b)))
	}
}

// TestPluginUnderKubelet runs the plugin's DaemonSet pod template as a static
// pod, then annotated workload pods, and checks the pinned links on the
// cgroups the kubelet made under kubepods.slice.
func TestPluginUnderKubelet(t *testing.T) {
	vmtest.RequireSystemd(t)
	k := newKube(t)

	// The plugin: the chart's DaemonSet pod template as a static pod, its
	// ConfigMap as files, its image pre-loaded.
	objs := chartObjects(t)
	dss := kubetest.Find(objs, "DaemonSet")
	if len(dss) != 1 {
		t.Fatalf("%d DaemonSets in %s, want 1", len(dss), chartManifests)
	}
	pod, files, err := kubetest.StaticPod(dss[0], kubetest.StaticPodOptions{ConfigDir: "/run/agentcg-kubetest/config", ConfigMaps: objs})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if err := os.MkdirAll(filepath.Dir(f.Path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f.Path, f.Data, 0o644); err != nil {
			t.Fatal(err)
		}
		if filepath.Base(f.Path) == "config.yaml" {
			k.pinDir = pinDirOf(t, f.Data)
		}
	}
	if k.pinDir == "" {
		t.Fatalf("the chart's ConfigMap has no config.yaml")
	}
	importImage(t, filepath.Join(vmtest.Src(t), pluginImageTar))
	_, dsName := kubetest.Kind(dss[0])
	pluginNS := pod["metadata"].(map[string]any)["namespace"].(string)
	k.pluginNS = pluginNS
	start := time.Now()
	k.apply("plugin", pod)
	// Ready: the chart's readiness probe (/readyz) passes once the plugin
	// is registered with containerd's NRI and synchronized.
	k.waitReady(pluginNS, dsName)
	t.Logf("plugin static pod ready %.1f s after its manifest was written", time.Since(start).Seconds())

	t.Run("annotated pod pinned then gone", func(t *testing.T) {
		k := k.with(t)
		start := time.Now()
		k.apply("agent-high", workload("agent-high", map[string]string{"agentcg.priority": "high"}, "work"))
		p := k.waitRunning(workNS, "agent-high")
		dir := k.containerCgroup(p, "work")
		k.wantOps(dir, "high_ops")
		t.Logf("pod manifest written -> high link pinned: %.1f s", time.Since(start).Seconds())

		k.remove("agent-high")
		k.waitGone(workNS, "agent-high")
		k.wantNoLink(dir)
	})

	t.Run("per-container priority", func(t *testing.T) {
		k := k.with(t)
		ann := map[string]string{"agentcg.priority/container.agent": "high", "agentcg.priority": "low"}
		k.apply("agent-mixed", workload("agent-mixed", ann, "agent", "sidecar"))
		p := k.waitRunning(workNS, "agent-mixed")
		agent, sidecar := k.containerCgroup(p, "agent"), k.containerCgroup(p, "sidecar")
		k.wantOps(agent, "high_ops")
		k.wantOps(sidecar, "low_ops")
		k.remove("agent-mixed")
		k.waitGone(workNS, "agent-mixed")
		k.wantNoLink(agent)
		k.wantNoLink(sidecar)
	})

	k.savePluginLogs()
	k.remove("plugin")
	k.waitGone(pluginNS, dsName)
}

// chartObjects returns the rendered chart. A missing file fails the test:
// in the guest it is a build problem, not a reason to skip.
func chartObjects(t *testing.T) []kubetest.Object {
	t.Helper()
	p := filepath.Join(vmtest.Src(t), chartManifests)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("rendered chart missing (run `make vmtest-kube`, which renders deploy/helm/agentcg there): %v", err)
	}
	objs, err := kubetest.Decode(b)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return objs
}

// pinDirOf reads policy.pin_dir from the plugin's config.yaml.
func pinDirOf(t *testing.T, config []byte) string {
	t.Helper()
	var c struct {
		Policy struct {
			PinDir string `yaml:"pin_dir"`
		} `yaml:"policy"`
	}
	if err := yaml.Unmarshal(config, &c); err != nil {
		t.Fatalf("chart config.yaml: %v", err)
	}
	if c.Policy.PinDir == "" {
		t.Fatal("chart config.yaml sets no policy.pin_dir")
	}
	return c.Policy.PinDir
}

// importImage loads an image tarball into containerd's k8s.io namespace
// (the CRI's), where imagePullPolicy: Never finds it.
func importImage(t *testing.T, tar string) {
	t.Helper()
	if _, err := os.Stat(tar); err != nil {
		t.Fatalf("image missing (run `make images`): %v", err)
	}
	out := vmtest.Run(t, "ctr", "-n", "k8s.io", "images", "import", "--all-platforms", tar)
	t.Logf("imported %s: %s", tar, out)
}

// workload is a host-network static pod of pause containers in workNS.
func workload(name string, ann map[string]string, ctrs ...string) kubetest.Object {
	var cs []any
	for _, c := range ctrs {
		cs = append(cs, map[string]any{"name": c, "image": vmtest.PauseImage, "imagePullPolicy": "Never"})
	}
	a := map[string]any{}
	for k, v := range ann {
		a[k] = v
	}
	return kubetest.Object{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": name, "namespace": workNS, "annotations": a},
		"spec":     map[string]any{"hostNetwork": true, "terminationGracePeriodSeconds": 1, "containers": cs},
	}
}

// kube drives the kubelet through its manifest folder and read-only API.
type kube struct {
	t        *testing.T
	pinDir   string            // the plugin's policy.pin_dir
	pluginNS string            // namespace of the plugin's pod, for its logs
	written  map[string]bool   // manifest file names this test wrote
	ids      map[string]uint64 // cgroup dir -> id, kept for after the cgroup is gone
}

func newKube(t *testing.T) *kube {
	k := &kube{t: t, written: map[string]bool{}, ids: map[string]uint64{}}
	t.Cleanup(func() {
		for name := range k.written {
			os.Remove(filepath.Join(manifestDir, name+".yaml"))
		}
		if t.Failed() {
			k.dumpJournal()
		}
	})
	return k
}

func (k *kube) with(t *testing.T) *kube {
	return &kube{t: t, pinDir: k.pinDir, pluginNS: k.pluginNS, written: k.written, ids: k.ids}
}

// apply writes a static pod manifest (atomically: the kubelet ignores dot files).
func (k *kube) apply(name string, pod kubetest.Object) {
	k.t.Helper()
	b, err := yaml.Marshal(pod)
	if err != nil {
		k.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vmtest.ResultsDir(k.t), name+".yaml"), b, 0o644); err != nil {
		k.t.Fatal(err)
	}
	tmp := filepath.Join(manifestDir, "."+name+".yaml")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		k.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(manifestDir, name+".yaml")); err != nil {
		k.t.Fatal(err)
	}
	k.written[name] = true
}

func (k *kube) remove(name string) {
	k.t.Helper()
	if err := os.Remove(filepath.Join(manifestDir, name+".yaml")); err != nil {
		k.t.Fatal(err)
	}
	delete(k.written, name)
}

func (k *kube) waitFor(what string, d time.Duration, check func() error) {
	k.t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			k.t.Fatalf("timed out after %s waiting for %s: %v", d, what, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func staticName(name string) string { return name + "-" + kubetest.NodeName }

// waitRunning waits until the static pod from manifest name runs all its containers.
func (k *kube) waitRunning(ns, name string) kubetest.Pod {
	k.t.Helper()
	var p kubetest.Pod
	k.waitFor(fmt.Sprintf("pod %s/%s running", ns, staticName(name)), podTimeout, func() error {
		pods, err := kubetest.Pods(k.t.Context(), kubetest.ReadOnlyURL)
		if err != nil {
			return err
		}
		var ok bool
		p, ok = kubetest.FindPod(pods, ns, staticName(name))
		if !ok {
			return errors.New("not listed by the kubelet yet")
		}
		if !p.Running() {
			return fmt.Errorf("phase %s %s %+v", p.Status.Phase, p.Status.Message, p.Status.ContainerStatuses)
		}
		return nil
	})
	return p
}

// waitReady waits until the static pod from manifest name runs all its
// containers and each is ready.
func (k *kube) waitReady(ns, name string) kubetest.Pod {
	k.t.Helper()
	p := k.waitRunning(ns, name)
	k.waitFor(fmt.Sprintf("pod %s/%s ready", ns, staticName(name)), podTimeout, func() error {
		pods, err := kubetest.Pods(k.t.Context(), kubetest.ReadOnlyURL)
		if err != nil {
			return err
		}
		p, _ = kubetest.FindPod(pods, ns, staticName(name))
		for _, c := range p.Status.ContainerStatuses {
			if !c.Ready {
				return fmt.Errorf("container %s not ready: %+v; log tail: %s", c.Name, c.State, lastLines(k.logs(c.ID()), 5))
			}
		}
		return nil
	})
	return p
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// waitGone waits until the kubelet no longer lists the pod and the runtime
// has no container of it.
func (k *kube) waitGone(ns, name string) {
	k.t.Helper()
	k.waitFor(fmt.Sprintf("pod %s/%s gone", ns, staticName(name)), podTimeout, func() error {
		pods, err := kubetest.Pods(k.t.Context(), kubetest.ReadOnlyURL)
		if err != nil {
			return err
		}
		if _, ok := kubetest.FindPod(pods, ns, staticName(name)); ok {
			return errors.New("still listed by the kubelet")
		}
		out, err := vmtest.Command(k.t.Context(), "crictl", "ps", "-a", "-q", "--label", "io.kubernetes.pod.name="+staticName(name))
		if err != nil {
			return err
		}
		if out != "" {
			return fmt.Errorf("containers left: %s", strings.Fields(out))
		}
		return nil
	})
}

var cgroupsPathRE = regexp.MustCompile(`^(kubepods(-[a-z]+)?-pod[0-9a-f_]+\.slice):cri-containerd:([0-9a-f]{64})$`)

// containerCgroup returns the cgroup directory of a pod's container, checking
// that the kubelet and runc placed it the systemd way: an OCI cgroupsPath of
// the form slice:prefix:name, and a scope under kubepods.slice.
func (k *kube) containerCgroup(p kubetest.Pod, name string) string {
	k.t.Helper()
	c, ok := p.Container(name)
	if !ok {
		k.t.Fatalf("pod %s has no container %s", p.Metadata.Name, name)
	}
	var ins struct {
		Info struct {
			Pid         int `json:"pid"`
			RuntimeSpec struct {
				Linux struct {
					CgroupsPath string `json:"cgroupsPath"`
				} `json:"linux"`
			} `json:"runtimeSpec"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(vmtest.Run(k.t, "crictl", "inspect", c.ID())), &ins); err != nil {
		k.t.Fatal(err)
	}
	cp := ins.Info.RuntimeSpec.Linux.CgroupsPath
	m := cgroupsPathRE.FindStringSubmatch(cp)
	if m == nil || m[3] != c.ID() {
		k.t.Fatalf("container %s: OCI cgroupsPath %q is not kubepods-...-pod<uid>.slice:cri-containerd:%s", name, cp, c.ID())
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", ins.Info.Pid))
	if err != nil {
		k.t.Fatal(err)
	}
	rel := strings.TrimPrefix(strings.TrimSpace(string(b)), "0::")
	if !strings.HasPrefix(rel, "/kubepods.slice/") || !strings.HasSuffix(rel, "/"+m[1]+"/cri-containerd-"+c.ID()+".scope") {
		k.t.Fatalf("container %s runs in cgroup %q, want /kubepods.slice/.../%s/cri-containerd-%s.scope", name, rel, m[1], c.ID())
	}
	k.t.Logf("container %s: cgroupsPath %s -> %s", name, cp, rel)
	return filepath.Join(cgroup.Root, rel)
}

// pinOf is where the bpf package pins a cgroup's link: <pin_dir>/links/cg-<cgroup id>.
func (k *kube) pinOf(id uint64) string {
	return filepath.Join(k.pinDir, "links", fmt.Sprintf("cg-%d", id))
}

// wantOps waits until a link of the named ops is pinned for the cgroup at dir.
func (k *kube) wantOps(dir, ops string) {
	k.t.Helper()
	id, err := cgroup.ID(dir)
	if err != nil {
		k.t.Fatal(err)
	}
	k.waitFor(fmt.Sprintf("%s link on %s", ops, dir), linkTimeout, func() error {
		got, err := kubetest.LinkOps(k.pinOf(id))
		if err != nil {
			return fmt.Errorf("%w (cgroup %s)", err, cgroupState(dir))
		}
		if got != ops {
			return fmt.Errorf("pinned link carries %s", got)
		}
		return nil
	})
	k.t.Logf("%s pinned at %s", ops, k.pinOf(id))
	k.ids[dir] = id
}

// wantNoLink waits until the cgroup at dir is gone and no link is pinned for it.
func (k *kube) wantNoLink(dir string) {
	k.t.Helper()
	id, ok := k.ids[dir]
	if !ok {
		k.t.Fatalf("no cgroup id recorded for %s", dir)
	}
	k.waitFor("link of "+dir+" removed", linkTimeout, func() error {
		if _, err := os.Stat(k.pinOf(id)); err == nil {
			return fmt.Errorf("%s still pinned", k.pinOf(id))
		}
		if _, err := os.Stat(dir); err == nil {
			return fmt.Errorf("cgroup %s still exists", dir)
		}
		return nil
	})
}

func (k *kube) logs(id string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, _ := vmtest.Command(ctx, "sh", "-c", "crictl logs "+id+" 2>&1")
	return out
}

func (k *kube) dumpJournal() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, u := range []string{"kubelet", "containerd"} {
		out, _ := vmtest.Command(ctx, "journalctl", "-b", "-u", u, "--no-pager", "-n", "40", "-o", "cat")
		k.t.Logf("journal of %s (last 40 lines):\n%s", u, out)
	}
	out, _ := vmtest.Command(ctx, "crictl", "ps", "-a")
	k.t.Logf("crictl ps -a:\n%s", out)
	k.savePluginLogs()
}

// savePluginLogs writes the plugin containers' logs to the results folder,
// and their tails to the test log when the test has failed.
func (k *kube) savePluginLogs() {
	if k.pluginNS == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ids, _ := vmtest.Command(ctx, "crictl", "ps", "-a", "-q", "--label", "io.kubernetes.pod.namespace="+k.pluginNS)
	for _, id := range strings.Fields(ids) {
		logs := k.logs(id)
		os.WriteFile(filepath.Join(vmtest.ResultsDir(k.t), "plugin-"+id[:12]+".log"), []byte(logs), 0o644)
		if k.t.Failed() {
			k.t.Logf("plugin container %s log (last 40 lines):\n%s", id[:12], lastLines(logs, 40))
		}
	}
}

// cgroupState describes why a cgroup may not take a link: whether it has
// its own memcg, and which controllers its parent hands down.
func cgroupState(dir string) string {
	_, err := os.Stat(filepath.Join(dir, "memory.current"))
	sub, _ := os.ReadFile(filepath.Join(filepath.Dir(dir), "cgroup.subtree_control"))
	return fmt.Sprintf("memory.current: %v; parent subtree_control: %q", err == nil, strings.TrimSpace(string(sub)))
}
