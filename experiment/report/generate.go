package report

import (
	"cmp"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/agentcg/agentcg/experiment/figures"
	"github.com/agentcg/agentcg/experiment/results"
	"github.com/agentcg/agentcg/experiment/stats"
)

// KeptUpMaxLag is the largest solo lag, as a share of the ideal duration,
// for which the replay counts as having kept up with the scaled trace.
const KeptUpMaxLag = 0.10

// Generate writes every derived file of dir from its raw files.
func Generate(dir string) error {
	runs, err := results.Load(dir)
	if err != nil {
		return err
	}
	for i := range runs {
		results.CheckOverlap(&runs[i]) // re-derived, not trusted from run.json
	}
	d := Analyse(runs)
	var env results.Env
	if err := results.ReadJSON(filepath.Join(dir, "env.json"), &env); err != nil && !os.IsNotExist(err) {
		return err
	}
	files := map[string]string{
		"summary.csv": d.SummaryCSV(),
		"stats.csv":   d.StatsCSV(stats.MannWhitney{}),
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	if err := mergeTimeseries(dir, runs); err != nil {
		return err
	}
	figs, err := drawFigures(dir, d)
	if err != nil {
		return err
	}
	d.Traces = map[string]results.TraceInfo{}
	for _, r := range runs {
		for _, s := range r.Sessions {
			if tc, err := results.LoadToolCalls(dir, s.Trace); err == nil && tc != nil && tc.Info.PeakBytes > 0 {
				d.Traces[s.Trace] = tc.Info
			}
		}
	}
	if d.Failed, err = results.LoadFailed(dir); err != nil {
		return err
	}
	md := Markdown(d, env, figs)
	return os.WriteFile(filepath.Join(dir, "report.md"), []byte(md), 0o644)
}

// mergeTimeseries concatenates the per-run series into timeseries.csv.
func mergeTimeseries(dir string, runs []results.RunData) error {
	var b strings.Builder
	b.WriteString(results.TimeseriesHeader + "\n")
	for _, r := range runs {
		ss, err := results.LoadTimeseries(dir, r.Run.ID)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return err
		}
		for _, s := range ss {
			b.WriteString(s.Row() + "\n")
		}
	}
	return os.WriteFile(filepath.Join(dir, "timeseries.csv"), []byte(b.String()), 0o644)
}

// Representative picks the included run of label whose HIGH completion is
// closest to the label's median (first run when none completed).
func (d *Data) Representative(label string) *results.RunData {
	var cands []*results.RunData
	for i := range d.Included {
		if d.Included[i].Run.Label == label {
			cands = append(cands, &d.Included[i])
		}
	}
	if len(cands) == 0 {
		return nil
	}
	med := stats.Summarize(d.Values(label, results.RoleHigh, MCompletion)).P50
	best, bestDist := cands[0], math.Inf(1)
	for _, c := range cands {
		for _, s := range c.ByRole(results.RoleHigh) {
			if dist := math.Abs(d.SessionValue(s, MCompletion) - med); dist < bestDist {
				best, bestDist = c, dist
			}
		}
	}
	return best
}

