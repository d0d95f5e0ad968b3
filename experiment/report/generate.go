// Package report owns everything derived from raw results: the tidy CSVs
// (the analysis tables, sessions.csv, runs.csv, the merged timeseries.csv),
// the figures and report.md. It reads only what package results loads, so
// `agentcg experiment report DIR` reproduces every CSV byte for byte.
package report

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/agentcg/agentcg/experiment/analysis"
	"github.com/agentcg/agentcg/experiment/contention"
	"github.com/agentcg/agentcg/experiment/figures"
	"github.com/agentcg/agentcg/experiment/results"
)

// Data is an experiment loaded and analysed.
type Data struct {
	Dir      string
	Env      results.Env
	Plan     *contention.Plan // nil when the folder has no plan.json
	Runs     []results.RunData
	Included []results.RunData
	Excluded []results.RunData
	Failed   []results.Failed
	Obs      []analysis.Observation
	Result   *analysis.Result // nil without observations
	Options  analysis.Options
}

// Options is the analysis the report runs: every arm against NoLimit,
// the memory effect against Uncontended, HIGH's memory stall as the
// continuous primary outcome.
func Options() analysis.Options {
	return analysis.Options{Reference: "NoLimit", Baseline: "Uncontended", Primary: MStallSome, LowCost: MStallSome,
		HigherIsBetter: HigherIsBetter}
}

// Load reads and analyses dir.
func Load(dir string) (*Data, error) {
	runs, err := results.Load(dir)
	if err != nil {
		return nil, err
	}
	d := &Data{Dir: dir, Runs: runs, Options: Options()}
	for i := range runs {
		results.CheckOverlap(&runs[i]) // re-derived, not trusted from run.json
		if runs[i].Run.Excluded {
			d.Excluded = append(d.Excluded, runs[i])
		} else {
			d.Included = append(d.Included, runs[i])
		}
	}
	if err := results.ReadJSON(filepath.Join(dir, "env.json"), &d.Env); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	var p contention.Plan
	if err := results.ReadJSON(filepath.Join(dir, "plan.json"), &p); err == nil {
		d.Plan = &p
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if d.Failed, err = results.LoadFailed(dir); err != nil {
		return nil, err
	}
	d.Obs = Observations(d.Included)
	if len(d.Obs) > 0 {
		r, err := analysis.Analyze(d.Obs, d.Options)
		if err != nil {
			return nil, err
		}
		// The regimes in the order the experiment ran them (the main one first).
		rank := func(reg string) int {
			if i := slices.Index(d.Env.Reclaim, reg); i >= 0 {
				return i
			}
			return len(d.Env.Reclaim)
		}
		slices.SortStableFunc(r.Groups, func(a, b analysis.Group) int { return rank(a.Regime) - rank(b.Regime) })
		d.Result = &r
		d.Options = r.Options
	}
	return d, nil
}

// Generate writes every derived file of dir from its raw files.
func Generate(dir string) error {
	d, err := Load(dir)
	if err != nil {
		return err
	}
	files := map[string][]byte{FileSessions: d.SessionsCSV(), FileRuns: d.RunsCSV()}
	if d.Result != nil {
		for name, body := range d.Result.CSV() {
			files[name] = body
		}
	} else {
		for name, h := range analysis.Headers {
			files[name] = []byte(strings.Join(h, ",") + "\n")
		}
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), body, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	if err := mergeTimeseries(dir, d.Runs); err != nil {
		return err
	}
	figs, err := d.Figures()
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "report.md"), []byte(d.Markdown(figs)), 0o644)
}

// File names of the report's own tables.
const (
	FileSessions   = "sessions.csv"
	FileRuns       = "runs.csv"
	FileTimeseries = "timeseries.csv"
)

// Headers of the derived CSV files (the analysis's and the report's own).
func Headers() map[string]string {
	out := map[string]string{
		FileSessions:   strings.Join(append(slices.Clone(sessionCols), SessionMetrics...), ","),
		FileRuns:       strings.Join(append(slices.Clone(runCols), ParentMetrics...), ","),
		FileTimeseries: results.TimeseriesHeader,
	}
	for f, h := range analysis.Headers {
		out[f] = strings.Join(h, ",")
	}
	return out
}

var (
	sessionCols = []string{"run", "block", "position", "arm", "regime", "point", "session", "role", "trace", "killed", "oom_killed", "timed_out", "excluded"}
	runCols     = []string{"run", "block", "position", "order", "arm", "regime", "point", "excluded", "exclude_reason", "error",
		"mem_scale", "speed", "parent_limit_bytes", "gate_limit_bytes", "planned_s", "setup_s", "teardown_s", "loadavg"}
)

// num formats deterministically; NaN (not measured) is empty.
func num(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return ""
	}
	return strconv.FormatFloat(v, 'g', 10, 64)
}

