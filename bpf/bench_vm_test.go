//go:build vmtest

package bpf

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/agentcg/agentcg/internal/vmtest"
	"github.com/agentcg/agentcg/policy"
)

// TestFaultOverheadGateClosed compares page-fault throughput of a cgroup
// with low ops attached and the gate closed against no ops, alternating the
// two in one run; the ratio is the median of per-round ratios. Target >= 0.98.
// A second ratio adds an idle HIGH cgroup elsewhere, which puts the
// count_memcg_events tracepoint on every page fault (gate still closed:
// HIGH does not fault).
func TestFaultOverheadGateClosed(t *testing.T) {
	vmtest.Require(t)
	ctx := context.Background()
	p := newPolicy(t, policy.Config{})
	parent := cg(t, filepath.Join(cgRoot, "agentcg-bench"))
	dir := cg(t, filepath.Join(parent, "low"))
	idle := cg(t, filepath.Join(parent, "idlehigh"))
	const mb, iters, rounds = 32, 4, 9
	timed(t, dir, "churn", mb, iters) // warm up
	var lowOnly, withTP []float64
	for r := 0; r < rounds; r++ {
		noops := timed(t, dir, "churn", mb, iters)
		if _, err := p.Attach(ctx, dir, policy.Low); err != nil {
			t.Fatal(err)
		}
		ops := timed(t, dir, "churn", mb, iters)
		if _, err := p.Attach(ctx, idle, policy.High); err != nil {
			t.Fatal(err)
		}
		tp := timed(t, dir, "churn", mb, iters)
		for _, d := range []string{dir, idle} {
			if err := p.Detach(ctx, d); err != nil {
				t.Fatal(err)
			}
		}
		lowOnly = append(lowOnly, float64(noops)/float64(ops)) // throughput with ops / without
		withTP = append(withTP, float64(noops)/float64(tp))
	}
	r1, r2 := medianF(lowOnly), medianF(withTP)
	t.Logf("BENCH page-fault throughput ratio, low ops gate closed / no ops: %.3f %.3v (target >= 0.98)", r1, lowOnly)
	t.Logf("BENCH same with an idle HIGH attached (tracepoint on every fault): %.3f %.3v", r2, withTP)
	os.WriteFile(filepath.Join(vmtest.ResultsDir(t), "fault_ratio.txt"),
		[]byte(fmt.Sprintf("low_ops_gate_closed %.4f\nwith_high_tracepoint %.4f\n", r1, r2)), 0o644)
	if r1 < 0.95 { // TCG on a shared host jitters by a few percent; 0.98 is the reported target
		t.Errorf("page-fault throughput ratio %.3f: gate-closed low ops cost more than 5%%", r1)
	}
}
