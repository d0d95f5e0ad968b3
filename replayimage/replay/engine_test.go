package replay

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/agentcg/agentcg/replayimage/trace"
	"golang.org/x/sys/unix"
)

// resident returns, per page of the arena, whether the kernel has it mapped.
func resident(t *testing.T, a *Arena) []bool {
	t.Helper()
	vec := make([]byte, a.MaxPages())
	// x/sys has no Mincore wrapper.
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&a.mem[0])), uintptr(len(a.mem)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatal(errno)
	}
	out := make([]bool, len(vec))
	for i, v := range vec {
		out[i] = v&1 == 1
	}
	return out
}

func TestArenaIsPageExact(t *testing.T) {
	for _, touch := range []bool{false, true} {
		a, err := NewArena(64<<20, touch)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		for _, pages := range []int{0, 1, 1000, 4097, 16384, 5, 16383, 0, 3, 7000} {
			if err := a.Resize(context.Background(), pages); err != nil {
				t.Fatal(err)
			}
			if a.Pages() != pages {
				t.Fatalf("touch=%v: Pages() = %d after Resize(%d)", touch, a.Pages(), pages)
			}
			for i, r := range resident(t, a) {
				if r != (i < pages) {
					t.Fatalf("touch=%v resize %d: page %d resident=%v", touch, pages, i, r)
				}
			}
		}
		if err := a.Resize(context.Background(), a.MaxPages()+1); err == nil {
			t.Fatal("resize past the arena succeeded")
		}
	}
}