func csvField(s string) string {
	if strings.ContainsAny(s, ",\"\n") {
		return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
	}
	return s
}

func value(m map[string]float64, k string) float64 {
	if v, ok := m[k]; ok {
		return v
	}
	return math.NaN()
}

// SessionsCSV is one row per session of every finished run (excluded ones
// flagged), with every session metric: the tidy raw table.
func (d *Data) SessionsCSV() []byte {
	var b strings.Builder
	b.WriteString(Headers()[FileSessions] + "\n")
	for i := range d.Runs {
		r := &d.Runs[i]
		for j := range r.Sessions {
			s := &r.Sessions[j]
			f := []string{csvField(r.Run.ID), strconv.Itoa(r.Run.Block), strconv.Itoa(r.Run.Position), r.Run.Arm, r.Run.Reclaim,
				csvField(PointOf(&r.Run)), s.Name, s.Role, s.Trace, strconv.FormatBool(Killed(s)), strconv.FormatBool(s.OOMKilled),
				strconv.FormatBool(s.TimedOut), strconv.FormatBool(r.Run.Excluded)}
			m := SessionValues(s)
			for _, k := range SessionMetrics {
				f = append(f, num(value(m, k)))
			}
			b.WriteString(strings.Join(f, ",") + "\n")
		}
	}
	return []byte(b.String())
}

