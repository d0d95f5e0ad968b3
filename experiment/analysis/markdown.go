package analysis

import (
	"fmt"
	"strings"
)

// HeadlineMarkdown renders one group's headline table for report.md: arm,
// HIGH survived k/n [Wilson CI], HIGH stall median, its shift against the
// reference [CI], the Holm-adjusted p-values of the survival and stall
// tests, and LOW's cost per LOW trace (survived k/n, median cost metric
// and its shift). Values of killed sessions show as "inf"; "–" means no
// test (the reference itself, or nothing to compare).
func HeadlineMarkdown(o Options, g Group) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| arm | HIGH survived [%s CI] | HIGH %s median | shift vs %s [CI] | p survival (Holm) | p stall (Holm) | LOW cost: survived, %s median (shift) |\n",
		pctLevel(o.Conf), o.Primary, o.Reference, o.LowCost)
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, h := range g.Headline {
		arm := h.Arm
		if h.InFamily {
			arm += " *"
		}
		surv := "–"
		if h.Survived.N > 0 {
			surv = fmt.Sprintf("%s [%s, %s]", kn(h.Survived.K, h.Survived.N), pct(h.Survived.Lo), pct(h.Survived.Hi))
		}
		shift, ps, pst := "–", "–", "–"
		if c := h.StallTest; c != nil {
			shift = fmt.Sprintf("%s [%s, %s]", cell(c.Estimate, o.Primary), cell(c.Lo, o.Primary), cell(c.Hi, o.Primary))
			pst = fmt.Sprintf("%s (%s)", pv(c.P), pv(c.PAdj))
		}
		if c := h.Survival; c != nil {
			ps = fmt.Sprintf("%s (%s)", pv(c.P), pv(c.PAdj))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", arm, surv, cell(h.Stall, o.Primary), shift, ps, pst, lowCell(o, g, h.Arm))
	}
	b.WriteString("\n\\* in the primary family (Holm over its survival and stall tests). Killed sessions count in survival and take the worst rank (+inf) in the stall tests.\n")
	return b.String()
}

func lowCell(o Options, g Group, arm string) string {
	var parts []string
	for _, l := range g.LowCost {
		if l.Arm != arm {
			continue
		}
		s := fmt.Sprintf("%s: %s, %s", l.Trace, kn(l.Survived.K, l.Survived.N), cell(l.Cost, o.LowCost))
		if c := l.CostTest; c != nil {
			s += fmt.Sprintf(" (%s, Holm p=%s)", signed(c.Estimate, o.LowCost), pv(c.PAdj))
		}
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		return "–"
	}
	return strings.Join(parts, "; ")
}

// cell is metricValue without the "(killed)" note, for table cells.
func cell(v float64, metric string) string {
	return strings.TrimSuffix(MetricValue(v, metric), " (killed)")
}

func signed(v float64, metric string) string {
	s := cell(v, metric)
	if v > 0 && !strings.HasPrefix(s, "+") {
		s = "+" + s
	}
	return s
}

func pctLevel(conf float64) string { return fmt.Sprintf("%g%%", conf*100) }