func TestArenaNoHugePages(t *testing.T) {
	a, err := NewArena(8<<20, false)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	// One page resident must cost one page, even where THP is "always".
	if err := a.Resize(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range resident(t, a) {
		if r {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d pages resident after touching one", n)
	}
}

func synthetic(t *testing.T, used []int64, cpu []float64) *trace.Trace {
	t.Helper()
	raw := make([]trace.RawSample, len(used))
	for i, u := range used {
		raw[i] = trace.RawSample{Index: i, Epoch: 1000 + float64(i), UsedBytes: u, LimitBytes: 16e9}
		if cpu != nil {
			raw[i].CPUAvg = cpu[i]
		}
	}
	tr, err := trace.Clean(raw, trace.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	tr.Name = "synthetic"
	return tr
}

func TestRunAccounting(t *testing.T) {
	ps := int64(os.Getpagesize())
	used := []int64{10e6, 30e6, 30e6, 5e6, 40_000_001, 20e6}
	pages := func(b int64) int64 { return (b + ps - 1) / ps }
	var wantTouched, wantReleased, prev int64
	grows := 0
	for _, u := range used {
		p := pages(u)
		if p > prev {
			wantTouched += (p - prev) * ps
			grows++
		} else {
			wantReleased += (prev - p) * ps
		}
		prev = p
	}
	for _, unpaced := range []bool{false, true} {
		var log bytes.Buffer
		var seen []Status
		res, err := Run(context.Background(), synthetic(t, used, nil), Options{
			Speed: 100, MemScale: 1, Unpaced: unpaced, StepLog: &log,
			Progress: func(s Status) { seen = append(seen, s) },
		})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Complete || res.Samples != len(used) || res.SamplesTotal != len(used) {
			t.Fatalf("unpaced=%v: complete %v samples %d/%d", unpaced, res.Complete, res.Samples, res.SamplesTotal)
		}
		if res.PeakBytes != pages(40_000_001)*ps || res.TargetPeak != res.PeakBytes {
			t.Errorf("peak %d target peak %d, want %d", res.PeakBytes, res.TargetPeak, pages(40_000_001)*ps)
		}
		if res.TouchedBytes != wantTouched || res.ReleasedBytes != wantReleased {
			t.Errorf("touched %d released %d, want %d %d", res.TouchedBytes, res.ReleasedBytes, wantTouched, wantReleased)
		}
		if res.AllocLatencyMs.N != grows || res.AllocLatencyMs.Max < res.AllocLatencyMs.P50 {
			t.Errorf("latency %+v, want n=%d and max >= p50", res.AllocLatencyMs, grows)
		}
		if unpaced {
			if res.IdealS != 0 || res.Slowdown != 0 || res.Mode != "unpaced" {
				t.Errorf("unpaced: ideal %v slowdown %v mode %s", res.IdealS, res.Slowdown, res.Mode)
			}
		} else {
			if res.IdealS != 0.05 || res.CompletionS < res.IdealS || res.Slowdown < 1 {
				t.Errorf("paced: ideal %v completion %v slowdown %v", res.IdealS, res.CompletionS, res.Slowdown)
			}
			if diff := res.LagS - (res.CompletionS - res.IdealS); diff > 1e-9 || diff < -1e-9 {
				t.Errorf("lag %v != completion - ideal %v", res.LagS, res.CompletionS-res.IdealS)
			}
		}
		if len(seen) != len(used) {
			t.Errorf("%d progress calls, want %d", len(seen), len(used))
		}
		sc := bufio.NewScanner(&log)
		n := 0
		var lastDone int64
		for ; sc.Scan(); n++ {
			var s Step
			if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
				t.Fatal(err)
			}
			if s.ResidentBytes != s.TargetBytes || s.TargetBytes != pages(used[n])*ps {
				t.Errorf("step %d: resident %d target %d, want %d", n, s.ResidentBytes, s.TargetBytes, pages(used[n])*ps)
			}
			if s.StartMonoNs < lastDone || s.DoneMonoNs < s.StartMonoNs {
				t.Errorf("step %d: mono times out of order", n)
			}
			lastDone = s.DoneMonoNs
		}
		if n != len(used) {
			t.Errorf("%d step log lines, want %d", n, len(used))
		}
	}
}

func TestRunMemScale(t *testing.T) {
	ps := int64(os.Getpagesize())
	res, err := Run(context.Background(), synthetic(t, []int64{100e6, 200e6}, nil), Options{Speed: 1000, MemScale: 0.1, Unpaced: true})
	if err != nil {
		t.Fatal(err)
	}
	if want := (20_000_000 + ps - 1) / ps * ps; res.PeakBytes != want {
		t.Fatalf("peak %d, want %d", res.PeakBytes, want)
	}
}

func TestRunCancelIsPartial(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	steps := 0
	res, err := Run(ctx, synthetic(t, []int64{10e6, 20e6, 30e6, 40e6, 50e6, 60e6}, nil), Options{
		Speed: 10, MemScale: 1,
		Progress: func(s Status) {
			if steps = s.Step; steps == 3 {
				cancel()
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Complete || res.Samples != 3 || res.Interrupted == "" {
		t.Fatalf("complete %v samples %d interrupted %q; want false, 3, set", res.Complete, res.Samples, res.Interrupted)
	}
}

func TestOptionsValidate(t *testing.T) {
	tr := synthetic(t, []int64{10e6}, nil)
	for _, o := range []Options{
		{Speed: 0, MemScale: 1},
		{Speed: 1, MemScale: 0},
		{Speed: -1, MemScale: 1},
		{Speed: 1, MemScale: 1, Unpaced: true, CPU: true},
		{Speed: 1, MemScale: 1, MaxCPU: -5},
	} {
		if _, err := Run(context.Background(), tr, o); err == nil {
			t.Errorf("Run(%+v) accepted", o)
		}
	}
}

func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// CPU replay must spin while the trace says so, and not without --cpu. The
// share of a core it got is logged, not asserted: on a shared machine the
// scheduler decides it.
func TestCPUReplay(t *testing.T) {
	// Since-start averages of 90% at every sample mean 90% per interval.
	tr := synthetic(t, []int64{2e6, 2e6, 2e6}, []float64{90, 90, 90})
	measure := func(cpu bool) (*Result, float64) {
		c0, w0 := cpuTime(t), time.Now()
		res, err := Run(context.Background(), tr, Options{Speed: 2, MemScale: 1, CPU: cpu, MaxCPU: 100})
		if err != nil || !res.Complete {
			t.Fatalf("run: %v %+v", err, res)
		}
		return res, float64(cpuTime(t)-c0) / float64(time.Since(w0))
	}
	on, onShare := measure(true)
	off, offShare := measure(false)
	t.Logf("spun %.2f s over %.2f s; cpu share with --cpu %.2f, without %.2f", on.CPUSpinS, on.CompletionS, onShare, offShare)
	if on.CPUSpinS <= 0 || !on.CPUReplay {
		t.Errorf("with --cpu: spun %v s, cpu_replay %v: want > 0 and true", on.CPUSpinS, on.CPUReplay)
	}
	if off.CPUSpinS != 0 || off.CPUReplay {
		t.Errorf("without --cpu: spun %v s, cpu_replay %v: want 0 and false", off.CPUSpinS, off.CPUReplay)
	}
}

// The burner splits a percentage over its workers, one per 100%, clamped to
// its maximum.
func TestBurnerShares(t *testing.T) {
	for _, tc := range []struct {
		max, set float64
		want     []float64 // share of the period per worker
	}{
		{max: 100, set: 90, want: []float64{0.9}},
		{max: 100, set: 150, want: []float64{1}},
		{max: 250, set: 230, want: []float64{1, 1, 0.3}},
		{max: 200, set: -5, want: []float64{0, 0}},
	} {
		b := &burner{max: tc.max}
		b.set(tc.set)
		for w, want := range tc.want {
			if got := workerShare(math.Float64frombits(b.percent.Load()), w); math.Abs(got-want) > 1e-9 {
				t.Errorf("max %v set %v worker %d: share %.3f, want %.3f", tc.max, tc.set, w, got, want)
			}
		}
	}
}
