//go:build vmtest || vmtest_systemd

package vmtest_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentcg/agentcg/internal/doctor"
	"github.com/agentcg/agentcg/internal/vmtest"
)

// TestVMDoctor: after configure, with the plugin running, doctor reports
// every check ok in the guest; with the plugin stopped it names it.
func TestVMDoctor(t *testing.T) {
	vmtest.Require(t)
	dir := vmtest.ResultsDir(t)
	agentcg := bin(t, "agentcg")
	// The guest's containerd config already has what configure adds.
	if out := run(t, agentcg, "configure", "--runtime", "containerd"); !strings.Contains(out, "has everything") {
		t.Fatalf("configure on the guest config:\n%s", out)
	}
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte("mode: bpf\nstate_dir: /run/agentcg-doctor/containers\npolicy:\n  pin_dir: /sys/fs/bpf/agentcg-doctor\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	doctorRun := func() ([]doctor.Result, string) { return doctorJSON(t, agentcg, cfg) }

	rs, text := doctorRun()
	if r := find(rs, "plugin"); r.Status != doctor.Fail || !strings.Contains(r.Fix, "agentcg-nri") {
		t.Errorf("plugin stopped: %+v\n%s", r, text)
	}
	startNRI(t, bin(t, "agentcg-nri"), "--config", cfg)
	rs, text = doctorRun()
	t.Logf("agentcg doctor in the guest:\n%s", text)
	for _, r := range rs {
		if r.Status != doctor.OK {
			t.Errorf("%s: %s %s (fix: %s)", r.Name, r.Status, r.Detail, r.Fix)
		}
	}

	// From a private cgroup namespace rooted below the host's root (what
	// containerd gives an unprivileged container), doctor names the
	// problem the chart's privileged pod avoids.
	sub := "/sys/fs/cgroup/agentcg-doctor-ns"
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(sub)
	out, _ := exec.Command("sh", "-c", `echo $$ > "$1/cgroup.procs" && exec unshare -C "$2" doctor --json --config "$3"`,
		"sh", sub, agentcg, cfg).Output()
	var ns []doctor.Result
	if err := json.Unmarshal(out, &ns); err != nil {
		t.Fatalf("doctor --json in a private cgroup namespace: %v\n%s", err, out)
	}
	if r := find(ns, "privileges"); r.Status != doctor.Fail || !strings.Contains(r.Detail, "private cgroup namespace") {
		t.Errorf("doctor in a private cgroup namespace: %+v", r)
	} else {
		t.Logf("in a private cgroup namespace: %s: %s (fix: %s)", r.Status, r.Detail, r.Fix)
	}
}

// doctorJSON runs agentcg doctor with --json and without.
func doctorJSON(t *testing.T, agentcg, cfg string) ([]doctor.Result, string) {
	t.Helper()
	out, err := exec.Command(agentcg, "doctor", "--json", "--config", cfg).Output()
	var rs []doctor.Result
	if jerr := json.Unmarshal(out, &rs); jerr != nil {
		t.Fatalf("doctor --json: %v (exit %v)\n%s", jerr, err, out)
	}
	text, _ := exec.Command(agentcg, "doctor", "--config", cfg).CombinedOutput()
	return rs, string(text)
}

func find(rs []doctor.Result, name string) doctor.Result {
	for _, r := range rs {
		if r.Name == name {
			return r
		}
	}
	return doctor.Result{Name: name, Status: "absent"}
}
