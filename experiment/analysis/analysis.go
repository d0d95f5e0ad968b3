// Package analysis turns the sessions of an experiment into its statistical
// results: per regime and sweep point, the headline table (HIGH survival and
// HIGH stall per arm against a reference arm, with Holm-adjusted p-values),
// the secondary comparisons, LOW's cost per LOW trace, the power the design
// has, deterministic CSVs and a narrative paragraph. The tests themselves are
// in experiment/stats; README.md says which test is used where and why.
//
// Killed sessions are never dropped: they count in survival, and in every
// rank test they take the worst value of the metric (+Inf when lower is
// better), so they tie with each other above every measured value.
package analysis

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/agentcg/agentcg/experiment/stats"
)

// Arm names.
const (
	ArmSolo           = "Solo"
	ArmUncontended    = "Uncontended"
	ArmStatic         = "Static"
	ArmStaticPriority = "StaticPriority"
	ArmNoLimit        = "NoLimit"
	ArmHighOnly       = "HighOnly"
	ArmBPF            = "BPF"
	ArmBPFSeed        = "BPFSeed"
)

// armOrder is the order of arms in every table; unknown arms follow, sorted.
var armOrder = []string{ArmSolo, ArmUncontended, ArmStatic, ArmStaticPriority, ArmNoLimit, ArmHighOnly, ArmBPF, ArmBPFSeed}

// IsControl reports whether arm is a control (Solo, Uncontended) rather
// than a policy arm; controls are never in the primary family.
func IsControl(arm string) bool { return arm == ArmSolo || arm == ArmUncontended }

// Roles. RoleParent rows carry per-run metrics of the parent cgroup
// (time-weighted utilisation, parent memory.events); Session is "parent".
const (
	RoleHigh   = "high"
	RoleLow    = "low"
	RoleParent = "parent"
)

// Metric names the analysis knows. Any other metric in Observation.Metrics
// is compared too, as lower-is-better unless listed in
// Options.HigherIsBetter.
const (
	MStallSome   = "stall_some_us"  // delta of memory.pressure "some" total, µs
	MStallFull   = "stall_full_us"  // delta of memory.pressure "full" total, µs
	MMaxStepLag  = "max_step_lag_s" // spike lateness
	MRefaults    = "refaults"       // workingset_refault_anon + _file
	MWorkDone    = "work_done_bytes"
	MUtilisation = "utilisation" // parent, time-weighted (stats.TimeWeightedMean)
)

// Observation is one session of one run.
type Observation struct {
	Block   int    // repetition index; arms of one block are paired
	Arm     string // "Solo", "Uncontended", "Static", "StaticPriority", "NoLimit", "HighOnly", "BPF", "BPFSeed"
	Regime  string // "none", "swap", "file"
	Point   string // sweep point label, "" when no sweep
	Session string // session name, the same in every arm of a block (LOW pairs by it); "parent" for RoleParent rows
	Role    string // "high", "low" or "parent"
	Trace   string // trace name; LOW rows are never pooled across traces
	Killed  bool   // OOM-killed (or otherwise did not complete)
	// Metrics: absent or NaN = not measured. A killed session should still
	// carry what it measured up to the kill: the values are ignored (it
	// takes the worst rank) but their presence says the metric exists in
	// that arm.
	Metrics map[string]float64 // e.g. "stall_some_us", "stall_full_us", "max_step_lag_s", "refaults", ...
}

// Planned is the effect the design was planned to detect; the power the
// design's n gives for it is reported.
type Planned struct {
	KillRef float64 // HIGH kill probability in the reference arm (default 0.5)
	KillArm float64 // HIGH kill probability in a protecting arm (default 0.1)
	// StallEffect is the HIGH stall shift in standard deviations of the
	// block differences (default 1.0).
	StallEffect float64
}

// Options controls Analyze. The zero value means the defaults below.
type Options struct {
	Reference   string   // arm everything is compared with; default NoLimit
	Baseline    string   // control each arm's HIGH stall is also compared with ("memory effect"); default Uncontended; "-" for none
	Primary     string   // continuous primary outcome of HIGH; default stall_some_us
	PrimaryArms []string // arms whose two tests (survival, Primary) form the Holm family; default every non-control arm but Reference
	LowCost     string   // LOW metric shown in the headline's LOW cost; default stall_some_us
	// HigherIsBetter lists metrics where a larger value is better (killed =
	// -Inf). Default: work_done_bytes.
	HigherIsBetter []string
	Conf           float64 // CI level; default 0.95
	Alpha          float64 // significance level; default 0.05
	Planned        Planned
	PowerSims      int    // simulations for the signed-rank power; default 4000
	Seed           uint64 // seed of that simulation; default 1
}

