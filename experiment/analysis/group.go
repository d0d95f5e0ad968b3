package analysis

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/agentcg/agentcg/experiment/stats"
)

// unit is one session's value of one metric, ready for a rank test.
type unit struct {
	block   int
	session string
	value   float64 // the worst value of the metric's direction when killed
	killed  bool
}

// pairKey is what pairs a unit with its partner in another arm of the same
// block: the block for HIGH and parent rows (one per run), the block and the
// session name for LOW rows (a run may hold several LOW sessions).
func pairKey(u unit, role string) string {
	if role == RoleLow {
		return fmt.Sprintf("%d/%s", u.block, u.session)
	}
	return fmt.Sprint(u.block)
}

// groupData indexes one group's observations.
type groupData struct {
	obs  []Observation
	opts Options
	arms []string
}

func (g groupData) sessions(arm, role, trace string) []Observation {
	var out []Observation
	for _, o := range g.obs {
		if o.Arm == arm && o.Role == role && (role != RoleLow || o.Trace == trace) {
			out = append(out, o)
		}
	}
	slices.SortFunc(out, func(a, b Observation) int {
		return cmp.Or(cmp.Compare(a.Block, b.Block), cmp.Compare(a.Session, b.Session))
	})
	return out
}

// sample returns the units of one metric: every killed session (at the
// worst value) and every other session where the metric was measured.
// ok says whether the metric exists in this arm: some surviving session
// measured it, or every session was killed and either one of them carries
// the metric (its value is ignored) or the metric is one every session has
// (Options.alwaysMeasured). So an all-killed arm is simply worst on stall,
// while BPF delay returns are never compared with NoLimit, which has none.
func (g groupData) sample(arm, role, trace, metric string) (us []unit, ok bool) {
	worst := g.opts.direction(metric).Worst()
	measured, alive, present := 0, 0, 0
	for _, o := range g.sessions(arm, role, trace) {
		v, has := o.Metrics[metric]
		if has {
			present++
		}
		switch {
		case o.Killed:
			us = append(us, unit{o.Block, o.Session, worst, true})
		case has && !math.IsNaN(v):
			us = append(us, unit{o.Block, o.Session, v, false})
			measured++
			alive++
		default:
			alive++
		}
	}
	return us, measured > 0 || len(us) > 0 && alive == 0 && (present > 0 || g.opts.alwaysMeasured(metric))
}

// metrics lists the metric names measured for a role (and LOW trace) in
// this group, sorted.
func (g groupData) metrics(role, trace string) []string {
	var ms []string
	for _, o := range g.obs {
		if o.Role != role || (role == RoleLow && o.Trace != trace) {
			continue
		}
		for m, v := range o.Metrics {
			if !math.IsNaN(v) && !slices.Contains(ms, m) {
				ms = append(ms, m)
			}
		}
	}
	slices.Sort(ms)
	return ms
}

// measuredAnywhere reports whether any session of the role (and LOW trace)
// in this group measured the metric.
func (g groupData) measuredAnywhere(role, trace, metric string) bool {
	return slices.Contains(g.metrics(role, trace), metric)
}

func (g groupData) lowTraces() []string {
	var ts []string
	for _, o := range g.obs {
		if o.Role == RoleLow && !slices.Contains(ts, o.Trace) {
			ts = append(ts, o.Trace)
		}
	}
	slices.Sort(ts)
	return ts
}

