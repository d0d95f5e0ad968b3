package report

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentcg/agentcg/experiment/contention"
	"github.com/agentcg/agentcg/experiment/results"
	"github.com/agentcg/agentcg/policy"
)

// synth writes a results folder: 6 blocks of Solo, Uncontended, NoLimit
// and BPF under swap, NoLimit and BPF under none. Under swap, HIGH's stall
// is 2 s under NoLimit and 0.5 s under BPF; NoLimit loses HIGH in block 0.
// One extra BPF run has a LOW that was absent from the contention window
// (excluded), one run failed.
func synth(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if d := os.Getenv("AGENTCG_KEEP"); d != "" {
		dir = d
	}
	order := 0
	for b := range 6 {
		for _, p := range []struct{ arm, reclaim string }{{"Solo", "swap"}, {"Uncontended", "swap"}, {"NoLimit", "swap"}, {"BPF", "swap"}, {"NoLimit", "none"}, {"BPF", "none"}} {
			writeRun(t, dir, p.arm, p.reclaim, b, order, false)
			order++
		}
	}
	writeRun(t, dir, "BPF", "swap", 6, order, true)
	if err := results.WriteJSON(filepath.Join(results.RunDir(dir, "099-b07-BPF_swap"), results.FailedFile), results.Failed{ID: "099-b07-BPF_swap", Label: "BPF swap", Error: "no high policy link"}); err != nil {
		t.Fatal(err)
	}
	env := results.Env{KernelRelease: "7.3.4-memcgbpf", Probe: "ok", Runtime: "containerd", Where: "vm", Accel: "tcg", CPUs: 2, Reclaim: []string{"swap", "none"}, StartedUnix: 900,
		Swap: &results.SwapDevice{Device: "/dev/zram0", SizeBytes: 1e9, Algorithm: "lzo-rle", Created: true}, HostLoadAvg: "1.2 1.0 0.9"}
	if err := results.WriteJSON(filepath.Join(dir, "env.json"), env); err != nil {
		t.Fatal(err)
	}
	if err := results.WriteJSON(filepath.Join(dir, "config.json"), map[string]any{"profile": "synthetic"}); err != nil {
		t.Fatal(err)
	}
	if err := results.WriteJSON(filepath.Join(dir, "plan.json"), contention.Plan{Profile: "synthetic", MemScale: 0.2, Speed: 0.5, ParentLimitBytes: 840e6,
		HighPeakBytes: 812e6, FloorBytes: 81e6, FloorS: 2, GiveUpBytes: 97e6, GiveUpS: 2.26, Feasible: true}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func writeRun(t *testing.T, dir, arm, reclaim string, block, order int, absent bool) {
	t.Helper()
	label := arm + " " + reclaim
	id := fmt.Sprintf("%03d-b%02d-%s_%s", order, block, arm, reclaim)
	start := 1000.0 * float64(order+1)
	rd := results.RunData{Run: results.Run{ID: id, Arm: arm, Reclaim: reclaim, Label: label, Params: map[string]string{"gate_pct": "80"}, Index: block, Block: block,
		Order: order, Speed: 0.5, MemScale: 0.2, Runtime: "containerd", StartUnix: start, EndUnix: start + 40, ParentLimit: 840e6, GateLimit: 840e6,
		ParentPeak: 830e6, Utilisation: 0.6 + 0.01*float64(block), ContentionStartS: 29.9, ContentionEndS: 32.2, PlannedS: 36, SetupS: 8,
		Parent: results.Cgroup{Events: map[string]int64{"max": 40}, Memory: results.Pressure{SomeUs: 3e6}}}}
	if arm == "Uncontended" {
		rd.Run.ParentLimit = -1
	}
	stall := map[string]float64{"Solo": 0.1, "Uncontended": 0.3, "NoLimit": 2, "BPF": 0.5}[arm]
	if reclaim == "none" {
		stall = 0.2
	}
	stall += 0.01 * float64(block)
	killed := arm == "NoLimit" && reclaim == "swap" && block == 0
	high := results.Session{Name: "high", Role: results.RoleHigh, Trace: "Medical_Bio_Hard", PeakBytes: 800e6, ActiveStart: start, ActiveEnd: start + 35,
		Kernel: results.Cgroup{Memory: results.Pressure{SomeUs: int64(stall * 1e6), FullUs: int64(stall * 5e5)},
			Stat: map[string]int64{"pgsteal": 1000, "workingset_refault_anon": 50}, SwapPeak: 4e6, Events: map[string]int64{}},
		Replay: &results.Replay{Complete: true, CompletionS: 35, IdealS: 35, MaxStepLagS: 0.2, PeakLatenessS: 0.1, PageSize: 4096, TouchedBytes: 900e6}}
	if arm == "BPF" {
		high.Counters = &policy.Counters{BelowLowTrue: 57}
		high.Kernel.Stat["pgsteal"] = 10
	}
	if killed {
		high.Replay = nil
		high.Kernel.Events["oom_kill"] = 1
		high.ExitCode, high.Signal, high.OOMKilled, high.OOMSource = 137, 9, true, "memory.events oom_kill"
		high.ActiveEnd = start + 31
	}
	rd.Sessions = append(rd.Sessions, high)
	if arm != "Solo" {
		for j, tr := range []string{"ML_Scientific_Hard", "CLI_Tools_Easy"} {
			ls, le := start, start+36
			if absent {
				ls, le = start+33, start+36
			}
			low := results.Session{Name: fmt.Sprintf("low%d", j+1), Role: results.RoleLow, Trace: tr, ActiveStart: ls, ActiveEnd: le,
				Kernel: results.Cgroup{Memory: results.Pressure{SomeUs: int64(1e6 * (1 + float64(j)))}, Stat: map[string]int64{"pgsteal": 20000}, Events: map[string]int64{"high": 3}},
				Replay: &results.Replay{Complete: true, CompletionS: 36, IdealS: 36, PageSize: 4096, TouchedBytes: 60e6}}
			if arm == "BPF" {
				low.Counters = &policy.Counters{DelayCalls: 100, DelayNonZero: uint64(40 + j)}
			}
			rd.Sessions = append(rd.Sessions, low)
		}
	}
	if err := results.SaveRun(dir, rd); err != nil {
		t.Fatal(err)
	}
	var ts strings.Builder
	ts.WriteString(results.TimeseriesHeader + "\n")
	for k := range 20 {
		for _, s := range append([]results.Session{{Name: "parent"}}, rd.Sessions...) {
			ts.WriteString(results.Sample{Run: id, Cgroup: s.Name, T: float64(k) * 2, Current: int64(k) * 10e6, Swap: int64(k) * 1e6,
				SomeTotal: int64(k) * 100000}.Row() + "\n")
		}
	}
	if err := os.WriteFile(filepath.Join(results.RunDir(dir, id), "timeseries.csv"), []byte(ts.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestGenerate(t *testing.T) {
	dir := synth(t)
	if err := Generate(dir); err != nil {
		t.Fatal(err)
	}
	headline := readFile(t, filepath.Join(dir, "headline.csv"))
	for _, want := range []string{
		// NoLimit under swap lost HIGH once: 5/6 survived, kept in the table.
		"swap,,NoLimit,false,6,5,",
		"swap,,BPF,true,6,6,",
		"none,,BPF,true,6,6,",
	} {
		if !strings.Contains(headline, want) {
			t.Errorf("headline.csv lacks %q\n%s", want, headline)
		}
	}
	sessions := readFile(t, filepath.Join(dir, "sessions.csv"))
	if !strings.Contains(sessions, "000-b00-Solo_swap,0,0,Solo,swap,,high,high,Medical_Bio_Hard,false,false,false,false,100000,") {
		t.Errorf("sessions.csv:\n%s", sessions[:min(len(sessions), 800)])
	}
	if !strings.Contains(sessions, "NoLimit,swap,,high,high,Medical_Bio_Hard,true,true,false,false,") {
		t.Error("the killed NoLimit HIGH session is missing from sessions.csv")
	}
	md := readFile(t, filepath.Join(dir, "report.md"))
	for _, want := range []string{
		"**Regime:** reclaim **swap** (/dev/zram0 (lzo-rle, 1000.0 MB)", "**none**", "## Headline", "### Regime swap", "### Regime none",
		"## What the data show, and what they cannot", "## Where the policy could act", "Regime swap let the policy act: it steered reclaim away from HIGH",
		"Regime none let the policy act", // the synthetic none regime reclaims too
		"## The contention plan", "Contention plan: profile synthetic", "kept up", "b06-BPF_swap", "was active for", "099-b07-BPF_swap",
		"no high policy link", "HighOnly: what differs", "host 1.2 1.0 0.9", "Uncontended)",
		"From the experiment's start to the end of its last run: ",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report.md lacks %q", want)
		}
	}
	if strings.Index(md, "**Regime:**") > strings.Index(md, "## Headline") || strings.Index(md, "## Headline") > strings.Index(md, "## What the data show") {
		t.Error("report.md does not open with the regime, then the headline, then the paragraph")
	}
	for _, f := range []string{"fig1-high-stall-swap", "fig1-high-stall-none", "fig2-timeline-swap", "fig3-survival-swap", "fig4-bpf-delays-swap"} {
		for _, ext := range []string{".png", ".svg"} {
			if fi, err := os.Stat(filepath.Join(dir, f+ext)); err != nil || fi.Size() < 1000 {
				t.Errorf("%s%s missing or tiny: %v", f, ext, err)
			}
		}
	}
	if err := Check(dir, []string{"Solo swap", "NoLimit swap", "BPF none"}); err != nil {
		t.Fatal(err)
	}
	if err := Check(dir, []string{"Fast swap"}); err == nil || !strings.Contains(err.Error(), "point Fast swap") {
		t.Fatalf("Check accepted a missing point: %v", err)
	}

	// `report DIR` again, on the same raw files, reproduces every CSV byte for byte.
	before := map[string]string{}
	for f := range Headers() {
		before[f] = readFile(t, filepath.Join(dir, f))
		os.Remove(filepath.Join(dir, f))
	}
	if err := Generate(dir); err != nil {
		t.Fatal(err)
	}
	for f, b := range before {
		if got := readFile(t, filepath.Join(dir, f)); got != b {
			t.Errorf("%s differs on regeneration", f)
		}
	}
	cmp, err := Compare(dir, dir)
	if err != nil || !strings.Contains(cmp, "## Regime swap") || !strings.Contains(cmp, "| BPF | 6/6") ||
		!strings.Contains(cmp, "Holm p") || !strings.Contains(cmp, "LOW's cost (stall_some_us)") {
		t.Fatalf("compare: %v\n%s", err, cmp)
	}
}

func TestObservationsKeepKilledAndTraces(t *testing.T) {
	dir := synth(t)
	runs, err := results.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	obs := Observations(runs)
	killed, lowTraces := 0, map[string]bool{}
	for _, o := range obs {
		if o.Killed {
			killed++
		}
		if o.Role == "low" {
			lowTraces[o.Trace] = true
		}
	}
	if killed != 1 || len(lowTraces) != 2 {
		t.Fatalf("killed %d, LOW traces %v", killed, lowTraces)
	}
}

func TestGroupsFor(t *testing.T) {
	pts := []string{"", "gate=70", "gate=80"}
	if got := groupsFor("", pts); strings.Join(got, "|") != "gate=70|gate=80" {
		t.Fatalf("NoLimit goes to %q", got)
	}
	if got := groupsFor("gate=70", pts); strings.Join(got, "|") != "gate=70" {
		t.Fatalf("gate=70 goes to %q", got)
	}
	if got := groupsFor("", []string{""}); len(got) != 1 || got[0] != "" {
		t.Fatalf("no sweep: %q", got)
	}
}

func TestMedianCI(t *testing.T) {
	x := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	med, lo, hi, level := MedianCI(x, 0.95)
	// n=10: (x_(2), x_(9)) covers 1 − 2·P(B ≤ 1) = 1 − 22/1024.
	if med != 5.5 || lo != 2 || hi != 9 || math.Abs(level-(1-22.0/1024)) > 1e-12 {
		t.Fatalf("%v %v %v %v", med, lo, hi, level)
	}
	med, lo, hi, _ = MedianCI([]float64{1, 2, math.Inf(1)}, 0.95)
	if med != 2 || lo != 1 || !math.IsInf(hi, 1) {
		t.Fatalf("with a killed session: %v %v %v", med, lo, hi)
	}
}