func drawFigures(dir string, d *Data) ([]string, error) {
	var out []string
	add := func(f []string, err error) error {
		out = append(out, f...)
		return err
	}
	// 1. normalised completion.
	c := figures.Completion{Labels: d.Labels, Roles: []string{results.RoleHigh, results.RoleLow}, Points: map[string]map[string]figures.Point{}}
	for _, l := range d.Labels {
		c.Points[l] = map[string]figures.Point{}
		for _, role := range c.Roles {
			s := stats.Summarize(d.Values(l, role, MNormCompletion))
			if s.N > 0 {
				c.Points[l][role] = figures.Point{Mean: s.Mean, Low: s.CILow, High: s.CIHigh, N: s.N}
			}
		}
	}
	if err := add(figures.DrawCompletion(dir, "fig1-completion", c)); err != nil {
		return out, err
	}
	// 2. memory over time, one representative run per label.
	for _, l := range d.Labels {
		r := d.Representative(l)
		if r == nil {
			continue
		}
		m, err := memoryFigure(dir, r)
		if err != nil {
			return out, err
		}
		if err := add(figures.DrawMemory(dir, "fig2-memory-"+figures.Slug(l), m)); err != nil {
			return out, err
		}
	}
	// 3. OOM kills, summed over runs.
	oom := figures.Bars{Title: "OOM kills per arm and role (sum over included runs, kernel memory.events oom_kill)", YLabel: "OOM kills",
		Categories: d.Labels, Groups: []string{results.RoleHigh, results.RoleLow}, Values: map[string][]float64{}}
	for _, g := range oom.Groups {
		for _, l := range d.Labels {
			oom.Values[g] = append(oom.Values[g], sum(d.Values(l, g, MOOMKills)))
		}
	}
	if err := add(figures.DrawBars(dir, "fig3-oom", oom)); err != nil {
		return out, err
	}
	// 4. BPF delay triggers per session (mean over runs of each BPF label).
	trig := figures.Bars{Title: "BPF get_high_delay_ms non-zero returns per session (mean over runs)", YLabel: "delays applied",
		Groups: []string{"delay_nonzero"}, Values: map[string][]float64{}}
	for _, l := range d.Labels {
		if !isArm(l, "BPF") {
			continue
		}
		per := map[string][]float64{}
		for _, r := range d.Included {
			if r.Run.Label != l {
				continue
			}
			for i := range r.Sessions {
				per[r.Sessions[i].Name] = append(per[r.Sessions[i].Name], d.SessionValue(&r.Sessions[i], MDelayNonZero))
			}
		}
		for _, name := range slices.Sorted(mapKeys(per)) {
			trig.Categories = append(trig.Categories, l+" "+name)
			trig.Values["delay_nonzero"] = append(trig.Values["delay_nonzero"], stats.Summarize(per[name]).Mean)
		}
	}
	if len(trig.Categories) > 0 {
		if err := add(figures.DrawBars(dir, "fig4-bpf-delays", trig)); err != nil {
			return out, err
		}
	}
	return out, nil
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func sum(x []float64) float64 {
	s := 0.0
	for _, v := range x {
		if !math.IsNaN(v) {
			s += v
		}
	}
	return s
}

func memoryFigure(dir string, r *results.RunData) (figures.Memory, error) {
	m := figures.Memory{Title: fmt.Sprintf("%s, run %s: memory.current", r.Run.Label, r.Run.ID), Limit: float64(r.Run.ParentLimit)}
	ss, err := results.LoadTimeseries(dir, r.Run.ID)
	if err != nil && !os.IsNotExist(err) {
		return m, err
	}
	by := map[string]*figures.Series{}
	var order []string
	for _, s := range ss {
		se, ok := by[s.Cgroup]
		if !ok {
			se = &figures.Series{Name: s.Cgroup}
			by[s.Cgroup] = se
			order = append(order, s.Cgroup)
		}
		se.T = append(se.T, s.T)
		se.Y = append(se.Y, float64(s.Current))
	}
	for _, n := range order {
		m.Series = append(m.Series, *by[n])
	}
	for _, h := range r.ByRole(results.RoleHigh) {
		tc, err := results.LoadToolCalls(dir, h.Trace)
		if err != nil {
			return m, err
		}
		if tc == nil || r.Run.Speed <= 0 {
			continue
		}
		off := h.ActiveStart - r.Run.StartUnix
		for _, t := range tc.T {
			m.ToolCalls = append(m.ToolCalls, off+t/r.Run.Speed)
		}
	}
	return m, nil
}

// Markdown renders report.md.
func Markdown(d *Data, env results.Env, figs []string) string {
	var b strings.Builder
	w := func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }
	w("# agentcg experiment report\n\n")
	var speed, scale []float64
	var rt []string
	for _, r := range d.Runs {
		speed = appendUniq(speed, r.Run.Speed)
		scale = appendUniq(scale, r.Run.MemScale)
		if !slices.Contains(rt, r.Run.Runtime) {
			rt = append(rt, r.Run.Runtime)
		}
	}
	w("## Setup\n\n")
	w("| item | value |\n|---|---|\n")
	w("| kernel | %s |\n| memcg_bpf_ops probe | %s |\n| policy mode | %s |\n", or(env.KernelRelease), or(env.Probe), or(env.PolicyMode))
	w("| runtime | %s |\n| runtime versions | %s |\n", strings.Join(rt, ", "), versions(env.RuntimeVersions))
	w("| where | %s (%s), %d CPUs |\n| git commit | %s |\n| profile | %s |\n", or(env.Where), or(env.Accel), env.CPUs, or(env.GitCommit), or(env.Profile))
	w("| speed | %s |\n| memory scale | %s (trace bytes and every limit are multiplied by it) |\n", floats(speed), floats(scale))
	w("| runs | %d finished, %d included, %d excluded |\n\n", len(d.Runs), len(d.Included), len(d.Excluded))

	w("## Fit of the scaled traces\n\n")
	fit, over := false, false
	for _, r := range d.Runs {
		if fit || r.Run.Arm == results.ArmSolo {
			continue
		}
		fit = true
		w("| session | trace | trace peak × scale | parent limit | Static per-session memory.max |\n|---|---|---|---|---|\n")
		for _, s := range r.Sessions {
			ti, ok := d.Traces[s.Trace]
			if !ok {
				continue
			}
			peak := float64(ti.PeakBytes) * r.Run.MemScale
			w("| %s | %s | %.0f MB | %.0f MB | %.0f MB |\n", s.Name, s.Trace, peak/1e6, float64(r.Run.ParentLimit)/1e6, float64(r.Run.ParentLimit)/float64(len(r.Sessions))/1e6)
			if s.Role == results.RoleHigh && peak >= float64(r.Run.ParentLimit) {
				over = true
			}
		}
	}
	if !fit {
		w("No contention run finished.\n")
	}
	if over {
		w("\n**Warning:** HIGH's scaled trace peak reaches the parent limit: HIGH cannot finish in any arm (solo included) without an OOM kill, so the arms differ only in who is killed. Raise parent_limit_bytes.\n")
	}
	w("\n")
	w("## Did the replay keep up?\n\n")
	var soloLag, stepLag []float64
	for _, r := range d.Included {
		if r.Run.Arm != results.ArmSolo {
			continue
		}
		for _, s := range r.ByRole(results.RoleHigh) {
			if s.Replay != nil && s.Replay.Complete && s.Replay.IdealS > 0 {
				soloLag = append(soloLag, s.Replay.LagS/s.Replay.IdealS)
				stepLag = append(stepLag, s.Replay.MaxStepLagS)
			}
		}
	}
	if len(soloLag) == 0 {
		w("No complete solo run: the normaliser T is missing and keeping up cannot be checked.\n\n")
	} else {
		ls := stats.Summarize(soloLag)
		verdict := "kept up"
		if ls.Max > KeptUpMaxLag {
			verdict = "did NOT keep up"
		}
		w("Solo HIGH lag / ideal duration over %d runs: mean %.3f, max %.3f. The replay %s with the scaled trace (threshold %.0f%% of the ideal duration). Solo T = %.2f s.\n\n",
			ls.N, ls.Mean, ls.Max, verdict, KeptUpMaxLag*100, d.SoloT)
		if ms := stats.Summarize(stepLag); ms.Max > 0 {
			w("Within a run, the largest delay of a single step behind its schedule was %.2f s wall (%.0f trace seconds at this speed): bursts were replayed late by that much even when the sleeps absorbed it by the end.\n\n",
				ms.Max, ms.Max*speedOf(d))
		}
	}

	w("## Excluded runs\n\n")
	if len(d.Failed) > 0 {
		w("These runs failed before they could be measured and are in no table (`--resume` retries them):\n\n| run | arm | error |\n|---|---|---|\n")
		for _, f := range d.Failed {
			w("| %s | %s | %s |\n", f.ID, f.Label, strings.ReplaceAll(f.Error, "|", "\\|"))
		}
		w("\n")
	}
	if len(d.Excluded) == 0 {
		w("None: every LOW session overlapped HIGH for at least %.0f s.\n\n", results.MinOverlapS)
	} else {
		w("These runs are left out of every table, test and figure:\n\n| run | arm | reason |\n|---|---|---|\n")
		for _, r := range d.Excluded {
			w("| %s | %s | %s |\n", r.Run.ID, r.Run.Label, r.Run.ExcludeReason)
		}
		w("\n")
	}

	w("## HIGH and LOW per arm\n\n")
	w("n counts sessions of included runs; completion and lag exist only for sessions that completed. With n ≤ 5 the max is reported, never a p99.\n\n")
	w("| arm | role | n | completion s (95%% CI) | normalised | lag s | complete | OOM kills | BPF delays |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, l := range d.Labels {
		for _, role := range []string{results.RoleHigh, results.RoleLow} {
			comp := stats.Summarize(d.Values(l, role, MCompletion))
			all := d.Values(l, role, MComplete)
			if len(all) == 0 {
				continue
			}
			norm := stats.Summarize(d.Values(l, role, MNormCompletion))
			lag := stats.Summarize(d.Values(l, role, MLag))
			w("| %s | %s | %d | %s | %s | %s | %d/%d | %.0f | %s |\n", l, role, comp.N, ci(comp), fmtf(norm.Mean), fmtf(lag.Mean),
				int(sum(all)), len(all), sum(d.Values(l, role, MOOMKills)), fmtf(stats.Summarize(d.Values(l, role, MDelayNonZero)).Mean))
		}
	}
	w("\nParent memory utilisation (time-average of memory.current / memory.max):\n\n| arm | n | mean | max |\n|---|---|---|---|\n")
	for _, l := range d.Labels {
		u := stats.Summarize(d.Values(l, RoleParent, MUtilisation))
		if u.N > 0 {
			w("| %s | %d | %s | %s |\n", l, u.N, fmtf(u.Mean), fmtf(u.Max))
		}
	}

	w("\n## Tests\n\nTwo-sided Mann-Whitney U (exact for small samples, ties counted as one half), HIGH sessions, BPF against each other arm. U is the BPF arm's.\n\n")
	tests := d.Tests(stats.MannWhitney{})
	if len(tests) == 0 {
		w("No BPF arm with included runs: nothing to compare.\n")
	} else {
		w("| metric | BPF arm | other | n | U | p |\n|---|---|---|---|---|---|\n")
		for _, t := range tests {
			p := fmtf(t.P)
			if t.Err != "" {
				p = "n/a (" + t.Err + ")"
			}
			w("| %s | %s | %s | %d vs %d | %s | %s |\n", t.Metric, t.A, t.B, t.N1, t.N2, fmtf(t.U), p)
		}
		w("\nWith 5 runs per arm the smallest two-sided p attainable is 0.0079; p values are not corrected for the number of comparisons.\n")
	}

	w("\n## Figures\n\n")
	for _, f := range figs {
		if strings.HasSuffix(f, ".png") {
			base := filepath.Base(f)
			w("![%s](%s)\n\n", strings.TrimSuffix(base, ".png"), base)
		}
	}
	w("Figure 1: mean normalised completion with 95%% t intervals (HIGH divided by solo T, LOW by its trace's ideal duration; 1 = no slowdown). Figure 2: memory.current of each cgroup in the run closest to the arm's median HIGH completion, with the parent limit and HIGH's tool calls as ticks. Figure 3: OOM kills from the kernel's memory.events. Figure 4: how often the BPF policy returned a non-zero delay per session.\n\n")
	w("Files: summary.csv (arm × role × metric: n, mean, std, ci95_low, ci95_high, p50, max), stats.csv, timeseries.csv (100 ms memory.current and memory.pressure per cgroup), runs/*/ (raw JSON). Regenerate with `agentcg experiment report DIR`.\n")
	return b.String()
}

// speedOf is the speed of the solo runs (the first one found).
func speedOf(d *Data) float64 {
	for _, r := range d.Runs {
		if r.Run.Arm == results.ArmSolo {
			return r.Run.Speed
		}
	}
	return math.NaN()
}

func appendUniq(x []float64, v float64) []float64 {
	if slices.Contains(x, v) {
		return x
	}
	x = append(x, v)
	slices.Sort(x)
	return x
}

func floats(x []float64) string {
	s := make([]string, len(x))
	for i, v := range x {
		s[i] = num(v)
	}
	return strings.Join(s, ", ")
}

func versions(m map[string]string) string {
	var s []string
	for _, k := range slices.SortedFunc(mapKeys(m), cmp.Compare) {
		s = append(s, k+" "+m[k])
	}
	return or(strings.Join(s, "; "))
}

func or(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func fmtf(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.4f", v), "0"), ".")
}

func ci(s stats.Summary) string {
	if s.N == 0 {
		return "–"
	}
	if s.N == 1 {
		return fmtf(s.Mean) + " (n=1)"
	}
	return fmt.Sprintf("%s (%s–%s)", fmtf(s.Mean), fmtf(s.CILow), fmtf(s.CIHigh))
}
