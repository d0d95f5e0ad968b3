package analysis

import (
	"bytes"
	"encoding/csv"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/agentcg/agentcg/experiment/stats"
)

// run builds the sessions of one run: a HIGH session and LOW sessions named
// low-<trace>.
func run(block int, arm string, highStall float64, highKilled bool, low map[string]float64) []Observation {
	obs := []Observation{{Block: block, Arm: arm, Regime: "swap", Session: "high", Role: RoleHigh, Trace: "Medical",
		Killed: highKilled, Metrics: map[string]float64{MStallSome: highStall, MMaxStepLag: highStall / 1e6}}}
	for tr, v := range low {
		obs = append(obs, Observation{Block: block, Arm: arm, Regime: "swap", Session: "low-" + tr, Role: RoleLow, Trace: tr,
			Metrics: map[string]float64{MStallSome: v}})
	}
	return obs
}

func mustAnalyze(t *testing.T, obs []Observation, o Options) Result {
	t.Helper()
	r, err := Analyze(obs, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Groups) != 1 {
		t.Fatalf("%d groups", len(r.Groups))
	}
	return r
}

func test(t *testing.T, g Group, family, role, trace, metric, arm string) Comparison {
	t.Helper()
	for _, c := range g.Tests {
		if c.Family == family && c.Role == role && c.Trace == trace && c.Metric == metric && c.Arm == arm {
			return c
		}
	}
	t.Fatalf("no %s test of %s %s %s for %s in %+v", family, role, trace, metric, arm, g.Tests)
	return Comparison{}
}

func TestKilledTakesWorstRank(t *testing.T) {
	// Every BPF HIGH session is killed early, so its measured stall is tiny
	// (it died before it could stall). Dropping the killed, or using their
	// raw stall, would make BPF look best; at the worst rank it is worst.
	var obs []Observation
	for b := range 8 {
		obs = append(obs, run(b, ArmNoLimit, 1000+float64(b), false, nil)...)
		obs = append(obs, run(b, ArmBPF, 1, true, nil)...)
	}
	g := mustAnalyze(t, obs, Options{}).Groups[0]
	c := test(t, g, FamilyPrimary, RoleHigh, "", MStallSome, ArmBPF)
	if c.NArm != 8 || c.KilledArm != 8 || c.NPairs != 8 || c.WorstAs != "+inf" {
		t.Errorf("killed sessions not kept: %+v", c)
	}
	if !math.IsInf(c.Estimate, 1) || c.P > 0.01 {
		t.Errorf("killed sessions should rank worst: shift %v p %v", c.Estimate, c.P)
	}
	for _, m := range g.Summary {
		if m.Arm == ArmBPF && m.Role == RoleHigh && (m.Killed != 8 || !math.IsInf(m.Median, 1) || !math.IsNaN(m.Min) || !math.IsNaN(m.Max)) {
			t.Errorf("summary of an all-killed arm: %+v", m)
		}
	}
	row := g.Headline[slices.IndexFunc(g.Headline, func(h ArmRow) bool { return h.Arm == ArmBPF })]
	if row.Survived.K != 0 || row.Survived.N != 8 || !math.IsInf(row.Stall, 1) || row.NStall != 8 {
		t.Errorf("headline: %+v", row)
	}
	if n := Narrative(Result{Options: Options{}.withDefaults(), Groups: []Group{g}}); !strings.Contains(n, "higher under BPF") || !strings.Contains(n, "worst rank") {
		t.Errorf("narrative: %s", n)
	}

	// Half killed, with the same raw stall as the reference: the signed-rank
	// V must count the killed blocks as the largest positive differences.
	obs = nil
	for b := range 6 {
		obs = append(obs, run(b, ArmNoLimit, 100+float64(b), false, nil)...)
		obs = append(obs, run(b, ArmBPF, 100+float64(b)-0.5, b%2 == 0, nil)...)
	}
	c = test(t, mustAnalyze(t, obs, Options{}).Groups[0], FamilyPrimary, RoleHigh, "", MStallSome, ArmBPF)
	// Differences: three -0.5 (ranks 1-3, midrank 2) and three +Inf
	// (ranks 4-6, midrank 5): R's wilcox.test(c(-.5,-.5,-.5,1e9,1e9,1e9)).
	want, _ := stats.SignedRank([]float64{-0.5, -0.5, -0.5, 1e9, 1e9, 1e9}, stats.TwoSided, 0.95)
	if c.KilledArm != 3 || c.P != want.P {
		t.Errorf("half killed: %+v, want p %v", c, want.P)
	}
}

