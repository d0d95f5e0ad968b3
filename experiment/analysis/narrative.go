package analysis

import (
	"fmt"
	"math"
	"strings"
)

// Narrative is a short paragraph per regime and point, generated from the
// numbers only: what the data show, and what they cannot show. It never
// calls a non-significant difference an equality, and it says when the
// design's n could not have detected the planned effect.
func Narrative(r Result) string {
	var b strings.Builder
	for i, g := range r.Groups {
		if i > 0 {
			b.WriteString("\n\n")
		}
		b.WriteString(groupNarrative(r.Options, g))
	}
	return b.String()
}

func groupNarrative(o Options, g Group) string {
	var s []string
	where := "Regime " + g.Regime
	if g.Point != "" {
		where += ", point " + g.Point
	}
	s = append(s, fmt.Sprintf("%s: %d blocks; every arm is compared with %s, paired by block.", where, g.Blocks, o.Reference))
	if g.Regime == "none" {
		s = append(s, "This is the negative control: nothing is reclaimable, so a policy can act only by slowing LOW or by the choice of OOM victim.")
	}
	var ref *ArmRow
	for i := range g.Headline {
		if g.Headline[i].Arm == o.Reference {
			ref = &g.Headline[i]
		}
	}
	if ref == nil {
		s = append(s, fmt.Sprintf("The reference arm %s was not run, so no arm can be compared.", o.Reference))
		return strings.Join(s, " ")
	}
	s = append(s, fmt.Sprintf("Under %s, HIGH survived %s and its median %s was %s.", o.Reference, kn(ref.Survived.K, ref.Survived.N), o.Primary, MetricValue(ref.Stall, o.Primary)))
	killed := 0
	for _, h := range g.Headline {
		killed += h.Survived.N - h.Survived.K
		if h.InFamily {
			s = append(s, armSentences(o, h, *ref)...)
		}
	}
	s = append(s, baselineSentences(o, g)...)
	if killed > 0 {
		s = append(s, fmt.Sprintf("%d HIGH sessions were killed in this group; none is dropped: they count in survival and take the worst rank in the rank tests.", killed))
	}
	s = append(s, lowSentences(o, g)...)
	s = append(s, powerSentences(o, g.Power)...)
	if n := countUnpaired(g.Tests); n > 0 {
		s = append(s, fmt.Sprintf("%d comparisons could not be paired by block (a block lacked one arm's session or measurement) and used the Mann-Whitney test.", n))
	}
	return strings.Join(s, " ")
}

func armSentences(o Options, h, ref ArmRow) []string {
	var s []string
	if c := h.Survival; c != nil {
		line := fmt.Sprintf("%s: HIGH survived %s [%s, %s] against %s (Fisher p=%s, Holm-adjusted %s)",
			h.Arm, kn(h.Survived.K, h.Survived.N), pct(h.Survived.Lo), pct(h.Survived.Hi), kn(ref.Survived.K, ref.Survived.N), pv(c.P), pv(c.PAdj))
		switch {
		case c.KilledArm == 0 && c.KilledRef == 0:
			line += "; HIGH was never killed in either arm, so survival cannot separate them."
		case c.PAdj <= o.Alpha:
			line += fmt.Sprintf("; survival differs (%s under %s).", betterWorse(c.Estimate > 0), h.Arm)
		default:
			line += "; the data cannot distinguish the two."
		}
		s = append(s, line)
	}
	if c := h.StallTest; c != nil {
		line := fmt.Sprintf("HIGH %s median %s against %s; shift %s [%s, %s] (%s p=%s, Holm-adjusted %s)",
			o.Primary, MetricValue(h.Stall, o.Primary), MetricValue(ref.Stall, o.Primary),
			MetricValue(c.Estimate, o.Primary), MetricValue(c.Lo, o.Primary), MetricValue(c.Hi, o.Primary), c.Test, pv(c.P), pv(c.PAdj))
		ciHasZero := c.Lo <= 0 && c.Hi >= 0
		noCI := math.IsNaN(c.Lo) || math.IsNaN(c.Hi)
		switch {
		case noCI && c.PAdj > o.Alpha:
			// Every block tied (e.g. HIGH killed in both arms: both take
			// the worst rank), so there is no interval to read.
			line += ": every block tied, so no shift can be estimated."
		case c.PAdj <= o.Alpha && c.Estimate < 0:
			line += fmt.Sprintf(": lower under %s.", h.Arm)
		case c.PAdj <= o.Alpha && c.Estimate > 0:
			line += fmt.Sprintf(": higher under %s.", h.Arm)
		case c.PAdj <= o.Alpha:
			line += ": the test rejects, but the estimated shift is 0."
		case !ciHasZero:
			line += ": the CI excludes 0, but the difference does not survive Holm's correction."
		default:
			line += ": no difference is detectable at this n, which is not evidence that there is none."
		}
		s = append(s, line)
	}
	return s
}

