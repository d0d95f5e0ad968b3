package report

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentcg/agentcg/experiment/results"
	"github.com/agentcg/agentcg/policy"
)

// synth writes a results folder: 5 runs each of Solo and four arms, HIGH
// completion = base[arm] + run index, plus one BPF run where LOW started
// after HIGH finished (must be excluded).
func synth(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if d := os.Getenv("AGENTCG_KEEP"); d != "" {
		dir = d
	}
	base := map[string]float64{results.ArmSolo: 50, "Static": 80, "NoLimit": 90, "HighOnly": 40, "BPF": 55}
	order := 0
	for i := range 5 {
		for _, arm := range []string{results.ArmSolo, "Static", "NoLimit", "HighOnly", "BPF"} {
			writeRun(t, dir, arm, i, order, base[arm]+float64(i), false)
			order++
		}
	}
	writeRun(t, dir, "BPF", 5, order, 1000, true)
	if err := results.WriteJSON(filepath.Join(results.RunDir(dir, "026-BPF-r6"), results.FailedFile), results.Failed{ID: "026-BPF-r6", Label: "BPF", Error: "no high policy link"}); err != nil {
		t.Fatal(err)
	}
	if err := results.WriteJSON(filepath.Join(dir, "env.json"), results.Env{KernelRelease: "7.3.4-memcgbpf", Probe: "ok", Runtime: "containerd", Where: "vm", Accel: "tcg"}); err != nil {
		t.Fatal(err)
	}
	if err := results.WriteJSON(filepath.Join(dir, "config.json"), map[string]any{"profile": "synthetic"}); err != nil {
		t.Fatal(err)
	}
	if err := results.WriteJSON(filepath.Join(dir, "toolcalls", "Medical_Bio_Hard.json"), results.ToolCalls{Trace: "Medical_Bio_Hard", Info: results.TraceInfo{Trace: "Medical_Bio_Hard", PeakBytes: 4060e6, DurationS: 537}, T: []float64{10, 200}, Tools: []string{"Bash", "Read"}}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func writeRun(t *testing.T, dir, arm string, idx, order int, highS float64, late bool) {
	t.Helper()
	id := fmt.Sprintf("%03d-%s-%d", order, arm, idx)
	start := 1000.0 * float64(order+1)
	rd := results.RunData{Run: results.Run{ID: id, Arm: arm, Label: arm, Index: idx, Order: order, Speed: 10, MemScale: 0.25,
		Runtime: "containerd", StartUnix: start, EndUnix: start + highS + 5, ParentLimit: 500e6, ParentPeak: 480e6, Utilisation: 0.5 + 0.01*float64(idx)}}
	high := results.Session{Name: "high", Role: results.RoleHigh, Trace: "Medical_Bio_Hard", PeakBytes: 300e6,
		Events: map[string]int64{"high": 0, "max": 0, "oom": 0, "oom_kill": 0}, ActiveStart: start, ActiveEnd: start + highS,
		Replay: &results.Replay{Complete: true, CompletionS: highS, IdealS: 50, LagS: highS - 50, MaxStepLagS: 0.5}}
	if arm == "Static" && idx == 0 {
		high.Replay = nil // OOM-killed: no result, counted from the kernel
		high.Events["oom_kill"] = 1
		high.ExitCode, high.Signal, high.OOMKilled, high.OOMSource = 137, 9, true, "memory.events"
	}
	if arm == "BPF" {
		high.Counters = &policy.Counters{DelayCalls: 10}
	}
	rd.Sessions = append(rd.Sessions, high)
	if arm != results.ArmSolo {
		for j, tr := range []string{"ML_Scientific_Hard", "CLI_Tools_Easy"} {
			ls := start
			if late {
				ls = start + highS + 1
			}
			low := results.Session{Name: fmt.Sprintf("low%d", j+1), Role: results.RoleLow, Trace: tr, Events: map[string]int64{"high": 3},
				ActiveStart: ls, ActiveEnd: ls + 30, Replay: &results.Replay{Complete: true, CompletionS: 30, IdealS: 20}}
			if arm == "BPF" {
				low.Counters = &policy.Counters{DelayCalls: 100, DelayNonZero: uint64(40 + j)}
			}
			rd.Sessions = append(rd.Sessions, low)
		}
	}
	results.CheckOverlap(&rd)
	if err := results.SaveRun(dir, rd); err != nil {
		t.Fatal(err)
	}
	var ts strings.Builder
	ts.WriteString(results.TimeseriesHeader + "\n")
	for k := range 20 {
		for _, s := range append([]results.Session{{Name: "parent"}}, rd.Sessions...) {
			ts.WriteString(results.Sample{Run: id, Cgroup: s.Name, T: float64(k) * 0.1, Current: int64(k) * 1e6}.Row() + "\n")
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
	summary := readFile(t, filepath.Join(dir, "summary.csv"))
	st := readFile(t, filepath.Join(dir, "stats.csv"))
	for _, want := range []string{
		"arm,role,metric,n,mean,std,ci95_low,ci95_high,p50,max\n",
		// Solo 50..54: mean 52, sd 1.5811388, t(4)=2.7764451 → ±1.9632432.
		"Solo,high,completion_s,5,52,1.5811388,50.036757,53.963243,52,54\n",
		// Static run 0 was OOM-killed: 4 completions, 1 kill from the kernel.
		"Static,high,completion_s,4,82.5,",
		"Static,high,oom_kills,5,0.2,",
		// Normalised by solo T = 52: BPF 55..59 → mean 57/52.
		"BPF,high,norm_completion,5,1.0961538,",
		"BPF,low,bpf_delay_nonzero,10,40.5,",
		"NoLimit,parent,utilisation,5,0.52,",
	} {
		if !strings.Contains(summary, want) {
			t.Errorf("summary.csv lacks %q\n%s", want, summary)
		}
	}
	for _, want := range []string{
		"metric,arm_a,arm_b,n_a,n_b,U,p,note\n",
		"high_completion_s,BPF,Static,5,4,0,0.015873016,\n", // complete separation, n=5 vs 4
		"high_completion_s,BPF,NoLimit,5,5,0,0.0079365079,\n",
		"high_completion_s,BPF,HighOnly,5,5,25,0.0079365079,\n",
	} {
		if !strings.Contains(st, want) {
			t.Errorf("stats.csv lacks %q\n%s", want, st)
		}
	}
	// The excluded BPF run (completion 1000) must not leak into anything.
	if strings.Contains(summary, "1000") {
		t.Errorf("excluded run leaked into summary.csv")
	}
	md := readFile(t, filepath.Join(dir, "report.md"))
	for _, want := range []string{"025-BPF-5", "overlapped HIGH for 0.00 s", "0.25", "7.3.4-memcgbpf", "containerd", "kept up", "| BPF | high | 5 |", "| high | Medical_Bio_Hard | 1015 MB | 500 MB | 167 MB |", "HIGH's scaled trace peak reaches the parent limit", "| 026-BPF-r6 | BPF | no high policy link |", "0.50 s wall (5 trace seconds"} {
		if !strings.Contains(md, want) {
			t.Errorf("report.md lacks %q", want)
		}
	}
	for _, f := range []string{"fig1-completion", "fig2-memory-BPF", "fig2-memory-Solo", "fig3-oom", "fig4-bpf-delays"} {
		for _, ext := range []string{".png", ".svg"} {
			if fi, err := os.Stat(filepath.Join(dir, f+ext)); err != nil || fi.Size() < 1000 {
				t.Errorf("%s%s missing or tiny: %v", f, ext, err)
			}
		}
	}
	ts := readFile(t, filepath.Join(dir, "timeseries.csv"))
	if n := strings.Count(ts, "\n"); n != 1+5*2*20+21*4*20 {
		t.Errorf("timeseries.csv has %d lines", n)
	}

	if err := Check(dir, []string{"Solo", "Static", "NoLimit", "HighOnly", "BPF"}); err != nil {
		t.Fatal(err)
	}
	if err := Check(dir, []string{"Fast"}); err == nil || !strings.Contains(err.Error(), "arm Fast") {
		t.Fatalf("Check accepted a missing arm: %v", err)
	}

	// `report DIR` again, on the same raw files, reproduces both tables byte for byte.
	for _, f := range []string{"summary.csv", "stats.csv", "timeseries.csv", "report.md"} {
		os.Remove(filepath.Join(dir, f))
	}
	if err := Generate(dir); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dir, "summary.csv")); got != summary {
		t.Error("summary.csv differs on regeneration")
	}
	if got := readFile(t, filepath.Join(dir, "stats.csv")); !bytes.Equal([]byte(got), []byte(st)) {
		t.Error("stats.csv differs on regeneration")
	}
}