func TestLowTracesNeverPooled(t *testing.T) {
	// Trace A pays a lot more under BPF; trace B does not change. Pooled,
	// the two would blur; kept apart, only A is flagged, and each test has
	// one session per run.
	var obs []Observation
	rng := rand.New(rand.NewPCG(3, 4))
	for b := range 10 {
		noise := func() float64 { return rng.Float64() * 10 }
		obs = append(obs, run(b, ArmNoLimit, 500+noise(), false, map[string]float64{"A": 100 + noise(), "B": 300 + noise()})...)
		obs = append(obs, run(b, ArmBPF, 500+noise(), false, map[string]float64{"A": 1000 + noise(), "B": 300 + noise()})...)
	}
	g := mustAnalyze(t, obs, Options{}).Groups[0]
	a := test(t, g, FamilyLowCost, RoleLow, "A", MStallSome, ArmBPF)
	bt := test(t, g, FamilyLowCost, RoleLow, "B", MStallSome, ArmBPF)
	if a.NArm != 10 || a.NPairs != 10 || bt.NArm != 10 || bt.NPairs != 10 {
		t.Errorf("LOW tests pooled traces: A %+v B %+v", a, bt)
	}
	if a.PAdj > 0.05 || a.Estimate < 800 || bt.PAdj <= 0.05 {
		t.Errorf("trace A should be flagged and B not: A %+v B %+v", a, bt)
	}
	if len(g.LowCost) != 4 {
		t.Fatalf("low cost rows: %+v", g.LowCost)
	}
	for _, l := range g.LowCost {
		if l.Survived.N != 10 || l.NCost != 10 {
			t.Errorf("low cost row pooled: %+v", l)
		}
	}
	for _, c := range g.Tests {
		if c.Role == RoleLow && c.Trace == "" {
			t.Errorf("LOW test without a trace: %+v", c)
		}
	}
	for _, m := range g.Summary {
		if m.Role == RoleLow && (m.Trace == "" || m.N != 10) {
			t.Errorf("LOW summary pooled: %+v", m)
		}
	}
}

func TestHolmOverPrimaryFamily(t *testing.T) {
	obs := synthetic(12, 5, map[string]float64{ArmBPF: -0.8, ArmHighOnly: -0.3, ArmStatic: 0}, map[string]int{ArmNoLimit: 3})
	g := mustAnalyze(t, obs, Options{}).Groups[0]
	var ps, adj []float64
	for _, c := range g.Tests {
		if c.Family == FamilyPrimary {
			ps, adj = append(ps, c.P), append(adj, c.PAdj)
		}
	}
	if len(ps) != 6 { // survival and stall for Static, HighOnly, BPF
		t.Fatalf("primary family has %d tests", len(ps))
	}
	want := stats.Holm(ps)
	for i := range want {
		if adj[i] != want[i] || adj[i] < ps[i] {
			t.Errorf("adjusted %v, want Holm(%v) = %v", adj, ps, want)
		}
	}
	if g.Power.M != 6 || g.Power.HolmAlpha != 0.05/6 {
		t.Errorf("power family size: %+v", g.Power)
	}
	// Controls are not in the family; the baseline family compares with Uncontended.
	for _, c := range g.Tests {
		if c.Family == FamilyPrimary && IsControl(c.Arm) {
			t.Errorf("control in the primary family: %+v", c)
		}
	}
	if c := test(t, g, FamilyBaseline, RoleHigh, "", MStallSome, ArmBPF); c.Reference != ArmUncontended {
		t.Errorf("baseline: %+v", c)
	}
}

// synthetic makes n blocks of Solo, Uncontended, NoLimit and the given arms.
// HIGH stall is lognormal around 5 s, shifted by shift[arm] (log scale);
// kills[arm] HIGH sessions are killed in that arm (the first blocks).
func synthetic(n int, seed uint64, shift map[string]float64, kills map[string]int) []Observation {
	rng := rand.New(rand.NewPCG(seed, 99))
	arms := []string{ArmSolo, ArmUncontended, ArmNoLimit}
	for a := range shift {
		arms = append(arms, a)
	}
	sortArms(arms)
	var obs []Observation
	for b := range n {
		blockEffect := rng.NormFloat64() * 0.3
		for _, a := range arms {
			stall := 5e6 * math.Exp(blockEffect+shift[a]+0.2*rng.NormFloat64())
			low := map[string]float64{"ML": 2e6 * math.Exp(0.2*rng.NormFloat64()), "CLI": 1e6 * math.Exp(0.2*rng.NormFloat64())}
			if a == ArmSolo {
				low = nil
			}
			obs = append(obs, run(b, a, stall, b < kills[a], low)...)
			if a != ArmSolo {
				obs = append(obs, Observation{Block: b, Arm: a, Regime: "swap", Session: "parent", Role: RoleParent,
					Metrics: map[string]float64{MUtilisation: 0.9 + 0.05*rng.Float64()}})
			}
		}
	}
	return obs
}