// RunsCSV is one row per finished run with its parent metrics and timing.
func (d *Data) RunsCSV() []byte {
	var b strings.Builder
	b.WriteString(Headers()[FileRuns] + "\n")
	for i := range d.Runs {
		r := &d.Runs[i].Run
		f := []string{csvField(r.ID), strconv.Itoa(r.Block), strconv.Itoa(r.Position), strconv.Itoa(r.Order), r.Arm, r.Reclaim,
			csvField(PointOf(r)), strconv.FormatBool(r.Excluded), csvField(r.ExcludeReason), csvField(r.Error),
			num(r.MemScale), num(r.Speed), strconv.FormatInt(r.ParentLimit, 10), strconv.FormatInt(r.GateLimit, 10),
			num(r.PlannedS), num(round3(r.SetupS)), num(round3(r.TeardownS)), csvField(r.LoadAvg)}
		m := RunValues(r)
		for _, k := range ParentMetrics {
			f = append(f, num(value(m, k)))
		}
		b.WriteString(strings.Join(f, ",") + "\n")
	}
	return []byte(b.String())
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

// mergeTimeseries concatenates the per-run series into timeseries.csv.
func mergeTimeseries(dir string, runs []results.RunData) error {
	var b strings.Builder
	b.WriteString(results.TimeseriesHeader + "\n")
	for _, r := range runs {
		ss, err := results.LoadTimeseries(dir, r.Run.ID)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		for _, s := range ss {
			b.WriteString(s.Row() + "\n")
		}
	}
	return os.WriteFile(filepath.Join(dir, FileTimeseries), []byte(b.String()), 0o644)
}

// groupRuns returns the included runs of one analysis group.
func (d *Data) groupRuns(g analysis.Group) []*results.RunData {
	points := map[string][]string{}
	for i := range d.Included {
		r := &d.Included[i].Run
		if p := PointOf(r); !slices.Contains(points[r.Reclaim], p) {
			points[r.Reclaim] = append(points[r.Reclaim], p)
		}
	}
	var out []*results.RunData
	for i := range d.Included {
		r := &d.Included[i]
		if r.Run.Reclaim == g.Regime && slices.Contains(groupsFor(PointOf(&r.Run), points[r.Run.Reclaim]), g.Point) {
			out = append(out, r)
		}
	}
	return out
}

func groupName(g analysis.Group) string {
	if g.Point == "" {
		return g.Regime
	}
	return g.Regime + " " + g.Point
}

// Figures draws every figure and returns the PNG and SVG paths.
func (d *Data) Figures() ([]string, error) {
	var out []string
	add := func(f []string, err error) error {
		out = append(out, f...)
		return err
	}
	if d.Result == nil {
		return nil, nil
	}
	for _, g := range d.Result.Groups {
		slug := figures.Slug(groupName(g))
		if err := add(figures.DrawOutcomes(d.Dir, "fig1-high-stall-"+slug, d.outcomeFigure(g))); err != nil {
			return out, err
		}
		var rates []figures.Rate
		for _, h := range g.Headline {
			rates = append(rates, figures.Rate{Label: h.Arm, K: h.Survived.K, N: h.Survived.N, Lo: h.Survived.Lo, Hi: h.Survived.Hi})
		}
		if err := add(figures.DrawRates(d.Dir, "fig3-survival-"+slug,
			fmt.Sprintf("HIGH survival per arm, %s (k/n, %.0f%% Wilson CI)", groupName(g), 100*d.Options.Conf), "HIGH survived", rates)); err != nil {
			return out, err
		}
		if b, ok := d.delayFigure(g); ok {
			if err := add(figures.DrawBars(d.Dir, "fig4-bpf-delays-"+slug, b)); err != nil {
				return out, err
			}
		}
	}
	if g, block, ok := d.representative(); ok {
		panels, err := d.timeline(g, block)
		if err != nil {
			return out, err
		}
		title := fmt.Sprintf("Regime %s, block %d (its %s HIGH stall is nearest the median)", groupName(g), block, d.repArm(g))
		if err := add(figures.DrawTimeline(d.Dir, "fig2-timeline-"+figures.Slug(groupName(g)), title, panels)); err != nil {
			return out, err
		}
	}
	return out, nil
}

// outcomeFigure is figure 1 for one group: HIGH's memory stall per arm.
func (d *Data) outcomeFigure(g analysis.Group) figures.Outcomes {
	o := figures.Outcomes{Title: fmt.Sprintf("HIGH memory stall per arm, %s: each block, and the median with its CI", groupName(g)),
		YLabel: "HIGH stall (memory.pressure some, s)"}
	runs := d.groupRuns(g)
	for _, arm := range g.Arms {
		var vals []float64
		killed := 0
		for _, r := range runs {
			if r.Run.Arm != arm {
				continue
			}
			for _, h := range r.ByRole(results.RoleHigh) {
				if Killed(h) {
					killed++
					vals = append(vals, math.Inf(1))
				} else {
					vals = append(vals, float64(h.Kernel.Memory.SomeUs)/1e6)
				}
			}
		}
		slices.Sort(vals)
		med, lo, hi, level := MedianCI(vals, d.Options.Conf)
		var alive []float64
		for _, v := range vals {
			if !math.IsInf(v, 0) {
				alive = append(alive, v)
			}
		}
		o.Arms = append(o.Arms, figures.Outcome{Label: arm, Values: alive, Killed: killed, Median: med, Lo: lo, Hi: hi, CILevel: level,
			Subtitle: fmt.Sprintf("n=%d", len(vals))})
	}
	return o
}

// delayFigure is figure 4: the BPF arms' median delay returns per LOW
// session and below_low returns for HIGH.
func (d *Data) delayFigure(g analysis.Group) (figures.Bars, bool) {
	b := figures.Bars{Title: fmt.Sprintf("BPF policy decisions per run, %s (median over blocks)", groupName(g)), YLabel: "returns per run",
		Groups: []string{"get_high_delay_ms > 0", "below_low true"}, Values: map[string][]float64{}}
	runs := d.groupRuns(g)
	for _, arm := range g.Arms {
		per := map[string][][2]float64{}
		var names []string
		for _, r := range runs {
			if r.Run.Arm != arm {
				continue
			}
			for i := range r.Sessions {
				s := &r.Sessions[i]
				if s.Counters == nil {
					continue
				}
				if !slices.Contains(names, s.Name) {
					names = append(names, s.Name)
				}
				per[s.Name] = append(per[s.Name], [2]float64{float64(s.Counters.DelayNonZero), float64(s.Counters.BelowLowTrue)})
			}
		}
		slices.Sort(names)
		for _, n := range names {
			var a, c []float64
			for _, v := range per[n] {
				a, c = append(a, v[0]), append(c, v[1])
			}
			b.Categories = append(b.Categories, arm+" "+n)
			b.Values[b.Groups[0]] = append(b.Values[b.Groups[0]], median(a))
			b.Values[b.Groups[1]] = append(b.Values[b.Groups[1]], median(c))
		}
	}
	return b, len(b.Categories) > 0
}

func median(x []float64) float64 {
	if len(x) == 0 {
		return math.NaN()
	}
	s := slices.Clone(x)
	slices.Sort(s)
	if n := len(s); n%2 == 1 {
		return s[n/2]
	} else {
		return (s[n/2-1] + s[n/2]) / 2
	}
}

// MedianCI is the median of sorted x (±Inf allowed) and the distribution-
// free CI from order statistics: (x_(k), x_(n+1−k)) for the largest k with
// P(Binomial(n, ½) < k) ≤ (1 − conf)/2, and the level it achieves. With
// too few values for conf the CI is the whole range.
func MedianCI(x []float64, conf float64) (med, lo, hi, level float64) {
	n := len(x)
	if n == 0 {
		return math.NaN(), math.NaN(), math.NaN(), math.NaN()
	}
	med = median(x)
	// cdf[i] = P(B ≤ i)
	cdf := make([]float64, n+1)
	p, acc := math.Pow(0.5, float64(n)), 0.0
	for i := 0; i <= n; i++ {
		acc += p
		cdf[i] = acc
		p = p * float64(n-i) / float64(i+1)
	}
	k := 1
	for kk := 1; kk <= n/2; kk++ {
		if cdf[kk-1] <= (1-conf)/2 {
			k = kk
		}
	}
	// Coverage of (x_(k), x_(n+1−k)) is 1 − 2·P(B ≤ k−1).
	return med, x[k-1], x[n-k], 1 - 2*cdf[k-1]
}

// repArm is the arm whose median block picks the representative block.
func (d *Data) repArm(g analysis.Group) string {
	for _, a := range []string{"BPF", "HighOnly", "NoLimit"} {
		if slices.Contains(g.Arms, a) {
			return a
		}
	}
	return g.Arms[0]
}

// representative picks the group with the most arms and, in it, the block
// (with every arm present) whose HIGH stall in repArm is nearest the median.
func (d *Data) representative() (analysis.Group, int, bool) {
	if d.Result == nil || len(d.Result.Groups) == 0 {
		return analysis.Group{}, 0, false
	}
	g := d.Result.Groups[0]
	for _, gg := range d.Result.Groups {
		if len(gg.Arms) > len(g.Arms) {
			g = gg
		}
	}
	arm := d.repArm(g)
	runs := d.groupRuns(g)
	armsIn := map[int]map[string]bool{}
	stall := map[int]float64{}
	for _, r := range runs {
		if armsIn[r.Run.Block] == nil {
			armsIn[r.Run.Block] = map[string]bool{}
		}
		armsIn[r.Run.Block][r.Run.Arm] = true
		if r.Run.Arm == arm {
			for _, h := range r.ByRole(results.RoleHigh) {
				stall[r.Run.Block] = float64(h.Kernel.Memory.SomeUs)
				if Killed(h) {
					stall[r.Run.Block] = math.Inf(1)
				}
			}
		}
	}
	var vals []float64
	for _, v := range stall {
		vals = append(vals, v)
	}
	if len(vals) == 0 {
		return g, 0, false
	}
	med := median(vals)
	best, bestDist, found := 0, math.Inf(1), false
	for b := range armsIn {
		v, ok := stall[b]
		if !ok || len(armsIn[b]) < len(g.Arms) {
			continue
		}
		dist := math.Abs(v - med)
		if math.IsNaN(dist) {
			dist = math.Inf(1)
		}
		if !found || dist < bestDist || (dist == bestDist && b < best) {
			best, bestDist, found = b, dist, true
		}
	}
	return g, best, found
}

// timeline builds figure 2's panels: every arm of one block.
func (d *Data) timeline(g analysis.Group, block int) ([]figures.Panel, error) {
	var panels []figures.Panel
	runs := d.groupRuns(g)
	for _, arm := range g.Arms {
		for _, r := range runs {
			if r.Run.Arm != arm || r.Run.Block != block {
				continue
			}
			ss, err := results.LoadTimeseries(d.Dir, r.Run.ID)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, err
			}
			pn := figures.Panel{Title: fmt.Sprintf("%s, run %03d", r.Run.Arm, r.Run.Order), Contention: [2]float64{r.Run.ContentionStartS, r.Run.ContentionEndS}}
			if r.Run.ParentLimit > 0 {
				pn.Limit = float64(r.Run.ParentLimit)
			}
			// The gate line of the arm's policy, else the plan's (where the
			// BPF arm's gate is, for comparison).
			gp, err := strconv.Atoi(r.Run.Params["gate_pct"])
			if err != nil && d.Plan != nil {
				gp, err = int(d.Plan.GatePct), nil
			}
			if err == nil && gp > 0 && r.Run.GateLimit > 0 {
				pn.Gate = float64(r.Run.GateLimit) * float64(gp) / 100
			}
			order := []string{"parent"}
			for _, s := range r.Sessions {
				order = append(order, s.Name)
			}
			for ci, name := range order {
				var mem, swp, st figures.Series
				mem = figures.Series{Name: name, Color: ci}
				swp = figures.Series{Name: name + " swap", Color: ci, Dashed: true}
				st = figures.Series{Name: name, Color: ci}
				var first int64 = -1
				for _, s := range ss {
					if s.Cgroup != name {
						continue
					}
					if first < 0 {
						first = s.SomeTotal
					}
					mem.T, mem.Y = append(mem.T, s.T), append(mem.Y, float64(s.Current))
					swp.T, swp.Y = append(swp.T, s.T), append(swp.Y, float64(s.Swap))
					st.T, st.Y = append(st.T, s.T), append(st.Y, float64(s.SomeTotal-first)/1e6)
				}
				pn.Memory = append(pn.Memory, mem)
				if slices.ContainsFunc(swp.Y, func(v float64) bool { return v > 0 }) {
					pn.Memory = append(pn.Memory, swp)
				}
				if name != "parent" {
					pn.Stall = append(pn.Stall, st)
				}
			}
			panels = append(panels, pn)
		}
	}
	return panels, nil
}
