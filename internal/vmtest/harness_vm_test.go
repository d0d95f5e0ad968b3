//go:build vmtest

package vmtest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/agentcg/agentcg/cgroup"
	"github.com/agentcg/agentcg/internal/vmtest"
)

const trace = "/traces/CLI_Tools_Easy" // 89 s, peak 279 MB at scale 1

// TestGuestKernel checks what every other vmtest relies on: the patched
// kernel, the delegated cgroup2 controllers, bpffs and the struct_ops type.
func TestGuestKernel(t *testing.T) {
	vmtest.Require(t)
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	if got := unix.ByteSliceToString(u.Release[:]); got != "7.3.4-memcgbpf" {
		t.Errorf("uname -r = %q, want 7.3.4-memcgbpf", got)
	}
	for _, f := range []string{"cgroup.controllers", "cgroup.subtree_control"} {
		s, err := cgroup.Read(cgroup.Root, f)
		if err != nil {
			t.Fatal(err)
		}
		have := strings.Fields(s)
		for _, c := range []string{"memory", "cpu", "io", "pids"} {
			if !contains(have, c) {
				t.Errorf("%s = %q, missing %s", f, s, c)
			}
		}
	}
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/bpf", &st); err != nil {
		t.Fatal(err)
	}
	if st.Type != unix.BPF_FS_MAGIC {
		t.Errorf("/sys/fs/bpf is not bpffs (magic %#x)", st.Type)
	}
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		t.Fatalf("load kernel BTF: %v", err)
	}
	var ops *btf.Struct
	if err := spec.TypeByName("memcg_bpf_ops", &ops); err != nil {
		t.Fatalf("kernel BTF has no struct memcg_bpf_ops: %v", err)
	}
	var names []string
	for _, m := range ops.Members {
		names = append(names, m.Name)
	}
	for _, want := range []string{"handle_cgroup_online", "handle_cgroup_offline", "below_low", "below_min", "get_high_delay_ms"} {
		if !contains(names, want) {
			t.Errorf("memcg_bpf_ops members %v lack %s", names, want)
		}
	}
}

