//go:build vmtest

package bpf

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/agentcg/agentcg/internal/vmtest"
	"github.com/agentcg/agentcg/policy"
	"github.com/cilium/ebpf"
)

// TestGrowthSignalMatchesGo runs the C growth_observe (growth.bpf.h, the
// code LOW's get_high_delay_ms runs per HIGH cgroup) in the kernel through
// BPF_PROG_RUN of a syscall program, and policy.GrowthSignal.Observe in Go,
// on the same samples, and requires the same answer at every step: a
// hand-written table, then seeded random walks with irregular, repeated and
// out-of-order sample times.
func TestGrowthSignalMatchesGo(t *testing.T) {
	vmtest.Require(t)
	var objs growthcheckObjects
	if err := loadGrowthcheckObjects(&objs, nil); err != nil {
		t.Fatalf("load growthcheck: %v", err)
	}
	defer objs.Close()
	const mib = 1 << 20
	t0 := time.Unix(1_000_000, 0)

	type sample struct {
		ns    int64 // since t0; the BPF side adds 1 so that no time is 0 (unset)
		usage uint64
	}
	run := func(t *testing.T, window time.Duration, minGrowth uint64, samples []sample) int {
		t.Helper()
		g := policy.GrowthSignal{Window: window, MinGrowth: minGrowth}
		var c growthcheckGrowthCheck
		actives := 0
		for i, s := range samples {
			want := g.Observe(t0.Add(time.Duration(s.ns)), s.usage)
			c.Now, c.Usage, c.Window, c.MinGrowth = uint64(s.ns+1), s.usage, uint64(window), minGrowth
			if _, err := objs.RunGrowthCheck.Run(&ebpf.RunOptions{Context: &c, ContextOut: &c}); err != nil {
				t.Fatalf("BPF_PROG_RUN: %v", err)
			}
			if got := c.Active == 1; got != want {
				t.Fatalf("window %v, min %d, sample %d (t=%v, usage %d): BPF active %v, Go %v; BPF state %+v; samples so far %v",
					window, minGrowth, i, time.Duration(s.ns), s.usage, got, want, c.G, samples[:i+1])
			}
			if want {
				actives++
			}
		}
		return actives
	}

	ms := func(n int64) int64 { return n * int64(time.Millisecond) }
	table := []struct {
		name    string
		window  time.Duration
		min     uint64
		samples []sample
	}{
		{"window 0", 0, 8 * mib, []sample{{0, 10 * mib}, {ms(5000), 10 * mib}}},
		{"growth above the minimum", 2 * time.Second, 8 * mib, []sample{{0, 100 * mib}, {ms(500), 109 * mib}, {ms(2400), 109 * mib}, {ms(2600), 109 * mib}}},
		{"growth below the minimum", 2 * time.Second, 8 * mib, []sample{{0, 100 * mib}, {ms(500), 104 * mib}, {ms(1000), 107 * mib}}},
		{"slow growth across windows", 2 * time.Second, 8 * mib, []sample{{0, 100 * mib}, {ms(1900), 105 * mib}, {ms(2100), 106 * mib}, {ms(3000), 110 * mib}}},
		{"from the window's minimum", 2 * time.Second, 8 * mib, []sample{{0, 100 * mib}, {ms(300), 60 * mib}, {ms(600), 69 * mib}}},
		{"exactly the minimum at exactly the window", 2 * time.Second, 8 * mib, []sample{{0, 100 * mib}, {ms(2000), 108 * mib}, {ms(4000), 108 * mib}, {ms(4001), 108 * mib}}},
		{"min 0 counts any rise", 2 * time.Second, 0, []sample{{0, 100}, {100, 101}}},
		{"out of order", 2 * time.Second, 8 * mib, []sample{{ms(1000), 100 * mib}, {ms(900), 120 * mib}, {ms(800), 130 * mib}, {ms(3000), 130 * mib}}},
	}
	for _, c := range table {
		t.Run(c.name, func(t *testing.T) { run(t, c.window, c.min, c.samples) })
	}

	t.Run("random walks", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(9, 9))
		steps, actives := 0, 0
		for walk := 0; walk < 300; walk++ {
			window := []time.Duration{0, 500 * time.Millisecond, 2 * time.Second}[rng.IntN(3)]
			minGrowth := []uint64{0, 1, 8 * mib}[rng.IntN(3)]
			var samples []sample
			ns, usage := int64(rng.IntN(1000)), uint64(64*mib)
			for i := 0; i < 60; i++ {
				switch r := rng.IntN(20); {
				case r == 0: // same instant
				case r == 1: // another CPU's earlier clock read
					ns -= int64(rng.IntN(50)) * int64(time.Millisecond)
				default:
					ns += int64(rng.IntN(1500)) * int64(time.Millisecond)
				}
				ns = max(ns, 0)
				d := int64(rng.IntN(13*mib)) - 5*mib // drifts upwards, sometimes frees
				usage = uint64(max(int64(usage)+d, 0))
				samples = append(samples, sample{ns, usage})
			}
			actives += run(t, window, minGrowth, samples)
			steps += len(samples)
		}
		t.Logf("%d samples in 300 walks agree; %d of them active", steps, actives)
		if actives == 0 || actives == steps {
			t.Errorf("the walks never exercised both answers (%d of %d active)", actives, steps)
		}
	})
}
