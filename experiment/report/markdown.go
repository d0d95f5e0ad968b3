package report

import (
	"cmp"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/agentcg/agentcg/experiment/analysis"
	"github.com/agentcg/agentcg/experiment/config"
	"github.com/agentcg/agentcg/experiment/results"
)

// KeptUpMaxLateness is the largest lateness of HIGH's peak, in wall
// seconds, for which a solo replay counts as having kept up.
const KeptUpMaxLateness = 1.0

// Markdown renders report.md: the regime and the headline first, then
// what the data show and cannot show, then how they were made.
func (d *Data) Markdown(figs []string) string {
	var b strings.Builder
	w := func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }
	w("# agentcg experiment report\n\n")
	w("%s\n\n", d.regimeLine())

	w("## Headline\n\n")
	if d.Result == nil {
		w("No run was included, so there is nothing to analyse.\n\n")
	} else {
		for _, g := range d.Result.Groups {
			w("### Regime %s\n\n", groupName(g))
			w("%s\n", analysis.HeadlineMarkdown(d.Options, g))
		}
		w("## What the data show, and what they cannot\n\n")
		w("%s\n\n", analysis.Narrative(*d.Result))
		if s := d.controlSentences(); s != "" {
			w("%s\n\n", s)
		}
		w("## Where the policy could act\n\n")
		w("%s\n", d.actTable())
	}

	w("## The contention plan\n\n")
	if d.Plan == nil {
		w("This folder has no plan.json.\n\n")
	} else {
		w("```\n%s```\n\n", d.Plan.Text())
	}

	w("## Setup\n\n%s\n", d.setupTable())
	w("## Did HIGH's replay keep up?\n\n%s\n", d.keptUp())
	w("## Excluded and failed runs\n\n%s\n", d.exclusions())
	w("## HighOnly: what differs from the BPF policy\n\n")
	for _, s := range config.HighOnlyDifferences {
		w("- %s.\n", strings.ToUpper(s[:1])+s[1:])
	}
	w("\n## Figures\n\n")
	for _, f := range figs {
		if strings.HasSuffix(f, ".png") {
			base := filepath.Base(f)
			w("![%s](%s)\n\n", strings.TrimSuffix(base, ".png"), base)
		}
	}
	w("fig1: HIGH's memory stall (the `some` total of its session cgroup's memory.pressure over the run) per arm: one dot per block, crosses for killed HIGH sessions (they take the worst rank), the median with a distribution-free CI from order statistics. " +
		"fig2: one block, every arm: memory.current (solid) and memory.swap.current (dashed) of the parent and each session with the parent limit and the gate line, the planned contention window (dotted), and each session's memory stall so far. " +
		"fig3: HIGH survived k/n per arm with Wilson intervals. fig4: the BPF arms' get_high_delay_ms non-zero returns (LOW) and below_low true returns (HIGH) per run.\n\n")
	w("## Files\n\n")
	w("headline.csv, tests.csv, low_cost.csv, metrics.csv and power.csv are the analysis (experiment/analysis/README.md explains every column and test); sessions.csv has one row per session with every metric, runs.csv one row per run with the parent's metrics and the timing; timeseries.csv holds the sampler's series. runs/*/ keeps the raw records. `agentcg experiment report DIR` regenerates everything from them.\n")
	return b.String()
}