// TestDocker runs the replay image under an experiment parent cgroup: the
// trace check, then a small scaled replay that must complete.
func TestDocker(t *testing.T) {
	vmtest.Require(t)
	vmtest.RequireReplayImage(t)
	parent := vmtest.NewCgroup(t, "vmtest-docker")
	base := []string{"run", "--rm", "--network", "none", "--cgroup-parent=/vmtest-docker", vmtest.ReplayImage}
	vmtest.Run(t, "docker", append(base, "check", trace)...)

	out := vmtest.Run(t, "docker", append(base, "run", trace, "--mem-scale", "0.05", "--speed", "20")...) // result JSON on stdout
	if err := os.WriteFile(filepath.Join(vmtest.ResultsDir(t), "result.json"), []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	var res struct {
		Complete  bool    `json:"complete"`
		PeakBytes int64   `json:"peak_bytes"`
		Samples   int     `json:"samples"`
		MemScale  float64 `json:"mem_scale"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("replay result: %v\n%s", err, out)
	}
	if !res.Complete || res.Samples == 0 || res.PeakBytes <= 0 || res.MemScale != 0.05 {
		t.Errorf("replay result = %+v, want complete with samples, a peak and mem_scale 0.05", res)
	}
	// The container's cgroup was a child of the parent, and is gone after --rm.
	if n := countChildren(t, parent); n != 0 {
		t.Errorf("%s still has %d child cgroups after docker run --rm", parent, n)
	}
}

// crictlInspect is the part of `crictl inspect` output the CRI test reads.
type crictlInspect struct {
	Status struct {
		State       string            `json:"state"`
		ExitCode    int               `json:"exitCode"`
		Annotations map[string]string `json:"annotations"`
	} `json:"status"`
	Info struct {
		Pid         int `json:"pid"`
		RuntimeSpec struct {
			Annotations map[string]string `json:"annotations"`
			Linux       struct {
				CgroupsPath string `json:"cgroupsPath"`
			} `json:"linux"`
		} `json:"runtimeSpec"`
	} `json:"info"`
}

// TestCRI runs a pod and a replay container through CRI (crictl) with
// agentcg.priority=high under a chosen cgroup parent, to completion, and
// reads back the container's cgroup and annotation.
func TestCRI(t *testing.T) {
	vmtest.Require(t)
	vmtest.RequireReplayImage(t)
	const parentName = "vmtest-cri"
	parent := vmtest.NewCgroup(t, parentName)
	dir := t.TempDir()
	ann := map[string]string{"agentcg.priority": "high"}
	pod := map[string]any{
		"metadata":      map[string]any{"name": "vmtest", "namespace": "default", "uid": fmt.Sprint(time.Now().UnixNano())},
		"annotations":   ann,
		"log_directory": dir,
		"linux": map[string]any{
			"cgroup_parent":    "/" + parentName,
			"security_context": map[string]any{"namespace_options": map[string]any{"network": 2}}, // host network
		},
	}
	ctr := map[string]any{
		"metadata":    map[string]any{"name": "replay"},
		"image":       map[string]any{"image": vmtest.ReplayImage},
		"args":        []string{"run", trace, "--mem-scale", "0.05", "--speed", "10"},
		"annotations": ann,
		"log_path":    "replay.log",
	}
	podFile, ctrFile := writeJSON(t, dir, "pod.json", pod), writeJSON(t, dir, "ctr.json", ctr)

	podID := vmtest.Run(t, "crictl", "runp", podFile)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		vmtest.Command(ctx, "crictl", "stopp", podID)
		vmtest.Command(ctx, "crictl", "rmp", "-f", podID)
	})
	id := vmtest.Run(t, "crictl", "create", podID, ctrFile, podFile)
	vmtest.Run(t, "crictl", "start", id)

	// While it runs, the kernel must place it where the spec says.
	var procCgroup string
	var ins crictlInspect
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if err := json.Unmarshal([]byte(vmtest.Run(t, "crictl", "inspect", id)), &ins); err != nil {
			t.Fatal(err)
		}
		if ins.Status.State == "CONTAINER_RUNNING" && ins.Info.Pid > 0 && procCgroup == "" {
			if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", ins.Info.Pid)); err == nil {
				procCgroup = strings.TrimSpace(string(b))
			}
		}
		if ins.Status.State == "CONTAINER_EXITED" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s still %s after 3 min", id, ins.Status.State)
		}
		time.Sleep(200 * time.Millisecond)
	}
	logs, err := os.ReadFile(filepath.Join(dir, "replay.log")) // CRI log: stdout and stderr lines
	if err != nil {
		t.Fatal(err)
	}
	if ins.Status.ExitCode != 0 || !strings.Contains(string(logs), `"complete": true`) {
		t.Errorf("container exit code %d, want 0 and a complete result; log:\n%s", ins.Status.ExitCode, logs)
	}
	wantPath := "/" + parentName + "/" + id
	if got := ins.Info.RuntimeSpec.Linux.CgroupsPath; got != wantPath {
		t.Errorf("OCI cgroupsPath = %q, want %q", got, wantPath)
	}
	if procCgroup != "0::"+wantPath {
		t.Errorf("/proc/<pid>/cgroup while running = %q, want 0::%s", procCgroup, wantPath)
	}
	if got := ins.Info.RuntimeSpec.Annotations["agentcg.priority"]; got != "high" {
		t.Errorf("OCI spec annotation agentcg.priority = %q, want high (CRI container_annotations passthrough)", got)
	}
	if got := ins.Status.Annotations["agentcg.priority"]; got != "high" {
		t.Errorf("CRI status annotation agentcg.priority = %q, want high", got)
	}
	if _, err := os.Stat(parent); err != nil {
		t.Error(err)
	}
}

// TestOOMAccounting proves the accounting the experiment relies on: replay
// containers in a parent whose memory.max is below the trace's peak, without
// swap, are OOM-killed, and the parent's oom_kill count rises by exactly the
// number of kills.
func TestOOMAccounting(t *testing.T) {
	vmtest.Require(t)
	vmtest.RequireReplayImage(t)
	// At mem-scale 0.5 the trace peaks near 140 MB and idles near 100 MB.
	parent := vmtest.NewCgroup(t, "vmtest-oom", "memory.max", "48M", "memory.swap.max", "0")
	before := vmtest.OOMKills(t, parent)
	const runs = 2
	for i := range runs {
		name := fmt.Sprintf("vmtest-oom-%d", i)
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
		_, err := vmtest.Command(ctx, "docker", "run", "--name", name, "--network", "none",
			"--cgroup-parent=/vmtest-oom", vmtest.ReplayImage, "run", trace, "--mem-scale", "0.5", "--unpaced")
		cancel()
		t.Cleanup(func() { vmtest.Command(context.Background(), "docker", "rm", "-f", name) })
		if code := vmtest.ExitCode(err); code != 137 {
			t.Errorf("run %d: exit %d (%v), want 137", i, code, err)
		}
		if got := vmtest.Run(t, "docker", "inspect", "-f", "{{.State.OOMKilled}}", name); got != "true" {
			t.Errorf("run %d: State.OOMKilled = %s, want true", i, got)
		}
	}
	if got := vmtest.OOMKills(t, parent) - before; got != runs {
		t.Errorf("oom_kill in %s/memory.events rose by %d, want %d", parent, got, runs)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func writeJSON(t *testing.T, dir, name string, v any) string {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func countChildren(t *testing.T, dir string) int {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if e.IsDir() {
			n++
		}
	}
	return n
}