func analyzeGroup(regime, point string, obs []Observation, opts Options) (Group, error) {
	g := Group{Regime: regime, Point: point}
	blocks := map[int]bool{}
	for _, o := range obs {
		blocks[o.Block] = true
		if !slices.Contains(g.Arms, o.Arm) {
			g.Arms = append(g.Arms, o.Arm)
		}
	}
	g.Blocks = len(blocks)
	sortArms(g.Arms)
	d := groupData{obs: obs, opts: opts, arms: g.Arms}
	ref := opts.Reference
	hasRef := slices.Contains(g.Arms, ref)
	if !hasRef {
		g.Notes = append(g.Notes, fmt.Sprintf("reference arm %s is absent: no comparisons", ref))
	}
	family := primaryArms(g.Arms, opts)

	var tests []Comparison
	add := func(c *Comparison, err error) error {
		if err != nil {
			return err
		}
		if c != nil {
			if c.Test == TestMannWhitney {
				g.Notes = append(g.Notes, fmt.Sprintf("%s vs %s on %s %s%s: blocks do not pair up, compared unpaired (Mann-Whitney)",
					c.Arm, c.Reference, c.Role, c.Metric, traceSuffix(c.Trace)))
			}
			tests = append(tests, *c)
		}
		return nil
	}
	others := slices.DeleteFunc(slices.Clone(g.Arms), func(a string) bool { return a == ref })
	if hasRef {
		// Primary family: survival and Primary of each family arm.
		for _, arm := range family {
			if err := add(d.survival(arm, ref, FamilyPrimary)); err != nil {
				return g, err
			}
			if err := add(d.compare(FamilyPrimary, RoleHigh, "", opts.Primary, arm, ref)); err != nil {
				return g, err
			}
		}
		// Secondary: the same for other arms, then every other HIGH and
		// parent metric for every arm.
		for _, arm := range others {
			if slices.Contains(family, arm) {
				continue
			}
			if err := add(d.survival(arm, ref, FamilySecondary)); err != nil {
				return g, err
			}
			if err := add(d.compare(FamilySecondary, RoleHigh, "", opts.Primary, arm, ref)); err != nil {
				return g, err
			}
		}
		for _, role := range []string{RoleHigh, RoleParent} {
			for _, m := range d.metrics(role, "") {
				if role == RoleHigh && m == opts.Primary {
					continue
				}
				for _, arm := range others {
					if err := add(d.compare(FamilySecondary, role, "", m, arm, ref)); err != nil {
						return g, err
					}
				}
			}
		}
		// LOW: each trace on its own; never pooled.
		for _, tr := range d.lowTraces() {
			for _, m := range d.metrics(RoleLow, tr) {
				fam := FamilyLow
				if m == opts.LowCost {
					fam = FamilyLowCost
				}
				for _, arm := range others {
					if err := add(d.compare(fam, RoleLow, tr, m, arm, ref)); err != nil {
						return g, err
					}
				}
			}
		}
	}
	// Baseline: the memory effect, each policy arm minus the baseline control.
	if base := opts.Baseline; base != "-" && slices.Contains(g.Arms, base) {
		for _, arm := range g.Arms {
			if IsControl(arm) || arm == base {
				continue
			}
			if err := add(d.compare(FamilyBaseline, RoleHigh, "", opts.Primary, arm, base)); err != nil {
				return g, err
			}
		}
	}
	adjust(tests)
	g.Tests = tests
	g.Headline = d.headline(tests, family)
	g.LowCost = d.lowCost(tests)
	g.Summary = d.summary()
	p, err := d.power(g.Headline, family, tests)
	if err != nil {
		return g, err
	}
	g.Power = p
	return g, nil
}

func traceSuffix(tr string) string {
	if tr == "" {
		return ""
	}
	return " (trace " + tr + ")"
}

// primaryArms is Options.PrimaryArms restricted to the arms present, or by
// default every non-control arm but the reference.
func primaryArms(present []string, o Options) []string {
	var out []string
	for _, a := range present {
		if a == o.Reference {
			continue
		}
		if o.PrimaryArms == nil && !IsControl(a) || slices.Contains(o.PrimaryArms, a) {
			out = append(out, a)
		}
	}
	return out
}