func (d *Data) regimeLine() string {
	var regimes, scales, speeds, limits []string
	runtimes := map[string]bool{}
	blocks := map[int]bool{}
	for _, r := range d.Runs {
		if !slices.Contains(regimes, r.Run.Reclaim) {
			regimes = append(regimes, r.Run.Reclaim)
		}
		if s := num(r.Run.MemScale); !slices.Contains(scales, s) {
			scales = append(scales, s)
		}
		if s := num(r.Run.Speed); !slices.Contains(speeds, s) {
			speeds = append(speeds, s)
		}
		if l := mb(r.Run.GateLimit); r.Run.GateLimit > 0 && !slices.Contains(limits, l) {
			limits = append(limits, l)
		}
		runtimes[r.Run.Runtime] = true
	}
	for _, r := range d.Included {
		blocks[r.Run.Block] = true
	}
	var reg []string
	for _, r := range regimes {
		switch r {
		case config.ReclaimSwap:
			dev := "a swap device"
			if s := d.Env.Swap; s != nil {
				dev = fmt.Sprintf("%s (%s, %s)", s.Device, or(s.Algorithm, "default algorithm"), mb(s.SizeBytes))
			}
			reg = append(reg, "**swap** ("+dev+", memory.swap.max open)")
		case config.ReclaimFile:
			reg = append(reg, "**file** (part of each session's memory is clean page cache, swap off)")
		case config.ReclaimNone:
			reg = append(reg, "**none** (anonymous memory, swap off: the negative control)")
		}
	}
	where := or(d.Env.Where, "unknown")
	if d.Env.Where == "vm" {
		where = "a VM under " + strings.ToUpper(d.Env.Accel)
	}
	scale := strings.Join(scales, ", ")
	if c := d.Env.Calibration; c != nil {
		scale += " (calibrated from a first-touch rate of " + fmt.Sprintf("%.0f MB/s)", c.FillBytesPerS/1e6)
	}
	took := ""
	var lastEnd float64
	for _, r := range d.Runs {
		lastEnd = max(lastEnd, r.Run.EndUnix)
	}
	if d.Env.StartedUnix > 0 && lastEnd > d.Env.StartedUnix {
		took = fmt.Sprintf(" From the experiment's start to the end of its last run: %s.", (time.Duration(lastEnd-d.Env.StartedUnix) * time.Second).Round(time.Second))
	}
	return fmt.Sprintf("**Regime:** reclaim %s. Parent limit %s, memory scale %s, speed %s, on %s with %d CPUs, kernel %s, runtime %s. %d blocks with included runs; %d runs finished, %d included, %d excluded, %d failed.%s",
		strings.Join(reg, ", "), or(strings.Join(limits, ", "), "unknown"), scale, strings.Join(speeds, ", "), where, d.Env.CPUs,
		or(d.Env.KernelRelease, "unknown"), strings.Join(sortedKeys(runtimes), ", "), len(blocks), len(d.Runs), len(d.Included), len(d.Excluded), len(d.Failed), took)
}

// controlSentences compares the controls: what CPU interference alone
// costs HIGH (Uncontended against Solo).
func (d *Data) controlSentences() string {
	var s []string
	for _, g := range d.Result.Groups {
		var solo, unc *analysis.ArmRow
		for i := range g.Headline {
			switch g.Headline[i].Arm {
			case analysis.ArmSolo:
				solo = &g.Headline[i]
			case analysis.ArmUncontended:
				unc = &g.Headline[i]
			}
		}
		if solo != nil && unc != nil {
			s = append(s, fmt.Sprintf("Regime %s controls: HIGH's median memory stall was %s alone (Solo) and %s beside the LOWs with no parent limit (Uncontended); the difference is what sharing the machine costs HIGH without memory contention (under TCG one host thread runs every vCPU), so an arm's memory effect is read against Uncontended (the baseline family in tests.csv).",
				groupName(g), stallCell(solo.Stall), stallCell(unc.Stall)))
		}
	}
	return strings.Join(s, " ")
}

func stallCell(v float64) string {
	switch {
	case math.IsNaN(v):
		return "n/a"
	case math.IsInf(v, 1):
		return "inf (killed)"
	case math.IsInf(v, -1):
		// A shift between an arm with kills and one without.
		return "-inf (killed in the other arm)"
	}
	return fmt.Sprintf("%.3g s", v/1e6)
}

// actTable says, per regime, whether the policy could act: where reclaim
// took memory from, and how often the BPF programs answered.
func (d *Data) actTable() string {
	var b strings.Builder
	b.WriteString("Medians per run. Reclaimed: `pgsteal` × page size of the session cgroup; swap peak: `memory.swap.peak`; refaults: `workingset_refault_anon + _file`.\n\n")
	b.WriteString("| regime | arm | HIGH reclaimed | LOW reclaimed | HIGH swap peak | LOW swap peak | HIGH refaults | below_low true (HIGH) | delays > 0 (LOW) |\n|---|---|---|---|---|---|---|---|---|\n")
	type agg struct{ hRec, lRec, hSw, lSw, hRef, below, delay []float64 }
	var verdicts []string
	for _, g := range d.Result.Groups {
		by := map[string]*agg{}
		for _, r := range d.groupRuns(g) {
			a := by[r.Run.Arm]
			if a == nil {
				a = &agg{}
				by[r.Run.Arm] = a
			}
			var lRec, lSw, delay float64
			haveCtr := false
			for i := range r.Sessions {
				s := &r.Sessions[i]
				m := SessionValues(s)
				if s.Role == results.RoleHigh {
					a.hRec = append(a.hRec, value(m, MReclaimed))
					a.hSw = append(a.hSw, value(m, MSwapPeak))
					a.hRef = append(a.hRef, value(m, MRefaults))
					if s.Counters != nil {
						a.below = append(a.below, float64(s.Counters.BelowLowTrue))
					}
				} else {
					lRec += value(m, MReclaimed)
					lSw += value(m, MSwapPeak)
					if s.Counters != nil {
						delay += float64(s.Counters.DelayNonZero)
						haveCtr = true
					}
				}
			}
			a.lRec, a.lSw = append(a.lRec, lRec), append(a.lSw, lSw)
			if haveCtr {
				a.delay = append(a.delay, delay)
			}
		}
		for _, arm := range g.Arms {
			a := by[arm]
			if a == nil || arm == analysis.ArmSolo {
				continue
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", groupName(g), arm, mbf(median(a.hRec)), mbf(median(a.lRec)),
				mbf(median(a.hSw)), mbf(median(a.lSw)), cnt(median(a.hRef)), cnt(median(a.below)), cnt(median(a.delay)))
		}
		verdicts = append(verdicts, d.verdict(g))
	}
	b.WriteString("\n" + strings.Join(verdicts, " ") + "\n")
	return b.String()
}

