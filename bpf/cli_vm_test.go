//go:build vmtest

package bpf

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentcg/agentcg/internal/vmtest"
	"github.com/agentcg/agentcg/policy"
)

// agentcg runs bin/agentcg (built by `make build`) as a separate process.
func agentcg(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin := filepath.Join(vmtest.Src(t), "bin", "agentcg")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s missing: run `make build` before the VM tests: %v", bin, err)
	}
	out, err := exec.Command(bin, args...).CombinedOutput()
	t.Logf("$ agentcg %s\n%s", strings.Join(args, " "), out)
	return string(out), err
}

// TestCLILinksOutliveTheProcess: attach returns after pinning, status in a
// new process lists the links with counters, detach --all leaves nothing.
func TestCLILinksOutliveTheProcess(t *testing.T) {
	vmtest.Require(t)
	pinDir := "/sys/fs/bpf/agentcg-cli"
	parent := cg(t, filepath.Join(cgRoot, "agentcg-cli"))
	h := cg(t, filepath.Join(parent, "high"))
	l := cg(t, filepath.Join(parent, "low"))
	if out, err := agentcg(t, "probe"); err != nil || !strings.Contains(out, "memcg_bpf_ops: available") {
		t.Fatalf("probe: %v", err)
	}
	if _, err := agentcg(t, "attach", "--mode", "bpf", "--pin-dir", pinDir, "--high", h, "--low", l, "--gate-pct", "90"); err != nil {
		t.Fatalf("attach: %v", err)
	}
	timed(t, l, "alloc", 8, 1) // LOW charges: counters move while no process holds the links
	out, err := agentcg(t, "status", "--json", "--pin-dir", pinDir)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	var st struct {
		Links []struct {
			policy.Link
			Counters policy.Counters `json:"counters"`
		} `json:"links"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	got := map[string]policy.Priority{}
	for _, k := range st.Links {
		got[k.CgroupPath] = k.Priority
		if k.Priority == policy.Low && k.Counters.DelayCalls == 0 {
			t.Errorf("LOW link has no get_high_delay_ms calls: %+v", k)
		}
	}
	if got[h] != policy.High || got[l] != policy.Low || len(st.Links) != 2 {
		t.Errorf("status links %+v", st.Links)
	}
	if _, err := agentcg(t, "status", "--pin-dir", pinDir); err != nil {
		t.Errorf("status table: %v", err)
	}
	if _, err := agentcg(t, "detach", "--all", "--pin-dir", pinDir); err != nil {
		t.Fatalf("detach --all: %v", err)
	}
	ents, _ := os.ReadDir(pinDir)
	if len(ents) != 0 {
		t.Errorf("detach --all left %d entries under %s", len(ents), pinDir)
	}
	ids, _ := LinkIDs()
	if len(ids) != 0 {
		t.Errorf("links left after detach --all: %v", ids)
	}
}
