//go:build vmtest

package bpf

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentcg/agentcg/internal/vmtest"
	"github.com/agentcg/agentcg/policy"
)

// TestFaultOverheadGateClosed compares page-fault throughput of a cgroup
// with low ops attached and the gate closed against no ops, interleaving
// the cases round by round in one run. Throughput is taken from each case's
// fastest round (the one least disturbed by other load on the host: TCG
// guests on a shared host see large outliers); medians are printed too.
// Target >= 0.98. A third case adds an idle HIGH cgroup elsewhere, which
// puts the count_memcg_events tracepoint on every page fault (gate still
// closed: HIGH does not fault).
func TestFaultOverheadGateClosed(t *testing.T) {
	vmtest.Require(t)
	ctx := context.Background()
	p := newPolicy(t, policy.Config{})
	parent := cg(t, filepath.Join(cgRoot, "agentcg-bench"))
	dir := cg(t, filepath.Join(parent, "low"))
	idle := cg(t, filepath.Join(parent, "idlehigh"))
	const mb, iters, rounds = 32, 2, 21
	timed(t, dir, "churn", mb, iters) // warm up
	var noops, ops, tp []time.Duration
	for r := 0; r < rounds; r++ {
		noops = append(noops, timed(t, dir, "churn", mb, iters))
		if _, err := p.Attach(ctx, dir, policy.Low); err != nil {
			t.Fatal(err)
		}
		ops = append(ops, timed(t, dir, "churn", mb, iters))
		if _, err := p.Attach(ctx, idle, policy.High); err != nil {
			t.Fatal(err)
		}
		tp = append(tp, timed(t, dir, "churn", mb, iters))
		for _, d := range []string{dir, idle} {
			if err := p.Detach(ctx, d); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Throughput ratio with ops / without = time without / time with.
	r1 := float64(minD(noops)) / float64(minD(ops))
	r2 := float64(minD(noops)) / float64(minD(tp))
	t.Logf("BENCH %d rounds of %d x %d MiB faulted: fastest no ops %v, low ops %v, low ops + idle HIGH %v; medians %v, %v, %v",
		rounds, iters, mb, minD(noops), minD(ops), minD(tp), median(noops), median(ops), median(tp))
	t.Logf("BENCH page-fault throughput ratio, low ops gate closed / no ops: %.3f (target >= 0.98)", r1)
	t.Logf("BENCH same with an idle HIGH attached (tracepoint on every fault): %.3f", r2)
	os.WriteFile(filepath.Join(vmtest.ResultsDir(t), "fault_ratio.txt"),
		[]byte(fmt.Sprintf("low_ops_gate_closed %.4f\nwith_high_tracepoint %.4f\n", r1, r2)), 0o644)
	if r1 < 0.93 { // TCG jitter on a shared host remains; 0.98 is the reported target
		t.Errorf("page-fault throughput ratio %.3f: gate-closed low ops cost more than 7%%", r1)
	}
}

func minD(ds []time.Duration) time.Duration {
	m := ds[0]
	for _, d := range ds {
		m = min(m, d)
	}
	return m
}