// verdict is one sentence per group from the BPF and NoLimit medians.
func (d *Data) verdict(g analysis.Group) string {
	med := func(arm, role, metric string) float64 {
		var v []float64
		for _, r := range d.groupRuns(g) {
			if r.Run.Arm != arm {
				continue
			}
			sum, n := 0.0, 0
			for i := range r.Sessions {
				if r.Sessions[i].Role == role {
					sum += value(SessionValues(&r.Sessions[i]), metric)
					n++
				}
			}
			if n > 0 {
				v = append(v, sum)
			}
		}
		return median(v)
	}
	if !slices.Contains(g.Arms, "BPF") || !slices.Contains(g.Arms, "NoLimit") {
		return fmt.Sprintf("Regime %s: BPF and NoLimit were not both run, so this report does not judge whether the policy could act there.", groupName(g))
	}
	hN, hB := med("NoLimit", results.RoleHigh, MReclaimed), med("BPF", results.RoleHigh, MReclaimed)
	lN, lB := med("NoLimit", results.RoleLow, MReclaimed), med("BPF", results.RoleLow, MReclaimed)
	below, delays := med("BPF", results.RoleHigh, MBelowLow), med("BPF", results.RoleLow, MDelayNonZero)
	// Below 1 MiB, reclaim is noise (a few clean file pages), not something
	// the policy could steer.
	const minReclaim = 1 << 20
	var acts []string
	if hN >= minReclaim && hB < 0.9*hN {
		acts = append(acts, fmt.Sprintf("it steered reclaim away from HIGH (HIGH lost %s under BPF against %s under NoLimit, LOW %s against %s)", mbf(hB), mbf(hN), mbf(lB), mbf(lN)))
	}
	if delays > 0 {
		acts = append(acts, fmt.Sprintf("it delayed LOW's charges (%s non-zero delays per run)", cnt(delays)))
	}
	reclaimable := hN+lN >= minReclaim
	switch {
	case !reclaimable && len(acts) == 0:
		return fmt.Sprintf("Regime %s: nothing was reclaimed in NoLimit, so below_low had nothing to protect, and LOW was not delayed: the policy could not act.", groupName(g))
	case !reclaimable:
		return fmt.Sprintf("Regime %s: nothing was reclaimed in NoLimit, so below_low had nothing to protect (it returned true %s times per run); the policy acted only in that %s.", groupName(g), cnt(below), strings.Join(acts, " and "))
	case len(acts) == 0:
		return fmt.Sprintf("Regime %s: reclaim took %s from HIGH and %s from LOW under NoLimit, and about as much from HIGH under BPF (%s): the policy did not change where reclaim went, and LOW was not delayed.", groupName(g), mbf(hN), mbf(lN), mbf(hB))
	}
	return fmt.Sprintf("Regime %s let the policy act: %s.", groupName(g), strings.Join(acts, "; "))
}

func mbf(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf("%.1f MB", v/1e6)
}

func cnt(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf("%.0f", v)
}

func mb(v int64) string {
	if v < 0 {
		return "max"
	}
	return fmt.Sprintf("%.1f MB", float64(v)/1e6)
}