func (o Options) withDefaults() Options {
	o.Reference = cmp.Or(o.Reference, ArmNoLimit)
	o.Baseline = cmp.Or(o.Baseline, ArmUncontended)
	o.Primary = cmp.Or(o.Primary, MStallSome)
	o.LowCost = cmp.Or(o.LowCost, MStallSome)
	if o.HigherIsBetter == nil {
		o.HigherIsBetter = []string{MWorkDone}
	}
	o.Conf = cmp.Or(o.Conf, 0.95)
	o.Alpha = cmp.Or(o.Alpha, 0.05)
	o.Planned.KillRef = cmp.Or(o.Planned.KillRef, 0.5)
	o.Planned.KillArm = cmp.Or(o.Planned.KillArm, 0.1)
	o.Planned.StallEffect = cmp.Or(o.Planned.StallEffect, 1.0)
	o.PowerSims = cmp.Or(o.PowerSims, 4000)
	o.Seed = cmp.Or(o.Seed, 1)
	return o
}

// alwaysMeasured lists the metrics every session has, so that an arm
// whose sessions were all killed (and may carry no metrics at all) still
// takes the worst rank on them.
func (o Options) alwaysMeasured(metric string) bool {
	return metric == o.Primary || metric == o.LowCost || metric == MStallSome || metric == MStallFull || metric == MMaxStepLag
}

func (o Options) direction(metric string) stats.Direction {
	if slices.Contains(o.HigherIsBetter, metric) {
		return stats.HigherIsBetter
	}
	return stats.LowerIsBetter
}

// Result is the analysis of one experiment.
type Result struct {
	Options Options // with defaults filled in
	Groups  []Group // one per (Regime, Point), sorted
}

// Group is the analysis of one regime and sweep point.
type Group struct {
	Regime, Point string
	Blocks        int      // distinct blocks
	Arms          []string // arms present, in table order
	Headline      []ArmRow // one per arm
	// Tests holds every comparison against the reference (and the
	// baseline), in a fixed order: primary first, then secondary, LOW, baseline.
	Tests   []Comparison
	LowCost []LowRow        // one per arm × LOW trace
	Summary []MetricSummary // per arm × role × trace × metric
	Power   Power
	Notes   []string // unpaired comparisons, missing arms, etc.
}

// Families of comparisons. Holm's adjustment runs within one family of one
// group.
const (
	FamilyPrimary   = "primary"   // HIGH survival and HIGH Primary, PrimaryArms vs Reference
	FamilySecondary = "secondary" // other HIGH and parent metrics, and non-primary arms
	FamilyLowCost   = "low_cost"  // LOW's cost metric (Options.LowCost) per trace, each arm vs Reference
	FamilyLow       = "low"       // every other LOW metric per trace
	FamilyBaseline  = "baseline"  // HIGH Primary vs Baseline (the memory effect)
)

// Test names.
const (
	TestFisher      = "fisher"
	TestSignedRank  = "signed-rank"
	TestMannWhitney = "mann-whitney"
)

// Comparison is one test of Arm against Reference on one metric.
type Comparison struct {
	Family    string
	Role      string // high, low or parent
	Trace     string // LOW trace; "" otherwise
	Metric    string // "killed" for survival
	Arm       string
	Reference string
	Test      string // fisher, signed-rank (paired by block) or mann-whitney
	Method    string // exact or the approximation used
	NPairs    int    // pairs (signed-rank)
	NArm      int    // sessions of Arm in the test
	NRef      int
	KilledArm int // killed sessions among them (they are in the test, at the worst rank)
	KilledRef int
	WorstAs   string // value killed sessions took: "+inf", "-inf", or "" for survival
	// Estimate is Arm − Reference: the Hodges-Lehmann shift for rank tests
	// (pseudo-median of the block differences when paired), the difference
	// in kill proportion for Fisher. Lo, Hi is its CI at level Conf
	// (achieved level for exact rank CIs; Newcombe's hybrid score for Fisher).
	Estimate, Lo, Hi, Conf float64
	Cliff                  float64 // Cliff's delta of Arm against Reference sessions (rank tests)
	P                      float64 // two-sided
	PAdj                   float64 // Holm within Family in this group
}

// ArmRow is one line of the headline table.
type ArmRow struct {
	Arm       string
	Survived  stats.Proportion // HIGH survived k/n with Wilson CI
	Stall     float64          // median HIGH Primary, killed = +Inf (so +Inf once half are killed)
	NStall    int              // sessions in that median (killed included)
	Survival  *Comparison      // Fisher vs Reference (nil for the reference and controls without HIGH)
	StallTest *Comparison      // rank test vs Reference
	InFamily  bool             // in the primary Holm family
}

// LowRow is LOW's cost for one arm and one LOW trace.
type LowRow struct {
	Arm, Trace string
	Survived   stats.Proportion
	Cost       float64     // median of Options.LowCost, killed at the worst value
	NCost      int         // sessions in that median
	CostTest   *Comparison // vs Reference (nil for the reference)
}