// adjust fills PAdj with Holm's adjustment within each family.
func adjust(tests []Comparison) {
	for _, fam := range []string{FamilyPrimary, FamilySecondary, FamilyLowCost, FamilyLow, FamilyBaseline} {
		var idx []int
		var ps []float64
		for i, t := range tests {
			if t.Family == fam {
				idx, ps = append(idx, i), append(ps, t.P)
			}
		}
		for j, q := range stats.Holm(ps) {
			tests[idx[j]].PAdj = q
		}
	}
}

// survival compares HIGH survival of arm and ref with Fisher's exact test.
func (g groupData) survival(arm, ref, family string) (*Comparison, error) {
	a, r := g.sessions(arm, RoleHigh, ""), g.sessions(ref, RoleHigh, "")
	if len(a) == 0 || len(r) == 0 {
		return nil, nil
	}
	ka, kr := countKilled(a), countKilled(r)
	f, err := stats.Fisher(ka, len(a)-ka, kr, len(r)-kr)
	if err != nil {
		return nil, fmt.Errorf("survival %s vs %s: %w", arm, ref, err)
	}
	pa, _ := stats.Wilson(len(a)-ka, len(a), g.opts.Conf)
	pr, _ := stats.Wilson(len(r)-kr, len(r), g.opts.Conf)
	lo, hi := stats.DiffCI(pa, pr)
	return &Comparison{
		Family: family, Role: RoleHigh, Metric: "survived", Arm: arm, Reference: ref,
		Test: TestFisher, Method: stats.MethodExact, NArm: len(a), NRef: len(r), KilledArm: ka, KilledRef: kr,
		Estimate: pa.P - pr.P, Lo: lo, Hi: hi, Conf: g.opts.Conf, Cliff: math.NaN(), P: f.P, PAdj: math.NaN(),
	}, nil
}

func countKilled(os []Observation) int {
	k := 0
	for _, o := range os {
		if o.Killed {
			k++
		}
	}
	return k
}

// compare runs the rank test of one metric, arm against ref: the paired
// signed-rank test on block differences when every session has a partner
// in the same block, Mann-Whitney otherwise. nil when either arm never
// measured the metric.
func (g groupData) compare(family, role, trace, metric, arm, ref string) (*Comparison, error) {
	a, oka := g.sample(arm, role, trace, metric)
	r, okr := g.sample(ref, role, trace, metric)
	if !oka || !okr || countUnitsKilled(a) == len(a) && countUnitsKilled(r) == len(r) && !g.measuredAnywhere(role, trace, metric) {
		return nil, nil
	}
	c := &Comparison{
		Family: family, Role: role, Trace: trace, Metric: metric, Arm: arm, Reference: ref,
		NArm: len(a), NRef: len(r), KilledArm: countUnitsKilled(a), KilledRef: countUnitsKilled(r),
		WorstAs: worstLabel(role, g.opts.direction(metric)), PAdj: math.NaN(),
	}
	av, rv := values(a), values(r)
	c.Cliff = stats.CliffsDelta(av, rv)
	if diffs, ok := paired(a, r, role); ok {
		sr, err := stats.SignedRank(diffs, stats.TwoSided, g.opts.Conf)
		if err != nil {
			return nil, fmt.Errorf("%s %s%s %s vs %s: %w", role, metric, traceSuffix(trace), arm, ref, err)
		}
		c.Test, c.Method, c.NPairs = TestSignedRank, sr.Method, len(diffs)
		c.Estimate, c.Lo, c.Hi, c.Conf, c.P = sr.Estimate, sr.Lo, sr.Hi, sr.Conf, sr.P
		return c, nil
	}
	u, err := stats.MannWhitney{}.Compare(av, rv)
	if err != nil {
		return nil, fmt.Errorf("%s %s%s %s vs %s: %w", role, metric, traceSuffix(trace), arm, ref, err)
	}
	sh, err := stats.TwoSampleShift(av, rv, g.opts.Conf)
	if err != nil {
		return nil, fmt.Errorf("%s %s%s %s vs %s: %w", role, metric, traceSuffix(trace), arm, ref, err)
	}
	c.Test, c.Method, c.P = TestMannWhitney, sh.Method, u.P
	c.Estimate, c.Lo, c.Hi, c.Conf = sh.Estimate, sh.Lo, sh.Hi, sh.Conf
	return c, nil
}