func (d *Data) setupTable() string {
	e := d.Env
	var b strings.Builder
	w := func(k, v string) {
		fmt.Fprintf(&b, "| %s | %s |\n", k, strings.ReplaceAll(or(v, "unknown"), "|", "\\|"))
	}
	b.WriteString("| item | value |\n|---|---|\n")
	w("kernel", e.KernelRelease)
	w("memcg_bpf_ops probe", e.Probe)
	w("policy mode", e.PolicyMode)
	var vs []string
	for _, k := range sortedKeys(e.RuntimeVersions) {
		vs = append(vs, k+" "+e.RuntimeVersions[k])
	}
	w("runtime versions", strings.Join(vs, "; "))
	w("where", fmt.Sprintf("%s (%s), %d CPUs, %s memory", or(e.Where, "unknown"), or(e.Accel, "unknown"), e.CPUs, mb(e.MemTotalBytes)))
	w("load average at the start", fmt.Sprintf("host %s; this machine %s", or(e.HostLoadAvg, "not recorded"), or(e.LoadAvg, "unknown")))
	w("git commit", e.GitCommit)
	w("profile", e.Profile)
	if c := e.Calibration; c != nil {
		w("calibration", c.Note)
	}
	if s := e.Swap; s != nil {
		w("swap device", fmt.Sprintf("%s, %s, algorithm %s, set up by the experiment: %v", s.Device, mb(s.SizeBytes), or(s.Algorithm, "default"), s.Created))
	}
	var ratios []float64
	for _, r := range d.Runs {
		if r.Run.Zram != nil && r.Run.Zram.Ratio > 0 {
			ratios = append(ratios, r.Run.Zram.Ratio)
		}
	}
	if len(ratios) > 0 {
		w("zram compression", fmt.Sprintf("median %.2f:1 over %d swap runs (orig/compr at the end of each run)", median(ratios), len(ratios)))
	}
	if len(d.Runs) > 0 {
		r := d.Runs[0]
		var ws []string
		for _, s := range r.Sessions {
			loop := ""
			if s.Window.Loop {
				loop = ", looped"
			}
			ws = append(ws, fmt.Sprintf("%s %s %g–%g s%s", s.Name, s.Trace, s.Window.From, s.Window.To, loop))
		}
		w("sessions (windows in trace seconds)", strings.Join(ws, "; "))
	}
	var setup []float64
	for _, r := range d.Runs {
		setup = append(setup, r.Run.SetupS+r.Run.TeardownS)
	}
	if len(setup) > 0 {
		w("per-run overhead", fmt.Sprintf("median %.1f s setup + teardown (containers created, ready, removed)", median(setup)))
	}
	return b.String()
}

func (d *Data) keptUp() string {
	// Solo when it ran; else Uncontended (HIGH beside the LOWs, no limit):
	// a replay that keeps up there keeps up alone.
	arm := analysis.ArmSolo
	if !slices.ContainsFunc(d.Included, func(r results.RunData) bool { return r.Run.Arm == arm }) {
		arm = analysis.ArmUncontended
	}
	var late, lag []float64
	for _, r := range d.Included {
		if r.Run.Arm != arm {
			continue
		}
		for _, h := range r.ByRole(results.RoleHigh) {
			if h.Replay != nil && h.Replay.Complete {
				late = append(late, h.Replay.PeakLatenessS)
				lag = append(lag, h.Replay.MaxStepLagS)
			}
		}
	}
	if len(late) == 0 {
		return "No complete Solo or Uncontended run: whether the replay keeps up cannot be checked.\n"
	}
	mx := slices.Max(late)
	verdict := "kept up"
	if mx > KeptUpMaxLateness {
		verdict = "did NOT keep up"
	}
	return fmt.Sprintf("HIGH without a limit (%s, %d runs) reached its window's peak at most %.2f s behind schedule (median %.2f s); the largest delay of a single step was %.2f s. The replay %s with the scaled trace (threshold %.1f s).\n",
		arm, len(late), mx, median(late), slices.Max(lag), verdict, KeptUpMaxLateness)
}

func (d *Data) exclusions() string {
	var b strings.Builder
	if len(d.Failed) > 0 {
		b.WriteString("These runs failed before they could be measured and are in no table (`--resume` retries them):\n\n| run | point | error |\n|---|---|---|\n")
		for _, f := range d.Failed {
			fmt.Fprintf(&b, "| %s | %s | %s |\n", f.ID, f.Label, strings.ReplaceAll(f.Error, "|", "\\|"))
		}
		b.WriteString("\n")
	}
	if len(d.Excluded) == 0 {
		fmt.Fprintf(&b, "No run was excluded: in every run each LOW session that was not killed was active for at least %.0f%% of HIGH's contention window.\n", 100*results.MinCover)
		return b.String()
	}
	b.WriteString("These runs are left out of every table, test and figure (a killed session never excludes a run):\n\n| run | point | reason |\n|---|---|---|\n")
	for _, r := range d.Excluded {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", r.Run.ID, r.Run.Label, strings.ReplaceAll(r.Run.ExcludeReason, "|", "\\|"))
	}
	return b.String()
}

func or(s, d string) string { return cmp.Or(s, d) }

func sortedKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
