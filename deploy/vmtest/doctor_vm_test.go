//go:build vmtest

package vmtest_test

import (
	"encoding/json"
	"fmt"
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

// TestVMCapabilities measures which capabilities the policy really needs:
// agentcg attach (load the struct_ops and tracepoint objects, attach to a
// cgroup, pin the link) and detach run as uid 0 with every capability
// outside a given set removed from the bounding set (the Helm chart's
// securityContext does the same). The chart's set must work, and dropping
// any one of its capabilities must not.
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
	sets := [][]string{chart, {"sys_admin"}, {"bpf"}, {"perfmon"}, {}}
	results := map[string]bool{}
	for _, s := range sets {
		ok, out := try(s)
		results[strings.Join(s, ",")] = ok
		t.Logf("caps {%s}: attach+detach ok=%v %s", strings.Join(s, ","), ok, firstLine(out))
	}
	if !results[strings.Join(chart, ",")] {
		t.Fatalf("the chart's capabilities %v do not suffice", chart)
	}
	for i := range chart {
		less := append(append([]string{}, chart[:i]...), chart[i+1:]...)
		if ok, _ := try(less); ok {
			t.Errorf("the chart adds %s, but attach and detach work without it (%v): drop it from values.yaml", chart[i], less)
		}
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + fmt.Sprintf(" (+%d lines)", strings.Count(s, "\n"))
	}
	return s
}