func TestLargeEffectDetected(t *testing.T) {
	// BPF: stall a fifth of NoLimit's, never killed; NoLimit killed 6/10.
	obs := synthetic(10, 1, map[string]float64{ArmBPF: math.Log(0.2)}, map[string]int{ArmNoLimit: 6})
	r := mustAnalyze(t, obs, Options{})
	g := r.Groups[0]
	surv := test(t, g, FamilyPrimary, RoleHigh, "", "survived", ArmBPF)
	stall := test(t, g, FamilyPrimary, RoleHigh, "", MStallSome, ArmBPF)
	// Fisher 10/10 vs 4/10 survived: p = 0.01083 (R: fisher.test(matrix(c(10,0,4,6),2,byrow=TRUE))).
	if !near(surv.P, 0.01083591, 1e-6) || surv.PAdj > 0.05 || surv.Estimate != 0.6 {
		t.Errorf("survival: %+v", surv)
	}
	if stall.Test != TestSignedRank || stall.PAdj > 0.05 || stall.Hi >= 0 || stall.KilledRef != 6 {
		t.Errorf("stall: %+v", stall)
	}
	n := Narrative(r)
	for _, want := range []string{"survival differs (higher under BPF)", "lower under BPF", "none is dropped"} {
		if !strings.Contains(n, want) {
			t.Errorf("narrative lacks %q:\n%s", want, n)
		}
	}
}

func TestNoEffectNotFlagged(t *testing.T) {
	for seed := range uint64(5) {
		obs := synthetic(10, seed, map[string]float64{ArmBPF: 0, ArmHighOnly: 0}, nil)
		r := mustAnalyze(t, obs, Options{})
		g := r.Groups[0]
		for _, c := range g.Tests {
			if c.Family == FamilyPrimary && c.PAdj <= 0.05 {
				t.Errorf("seed %d: flagged without an effect: %+v", seed, c)
			}
		}
		n := Narrative(r)
		if strings.Contains(n, "lower under") || strings.Contains(n, "higher under") || strings.Contains(n, "survival differs") {
			t.Errorf("seed %d: narrative claims an effect:\n%s", seed, n)
		}
		if !strings.Contains(n, "no difference is detectable at this n") || !strings.Contains(n, "never killed in either arm") {
			t.Errorf("seed %d: narrative does not say what it cannot show:\n%s", seed, n)
		}
	}
}

func TestPowerAndLimits(t *testing.T) {
	obs := synthetic(10, 2, map[string]float64{ArmBPF: 0, ArmHighOnly: 0, ArmStatic: 0, ArmBPFSeed: 0, ArmStaticPriority: 0}, nil)
	r := mustAnalyze(t, obs, Options{})
	p := r.Groups[0].Power
	// n=10, 5 arms × 2 tests: Holm's first threshold is 0.005; the exact
	// signed-rank test's smallest p is 2/1024 = 0.00195, still reachable.
	if p.N != 10 || p.M != 10 || !near(p.HolmAlpha, 0.005, 1e-15) || p.MinPSigned != 2.0/1024 {
		t.Errorf("%+v", p)
	}
	// Planned 0.5 vs 0.1 kills at n=10: 0.2951 (stats.TestFisherPower).
	if !near(p.Fisher, 0.295055047702, 1e-9) || p.FisherHolm > p.Fisher || p.SignedHolm > p.Signed {
		t.Errorf("%+v", p)
	}
	if n := Narrative(r); !strings.Contains(n, "says little about whether the arms differ") {
		t.Errorf("narrative lacks the power caveat:\n%s", n)
	}
	// At n=5 no stall difference can survive Holm's correction.
	r = mustAnalyze(t, synthetic(5, 2, map[string]float64{ArmBPF: -3}, nil), Options{})
	if n := Narrative(r); !strings.Contains(n, "whatever the data") {
		t.Errorf("narrative lacks the n=5 limit:\n%s", n)
	}
}