// paired returns arm − ref block differences (Inf − Inf = 0: both killed)
// when the two samples pair up exactly.
func paired(a, r []unit, role string) ([]float64, bool) {
	if len(a) != len(r) || len(a) == 0 {
		return nil, false
	}
	byKey := map[string]float64{}
	for _, u := range r {
		byKey[pairKey(u, role)] = u.value
	}
	d := make([]float64, 0, len(a))
	for _, u := range a {
		v, ok := byKey[pairKey(u, role)]
		if !ok {
			return nil, false
		}
		if math.IsInf(u.value, 0) && u.value == v {
			d = append(d, 0)
		} else {
			d = append(d, u.value-v)
		}
	}
	return d, true
}

func values(us []unit) []float64 {
	v := make([]float64, len(us))
	for i, u := range us {
		v[i] = u.value
	}
	return v
}

func countUnitsKilled(us []unit) int {
	k := 0
	for _, u := range us {
		if u.killed {
			k++
		}
	}
	return k
}

func worstLabel(role string, d stats.Direction) string {
	if role == RoleParent {
		return "" // the parent is never killed
	}
	if d == stats.HigherIsBetter {
		return "-inf"
	}
	return "+inf"
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	if math.IsInf(s[n/2-1], 0) && math.IsInf(s[n/2], 0) && s[n/2-1] != s[n/2] {
		return 0
	}
	return s[n/2-1]/2 + s[n/2]/2
}

func findTest(tests []Comparison, family, role, trace, metric, arm string) *Comparison {
	for i := range tests {
		t := &tests[i]
		if (family == "" || t.Family == family) && t.Role == role && t.Trace == trace && t.Metric == metric && t.Arm == arm && t.Family != FamilyBaseline {
			return t
		}
	}
	return nil
}

func (g groupData) headline(tests []Comparison, family []string) []ArmRow {
	var rows []ArmRow
	for _, arm := range g.arms {
		hs := g.sessions(arm, RoleHigh, "")
		row := ArmRow{Arm: arm, Stall: math.NaN(), InFamily: slices.Contains(family, arm)}
		if len(hs) > 0 {
			k := countKilled(hs)
			row.Survived, _ = stats.Wilson(len(hs)-k, len(hs), g.opts.Conf)
		} else {
			row.Survived = stats.Proportion{P: math.NaN(), Lo: math.NaN(), Hi: math.NaN(), Conf: g.opts.Conf}
		}
		if us, ok := g.sample(arm, RoleHigh, "", g.opts.Primary); ok && g.measuredAnywhere(RoleHigh, "", g.opts.Primary) {
			row.Stall, row.NStall = median(values(us)), len(us)
		}
		row.Survival = findTest(tests, "", RoleHigh, "", "survived", arm)
		row.StallTest = findTest(tests, "", RoleHigh, "", g.opts.Primary, arm)
		rows = append(rows, row)
	}
	return rows
}

func (g groupData) lowCost(tests []Comparison) []LowRow {
	var rows []LowRow
	for _, tr := range g.lowTraces() {
		for _, arm := range g.arms {
			ls := g.sessions(arm, RoleLow, tr)
			if len(ls) == 0 {
				continue
			}
			k := countKilled(ls)
			row := LowRow{Arm: arm, Trace: tr, Cost: math.NaN()}
			row.Survived, _ = stats.Wilson(len(ls)-k, len(ls), g.opts.Conf)
			if us, ok := g.sample(arm, RoleLow, tr, g.opts.LowCost); ok && g.measuredAnywhere(RoleLow, tr, g.opts.LowCost) {
				row.Cost, row.NCost = median(values(us)), len(us)
			}
			row.CostTest = findTest(tests, FamilyLowCost, RoleLow, tr, g.opts.LowCost, arm)
			rows = append(rows, row)
		}
	}
	return rows
}

