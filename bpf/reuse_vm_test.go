//go:build vmtest

package bpf

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentcg/agentcg/internal/vmtest"
	"github.com/agentcg/agentcg/policy"
	"github.com/cilium/ebpf"
)

// The "attach" role's input (environment) and output (one JSON line).
const envAttach = "AGENTCG_BPF_TEST_ATTACH" // JSON attachRequest

type attachRequest struct {
	Config    policy.Config   `json:"config"`
	RecordDir string          `json:"record_dir"`
	Cgroup    string          `json:"cgroup"`
	Priority  policy.Priority `json:"priority"`
}

type attachResult struct {
	Loads    int    `json:"loads"`
	Ms       int64  `json:"ms"` // Load + Attach, wall
	CgroupID uint64 `json:"cgroup_id"`
	Err      string `json:"err,omitempty"`
}

func attachRole() int {
	var req attachRequest
	if err := json.Unmarshal([]byte(os.Getenv(envAttach)), &req); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	t0 := time.Now()
	var res attachResult
	p, err := Load(Options{Config: req.Config, RecordDir: req.RecordDir})
	if err == nil {
		var l policy.Link
		l, err = p.Attach(context.Background(), req.Cgroup, req.Priority)
		res.CgroupID, res.Loads = l.CgroupID, p.Loads()
		p.Close()
	}
	res.Ms = time.Since(t0).Milliseconds()
	if err != nil {
		res.Err = err.Error()
	}
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// attachInAnotherProcess runs the attach role as a child process.
func attachInAnotherProcess(t *testing.T, cfg policy.Config, recordDir, dir string, prio policy.Priority) attachResult {
	t.Helper()
	res, err := runAttachProcess(cfg, recordDir, dir, prio)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func runAttachProcess(cfg policy.Config, recordDir, dir string, prio policy.Priority) (attachResult, error) {
	b, _ := json.Marshal(attachRequest{Config: cfg, RecordDir: recordDir, Cgroup: dir, Priority: prio})
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = append(os.Environ(), envRole+"=attach", envAttach+"="+string(b))
	cmd.Stderr = os.Stderr
	var res attachResult
	out, err := cmd.Output()
	if err != nil {
		return res, fmt.Errorf("attach process: %w", err)
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return res, fmt.Errorf("attach process output %q: %w", out, err)
	}
	if res.Err != "" {
		return res, fmt.Errorf("attach %s %s in another process: %s", prio, dir, res.Err)
	}
	return res, nil
}

// progsAfter counts the programs in the kernel whose id is above since, and
// returns the highest id seen. Ids only grow, so this counts the programs
// loaded after since was taken; a plain count would also see the previous
// test's programs, which the kernel frees a little later.
func progsAfter(t *testing.T, since ebpf.ProgramID) (int, ebpf.ProgramID) {
	t.Helper()
	n, last := 0, since
	for id := ebpf.ProgramID(0); ; {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			return n, last
		}
		if err != nil {
			t.Fatal(err)
		}
		if next > since {
			n++
			last = max(last, next)
		}
		id = next
	}
}

func opsPins(t *testing.T, p *Policy) []string {
	t.Helper()
	ents, _ := os.ReadDir(p.opsDir())
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// TestOpsReusedAcrossProcesses: the first process to attach loads the
// objects and pins the ops; later processes with the same knobs reopen them
// and load nothing (no new programs in the kernel); other knobs load their
// own, and a load removes the ops pins no link uses any more. Concurrent
// first attaches with new knobs load once between them.
func TestOpsReusedAcrossProcesses(t *testing.T) {
	vmtest.Require(t)
	ctx := context.Background()
	cfg := policy.DefaultConfig()
	p := newPolicy(t, cfg) // pin dir, record dir and cleanup for the children
	cfg = p.cfg
	rec := p.recs.dir
	parent := cg(t, filepath.Join(cgRoot, "agentcg-reuse"))
	dirs := make([]string, 9)
	for i := range dirs {
		dirs[i] = cg(t, filepath.Join(parent, fmt.Sprintf("c%d", i)))
	}

	_, id0 := progsAfter(t, 0)
	first := attachInAnotherProcess(t, cfg, rec, dirs[0], policy.High)
	n1, id1 := progsAfter(t, id0)
	second := attachInAnotherProcess(t, cfg, rec, dirs[1], policy.Low)
	third := attachInAnotherProcess(t, cfg, rec, dirs[2], policy.High)
	n2, _ := progsAfter(t, id1)
	t.Logf("first process: %d load(s), %d ms, %d new programs; second: %d load(s), %d ms; third: %d load(s), %d ms; %d new programs after the first",
		first.Loads, first.Ms, n1, second.Loads, second.Ms, third.Loads, third.Ms, n2)
	if first.Loads != 1 || second.Loads != 0 || third.Loads != 0 {
		t.Errorf("loads %d, %d, %d: want 1, 0, 0", first.Loads, second.Loads, third.Loads)
	}
	if n1 != 3 || n2 != 0 {
		t.Errorf("new programs in the kernel: %d after the first process, %d after the next two: want 3 (below_low, below_min, get_high_delay_ms), then 0", n1, n2)
	}
	defaultPins := opsPins(t, p)
	if len(defaultPins) != 2 {
		t.Fatalf("ops pins %v, want high and low", defaultPins)
	}
	// The links of all three processes use the same two pinned maps.
	used := p.linkedOpsMaps()
	if len(used) != 2 {
		t.Errorf("the three links use %d distinct ops maps, want 2", len(used))
	}

	// Other knobs: their own low ops; the default ones stay while a link
	// uses them.
	other := cfg
	other.GatePct = 50
	o := attachInAnotherProcess(t, other, rec, dirs[3], policy.Low)
	pins := opsPins(t, p)
	t.Logf("gate 50: %d load(s), %d ms; ops pins %v", o.Loads, o.Ms, pins)
	if o.Loads != 1 || len(pins) != 3 {
		t.Errorf("gate 50: %d loads and pins %v, want 1 load and three pins (shared high, two lows)", o.Loads, pins)
	}
	// Once no link uses the default low ops, the next load removes its pin.
	if err := p.Detach(ctx, dirs[1]); err != nil {
		t.Fatal(err)
	}
	third2 := cfg
	third2.GatePct = 60
	attachInAnotherProcess(t, third2, rec, dirs[4], policy.Low)
	pins = opsPins(t, p)
	t.Logf("after detaching the default LOW and loading gate 60: ops pins %v", pins)
	for _, pin := range defaultPins {
		if strings.HasPrefix(pin, "low-") && contains(pins, pin) {
			t.Errorf("unused default low ops pin %s was not removed: %v", pin, pins)
		}
	}
	if len(pins) != 3 {
		t.Errorf("ops pins %v, want high, gate-50 low (linked), gate-60 low", pins)
	}

	// Four processes with new knobs at once: one loads, the others wait for
	// it (the load lock) and reopen.
	conc := cfg
	conc.GatePct = 70
	var mu sync.Mutex
	var res []attachResult
	var wg sync.WaitGroup
	for _, d := range dirs[5:9] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := runAttachProcess(conc, rec, d, policy.Low)
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			res = append(res, r)
			mu.Unlock()
		}()
	}
	wg.Wait()
	loads := 0
	for _, r := range res {
		loads += r.Loads
	}
	t.Logf("4 concurrent first attaches with gate 70: %+v", res)
	if loads != 1 {
		t.Errorf("4 concurrent processes loaded %d times, want 1", loads)
	}
	links, _ := p.List(ctx)
	if len(links) != 8 {
		t.Errorf("%d links listed, want 8: %+v", len(links), links)
	}
}

func contains(xs []string, x string) bool {
	for _, s := range xs {
		if s == x {
			return true
		}
	}
	return false
}