func TestUnpairedFallsBackToMannWhitney(t *testing.T) {
	obs := synthetic(8, 3, map[string]float64{ArmBPF: -1}, nil)
	// Drop NoLimit's block 0 run: BPF block 0 has no partner.
	obs = slices.DeleteFunc(obs, func(o Observation) bool { return o.Arm == ArmNoLimit && o.Block == 0 })
	g := mustAnalyze(t, obs, Options{}).Groups[0]
	c := test(t, g, FamilyPrimary, RoleHigh, "", MStallSome, ArmBPF)
	if c.Test != TestMannWhitney || c.NArm != 8 || c.NRef != 7 || c.NPairs != 0 {
		t.Errorf("%+v", c)
	}
	if len(g.Notes) == 0 {
		t.Error("no note about the unpaired comparison")
	}
}

func TestCSVDeterministic(t *testing.T) {
	obs := synthetic(6, 4, map[string]float64{ArmBPF: -0.5, ArmHighOnly: 0}, map[string]int{ArmNoLimit: 2})
	for _, o := range synthetic(6, 5, map[string]float64{ArmBPF: 0}, nil) {
		o.Regime = "none"
		obs = append(obs, o)
	}
	a := mustAnalyzeMulti(t, obs)
	shuffled := slices.Clone(obs)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	b := mustAnalyzeMulti(t, shuffled)
	ca, cb := a.CSV(), b.CSV()
	if len(ca) != 5 {
		t.Fatalf("%d files", len(ca))
	}
	for name, data := range ca {
		if !bytes.Equal(data, cb[name]) {
			t.Errorf("%s differs when the input order changes", name)
		}
		rows, err := csv.NewReader(bytes.NewReader(data)).ReadAll()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !slices.Equal(rows[0], Headers[name]) || len(rows) < 2 {
			t.Errorf("%s: header %v, %d rows", name, rows[0], len(rows))
		}
	}
	if Narrative(a) != Narrative(b) {
		t.Error("narrative depends on the input order")
	}
	if !bytes.Contains(ca[FileHeadline], []byte("\nnone,,NoLimit,")) || !bytes.Contains(ca[FileHeadline], []byte("\nswap,,BPF,true,")) {
		t.Errorf("headline.csv:\n%s", ca[FileHeadline])
	}
}