func lowSentences(o Options, g Group) []string {
	var s []string
	var costly, cheaper, uncorrected []string
	for _, l := range g.LowCost {
		c := l.CostTest
		if c == nil || c.Family != FamilyLowCost {
			continue
		}
		if c.PAdj > o.Alpha {
			// Not significant after Holm over the LOW cost tests, but every
			// session of one arm beyond every one of the other (Cliff's
			// delta ±1, which chance alone almost never gives at n=10):
			// said as such, so that a consistent cost is not hidden.
			if c.P <= o.Alpha && math.Abs(c.Cliff) == 1 {
				uncorrected = append(uncorrected, fmt.Sprintf("%s %s under %s on trace %s (shift %s [%s, %s], p=%s, Cliff's delta %s; Holm-adjusted p=%s)",
					o.LowCost, higherLower(c.Estimate), l.Arm, l.Trace, MetricValue(c.Estimate, o.LowCost), MetricValue(c.Lo, o.LowCost), MetricValue(c.Hi, o.LowCost),
					pv(c.P), trim(c.Cliff), pv(c.PAdj)))
			}
			continue
		}
		item := fmt.Sprintf("%s on trace %s (shift %s [%s, %s], Holm-adjusted p=%s)", l.Arm, l.Trace,
			MetricValue(c.Estimate, o.LowCost), MetricValue(c.Lo, o.LowCost), MetricValue(c.Hi, o.LowCost), pv(c.PAdj))
		if c.Estimate > 0 {
			costly = append(costly, item)
		} else {
			cheaper = append(cheaper, item)
		}
	}
	if len(g.LowCost) == 0 {
		return nil
	}
	if len(costly) > 0 {
		s = append(s, fmt.Sprintf("LOW paid a higher %s under %s.", o.LowCost, strings.Join(costly, "; ")))
	}
	if len(cheaper) > 0 {
		s = append(s, fmt.Sprintf("LOW's %s was lower under %s.", o.LowCost, strings.Join(cheaper, "; ")))
	}
	if len(costly)+len(cheaper) == 0 {
		s = append(s, fmt.Sprintf("No LOW trace shows a %s difference from %s that survives Holm's correction (each LOW trace is tested on its own).", o.LowCost, o.Reference))
	}
	if len(uncorrected) > 0 {
		s = append(s, fmt.Sprintf("But every session of one arm lay beyond every session of the other (Holm over every LOW trace and arm hides this): %s.", strings.Join(uncorrected, "; ")))
	}
	for _, l := range g.LowCost {
		if k := l.Survived.N - l.Survived.K; k > 0 {
			s = append(s, fmt.Sprintf("LOW trace %s was killed %s under %s.", l.Trace, kn(k, l.Survived.N), l.Arm))
		}
	}
	return s
}