// MetricSummary describes one metric of one arm, role and trace.
type MetricSummary struct {
	Arm, Role, Trace, Metric string
	N                        int     // sessions with the metric measured or killed
	Killed                   int     // of which killed (at the worst value)
	Median                   float64 // killed at the worst value
	Min, Max                 float64 // over sessions that were not killed (NaN when all were)
}

// Power is what the design's n can detect, per group.
type Power struct {
	N          int     // HIGH sessions per arm (smallest over the primary family)
	M          int     // tests in the primary family
	Alpha      float64 // unadjusted level
	HolmAlpha  float64 // Holm's first (strictest) threshold, Alpha/M
	Fisher     float64 // power of Fisher at Alpha, Planned.KillRef vs KillArm, n vs n
	FisherHolm float64 // the same at HolmAlpha
	Signed     float64 // power of the signed-rank test at Alpha for Planned.StallEffect
	SignedHolm float64
	MinPSigned float64 // smallest two-sided p the exact signed-rank test can give at N: 2/2^N
	MinPFisher float64 // smallest two-sided Fisher p at n vs n: 0/n vs n/n
	Planned    Planned
}

// Analyze validates obs and computes the Result. Bad input is an error that
// names the observation index.
func Analyze(obs []Observation, opts Options) (Result, error) {
	opts = opts.withDefaults()
	res := Result{Options: opts}
	if len(obs) == 0 {
		return res, errors.New("analysis: no observations")
	}
	if err := validate(obs); err != nil {
		return res, err
	}
	type key struct{ regime, point string }
	byGroup := map[key][]Observation{}
	for _, o := range obs {
		k := key{o.Regime, o.Point}
		byGroup[k] = append(byGroup[k], o)
	}
	keys := make([]key, 0, len(byGroup))
	for k := range byGroup {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b key) int { return cmp.Or(cmp.Compare(a.regime, b.regime), cmp.Compare(a.point, b.point)) })
	for _, k := range keys {
		g, err := analyzeGroup(k.regime, k.point, byGroup[k], opts)
		if err != nil {
			return res, fmt.Errorf("analysis: regime %q point %q: %w", k.regime, k.point, err)
		}
		res.Groups = append(res.Groups, g)
	}
	return res, nil
}

func validate(obs []Observation) error {
	type runKey struct {
		regime, point, arm string
		block              int
	}
	type sessKey struct {
		runKey
		session string
	}
	highs := map[runKey]int{}
	seen := map[sessKey]int{}
	for i, o := range obs {
		switch {
		case o.Arm == "":
			return fmt.Errorf("analysis: observation %d: empty arm", i)
		case o.Regime == "":
			return fmt.Errorf("analysis: observation %d (%s block %d): empty regime", i, o.Arm, o.Block)
		case o.Session == "":
			return fmt.Errorf("analysis: observation %d (%s block %d): empty session", i, o.Arm, o.Block)
		case o.Role != RoleHigh && o.Role != RoleLow && o.Role != RoleParent:
			return fmt.Errorf("analysis: observation %d (%s block %d session %s): role %q is not high, low or parent", i, o.Arm, o.Block, o.Session, o.Role)
		case o.Role == RoleLow && o.Trace == "":
			return fmt.Errorf("analysis: observation %d (%s block %d session %s): LOW row without a trace", i, o.Arm, o.Block, o.Session)
		}
		for m, v := range o.Metrics {
			if m == "" {
				return fmt.Errorf("analysis: observation %d (%s block %d session %s): empty metric name", i, o.Arm, o.Block, o.Session)
			}
			if math.IsInf(v, 0) {
				return fmt.Errorf("analysis: observation %d (%s block %d session %s): metric %s is infinite; mark the session Killed instead", i, o.Arm, o.Block, o.Session, m)
			}
		}
		rk := runKey{o.Regime, o.Point, o.Arm, o.Block}
		sk := sessKey{rk, o.Session}
		if j, dup := seen[sk]; dup {
			return fmt.Errorf("analysis: observations %d and %d are both session %s of %s block %d (regime %q point %q)", j, i, o.Session, o.Arm, o.Block, o.Regime, o.Point)
		}
		seen[sk] = i
		if o.Role == RoleHigh {
			highs[rk]++
			if highs[rk] > 1 {
				return fmt.Errorf("analysis: observation %d: a second HIGH session in %s block %d (regime %q point %q)", i, o.Arm, o.Block, o.Regime, o.Point)
			}
		}
	}
	return nil
}

// sortArms orders arms as armOrder, then unknown arms alphabetically.
func sortArms(arms []string) {
	rank := func(a string) int {
		if i := slices.Index(armOrder, a); i >= 0 {
			return i
		}
		return len(armOrder)
	}
	slices.SortFunc(arms, func(a, b string) int { return cmp.Or(cmp.Compare(rank(a), rank(b)), cmp.Compare(a, b)) })
}