func mustAnalyzeMulti(t *testing.T, obs []Observation) Result {
	t.Helper()
	r, err := Analyze(obs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestBadInput(t *testing.T) {
	good := func() Observation {
		return Observation{Block: 1, Arm: ArmBPF, Regime: "swap", Session: "high", Role: RoleHigh, Metrics: map[string]float64{MStallSome: 1}}
	}
	cases := []struct {
		name string
		edit func([]Observation) []Observation
		want string
	}{
		{"empty arm", func(o []Observation) []Observation { o[0].Arm = ""; return o }, "observation 0: empty arm"},
		{"bad role", func(o []Observation) []Observation { o[0].Role = "HIGH"; return o }, `role "HIGH"`},
		{"low without trace", func(o []Observation) []Observation { o[0].Role = RoleLow; return o }, "LOW row without a trace"},
		{"duplicate session", func(o []Observation) []Observation { return append(o, good()) }, "observations 0 and 1"},
		{"two HIGHs", func(o []Observation) []Observation {
			h := good()
			h.Session = "high2"
			return append(o, h)
		}, "second HIGH"},
		{"infinite metric", func(o []Observation) []Observation { o[0].Metrics[MStallSome] = math.Inf(1); return o }, "mark the session Killed"},
		{"empty regime", func(o []Observation) []Observation { o[0].Regime = ""; return o }, "empty regime"},
	}
	for _, c := range cases {
		_, err := Analyze(c.edit([]Observation{good()}), Options{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want %q", c.name, err, c.want)
		}
	}
	if _, err := Analyze(nil, Options{}); err == nil {
		t.Error("no observations accepted")
	}
}

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

func TestHeadlineMarkdown(t *testing.T) {
	r := mustAnalyze(t, synthetic(10, 1, map[string]float64{ArmBPF: math.Log(0.2)}, map[string]int{ArmNoLimit: 6}), Options{})
	md := HeadlineMarkdown(r.Options, r.Groups[0])
	for _, want := range []string{
		"| arm | HIGH survived [95% CI] | HIGH stall_some_us median | shift vs NoLimit [CI]",
		"| NoLimit | 4/10 [0.17, 0.69] | +inf | – | – | – | CLI: 10/10,",
		"| BPF * | 10/10 [0.72, 1.00] | 1.08 s | -inf [-inf, -5.59 s] | 0.011 (0.011) |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	if lines := strings.Count(md, "\n| "); lines != 4 { // one per arm
		t.Errorf("%d table lines:\n%s", lines, md)
	}
}

func TestEdgeCases(t *testing.T) {
	// Both arms killed in every block: survival cannot separate them, the
	// stall test sees only ties (p = 1), nothing errors.
	var obs []Observation
	for b := range 5 {
		obs = append(obs, run(b, ArmNoLimit, 10, true, map[string]float64{"A": 5})...)
		obs = append(obs, run(b, ArmBPF, 10, true, map[string]float64{"A": 5})...)
	}
	r := mustAnalyze(t, obs, Options{})
	g := r.Groups[0]
	c := test(t, g, FamilyPrimary, RoleHigh, "", MStallSome, ArmBPF)
	if c.P != 1 || c.Estimate != 0 || c.KilledArm != 5 || c.KilledRef != 5 {
		t.Errorf("all killed: %+v", c)
	}
	if n := Narrative(r); !strings.Contains(n, "cannot distinguish") || !strings.Contains(n, "every block tied") || strings.Contains(n, "CI excludes 0") {
		t.Errorf("narrative (want 'every block tied', never 'CI excludes 0' for an interval that does not exist):\n%s", n)
	}
	// A metric only one arm has (BPF delay returns) is summarised, not compared.
	for i := range obs {
		if obs[i].Arm == ArmBPF && obs[i].Role == RoleHigh {
			obs[i].Killed = false
			obs[i].Metrics["bpf_delay_returns"] = 3
		}
	}
	g = mustAnalyze(t, obs, Options{}).Groups[0]
	for _, c := range g.Tests {
		if c.Metric == "bpf_delay_returns" {
			t.Errorf("compared a metric NoLimit never measured: %+v", c)
		}
	}
	if !slices.ContainsFunc(g.Summary, func(m MetricSummary) bool { return m.Metric == "bpf_delay_returns" && m.Arm == ArmBPF && m.N == 5 }) {
		t.Errorf("bpf_delay_returns not summarised: %+v", g.Summary)
	}
	// No reference arm: headline and summary only, with a note.
	obs = slices.DeleteFunc(obs, func(o Observation) bool { return o.Arm == ArmNoLimit })
	r = mustAnalyze(t, obs, Options{})
	if g := r.Groups[0]; len(g.Tests) != 0 || len(g.Notes) == 0 || len(g.Headline) != 1 {
		t.Errorf("without reference: %+v", g)
	}
	if n := Narrative(r); !strings.Contains(n, "was not run") {
		t.Errorf("narrative:\n%s", n)
	}
	_ = r.CSV()
}

// A LOW cost that Holm's correction over the LOW family hides is still
// reported when it is consistent (Cliff's delta ±1), and only then.
func TestLowCostHiddenByHolmIsReported(t *testing.T) {
	o := Options{}.withDefaults()
	for _, tc := range []struct {
		cliff float64
		want  bool
	}{{1, true}, {-1, true}, {0.6, false}} {
		g := Group{LowCost: []LowRow{{Arm: ArmBPF, Trace: "T", CostTest: &Comparison{
			Family: FamilyLowCost, P: 0.002, PAdj: 0.12, Cliff: tc.cliff, Estimate: 1.5e6 * tc.cliff, Lo: 1.2e6, Hi: 1.6e6}}}}
		got := strings.Join(lowSentences(o, g), " ")
		if strings.Contains(got, "every session of one arm lay beyond") != tc.want {
			t.Errorf("Cliff's delta %v: %q", tc.cliff, got)
		}
	}
}

// The baseline family (policy arm against the unlimited control) is read
// out for arms in the primary family only, with its verdict.
func TestBaselineSentences(t *testing.T) {
	o := Options{}.withDefaults()
	g := Group{
		Headline: []ArmRow{{Arm: ArmBPF, InFamily: true}, {Arm: "HighOnly"}},
		Tests: []Comparison{
			{Family: FamilyBaseline, Arm: ArmBPF, Reference: "Uncontended", Test: TestSignedRank, Estimate: 5e5, Lo: 4e5, Hi: 6e5, P: 0.002, PAdj: 0.004},
			{Family: FamilyBaseline, Arm: "HighOnly", Reference: "Uncontended", Test: TestSignedRank, Estimate: 5e5, P: 0.002, PAdj: 0.004},
		},
	}
	got := strings.Join(baselineSentences(o, g), " ")
	if !strings.Contains(got, "Against Uncontended") || !strings.Contains(got, "still costs HIGH under BPF") || strings.Contains(got, "HighOnly") {
		t.Errorf("%q", got)
	}
	g.Tests[0].PAdj = 0.3
	if got := strings.Join(baselineSentences(o, g), " "); !strings.Contains(got, "no cost of the shared limit is detectable") {
		t.Errorf("%q", got)
	}
}