func (g groupData) summary() []MetricSummary {
	var out []MetricSummary
	type rt struct{ role, trace string }
	var rts []rt
	for _, role := range []string{RoleHigh, RoleLow, RoleParent} {
		if role == RoleLow {
			for _, tr := range g.lowTraces() {
				rts = append(rts, rt{role, tr})
			}
			continue
		}
		rts = append(rts, rt{role, ""})
	}
	for _, x := range rts {
		for _, m := range g.metrics(x.role, x.trace) {
			for _, arm := range g.arms {
				us, ok := g.sample(arm, x.role, x.trace, m)
				if !ok {
					continue
				}
				s := MetricSummary{Arm: arm, Role: x.role, Trace: x.trace, Metric: m, N: len(us),
					Killed: countUnitsKilled(us), Median: median(values(us)), Min: math.NaN(), Max: math.NaN()}
				for _, u := range us {
					if !u.killed {
						s.Min, s.Max = nanMin(s.Min, u.value), nanMax(s.Max, u.value)
					}
				}
				out = append(out, s)
			}
		}
	}
	return out
}

func (g groupData) power(rows []ArmRow, family []string, tests []Comparison) (Power, error) {
	o := g.opts
	p := Power{Alpha: o.Alpha, Planned: o.Planned, N: -1}
	for _, r := range rows {
		if (slices.Contains(family, r.Arm) || r.Arm == o.Reference) && r.Survived.N > 0 && (p.N < 0 || r.Survived.N < p.N) {
			p.N = r.Survived.N
		}
	}
	for _, t := range tests {
		if t.Family == FamilyPrimary && !math.IsNaN(t.P) {
			p.M++
		}
	}
	p.HolmAlpha = o.Alpha / float64(max(p.M, 1))
	if p.N <= 0 {
		p.N = 0
		p.Fisher, p.FisherHolm, p.Signed, p.SignedHolm, p.MinPSigned, p.MinPFisher = math.NaN(), math.NaN(), math.NaN(), math.NaN(), math.NaN(), math.NaN()
		return p, nil
	}
	var err error
	if p.Fisher, err = stats.FisherPower(p.N, p.N, o.Planned.KillRef, o.Planned.KillArm, p.Alpha); err != nil {
		return p, fmt.Errorf("power: %w", err)
	}
	if p.FisherHolm, err = stats.FisherPower(p.N, p.N, o.Planned.KillRef, o.Planned.KillArm, p.HolmAlpha); err != nil {
		return p, fmt.Errorf("power: %w", err)
	}
	if p.Signed, err = stats.SignedRankPower(p.N, o.Planned.StallEffect, p.Alpha, o.PowerSims, o.Seed); err != nil {
		return p, fmt.Errorf("power: %w", err)
	}
	if p.SignedHolm, err = stats.SignedRankPower(p.N, o.Planned.StallEffect, p.HolmAlpha, o.PowerSims, o.Seed); err != nil {
		return p, fmt.Errorf("power: %w", err)
	}
	p.MinPSigned = math.Min(1, 2/math.Ldexp(1, p.N))
	f, err := stats.Fisher(0, p.N, p.N, 0)
	if err != nil {
		return p, fmt.Errorf("power: %w", err)
	}
	p.MinPFisher = f.P
	return p, nil
}

// nanMin and nanMax treat a NaN accumulator as empty.
func nanMin(acc, v float64) float64 {
	if math.IsNaN(acc) {
		return v
	}
	return math.Min(acc, v)
}

func nanMax(acc, v float64) float64 {
	if math.IsNaN(acc) {
		return v
	}
	return math.Max(acc, v)
}