func powerSentences(o Options, p Power) []string {
	if p.N == 0 || p.M == 0 {
		return nil
	}
	s := []string{fmt.Sprintf("With n=%d per arm, the power to detect a HIGH kill rate of %s against %s is %s (Fisher, α=%s; %s at Holm's strictest level %s), and to detect a HIGH stall shift of %s SD of the block differences %s (signed-rank; %s at %s).",
		p.N, pct(p.Planned.KillRef), pct(p.Planned.KillArm), pct(p.Fisher), pv(p.Alpha), pct(p.FisherHolm), pv(p.HolmAlpha),
		trim(p.Planned.StallEffect), pct(p.Signed), pct(p.SignedHolm), pv(p.HolmAlpha))}
	if p.Fisher < 0.8 || p.Signed < 0.8 {
		s = append(s, "Below 80% power, a result that is not significant says little about whether the arms differ.")
	}
	if p.MinPSigned > p.HolmAlpha {
		s = append(s, fmt.Sprintf("At this n the signed-rank test cannot give p below %s, above Holm's first threshold %s: no stall difference can be declared after correction, whatever the data.", pv(p.MinPSigned), pv(p.HolmAlpha)))
	}
	if p.MinPFisher > p.HolmAlpha {
		s = append(s, fmt.Sprintf("Fisher's test cannot give p below %s at this n, above Holm's first threshold %s.", pv(p.MinPFisher), pv(p.HolmAlpha)))
	}
	return s
}

func countUnpaired(ts []Comparison) int {
	n := 0
	for _, t := range ts {
		if t.Test == TestMannWhitney {
			n++
		}
	}
	return n
}

func betterWorse(better bool) string {
	if better {
		return "higher"
	}
	return "lower"
}

func kn(k, n int) string { return fmt.Sprintf("%d/%d", k, n) }

// pv formats a p-value or level: 2 significant digits, "<0.0001" below.
func pv(p float64) string {
	switch {
	case math.IsNaN(p):
		return "n/a"
	case p < 1e-4:
		return "<0.0001"
	}
	return trim(p)
}

func pct(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", v)
}

func trim(v float64) string { return fmt.Sprintf("%.2g", v) }

// MetricValue formats a value of metric for prose: µs metrics in seconds,
// the worst value of a killed session as "killed".
func MetricValue(v float64, metric string) string {
	switch {
	case math.IsNaN(v):
		return "n/a"
	case math.IsInf(v, 1):
		return "+inf (killed)"
	case math.IsInf(v, -1):
		return "-inf (killed)"
	case strings.HasSuffix(metric, "_us"):
		return fmt.Sprintf("%.3g s", v/1e6)
	case strings.HasSuffix(metric, "_s"):
		return fmt.Sprintf("%.3g s", v)
	}
	return fmt.Sprintf("%.3g", v)
}

func higherLower(estimate float64) string {
	if estimate > 0 {
		return "higher"
	}
	return "lower"
}

// baselineSentences read the baseline family: each primary arm's HIGH
// Primary against the control with every session but no parent limit, i.e.
// what the shared limit still costs HIGH under that arm (CPU sharing is in
// both, so it cancels).
func baselineSentences(o Options, g Group) []string {
	inFamily := map[string]bool{}
	for _, h := range g.Headline {
		inFamily[h.Arm] = h.InFamily
	}
	var s []string
	for _, c := range g.Tests {
		if c.Family != FamilyBaseline || !inFamily[c.Arm] {
			continue
		}
		line := fmt.Sprintf("Against %s (the same sessions with no parent limit), HIGH's %s under %s differed by %s [%s, %s] (%s p=%s, Holm-adjusted %s)",
			c.Reference, o.Primary, c.Arm, MetricValue(c.Estimate, o.Primary), MetricValue(c.Lo, o.Primary), MetricValue(c.Hi, o.Primary), c.Test, pv(c.P), pv(c.PAdj))
		if c.PAdj <= o.Alpha && c.Estimate != 0 {
			line += fmt.Sprintf(": the shared limit still costs HIGH under %s.", c.Arm)
		} else {
			line += ": no cost of the shared limit is detectable at this n."
		}
		s = append(s, line)
	}
	return s
}
