package report

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/agentcg/agentcg/experiment/analysis"
)

// Compare sets two result folders side by side: where and how each ran,
// and their headline rows per regime and arm.
func Compare(a, b string) (string, error) {
	da, err := Load(a)
	if err != nil {
		return "", err
	}
	db, err := Load(b)
	if err != nil {
		return "", err
	}
	var s strings.Builder
	w := func(f string, x ...any) { fmt.Fprintf(&s, f, x...) }
	w("# %s against %s\n\n", a, b)
	w("| | A | B |\n|---|---|---|\n")
	row := func(k string, f func(*Data) string) { w("| %s | %s | %s |\n", k, f(da), f(db)) }
	row("where", func(d *Data) string { return fmt.Sprintf("%s (%s), %d CPUs", d.Env.Where, d.Env.Accel, d.Env.CPUs) })
	row("kernel", func(d *Data) string { return d.Env.KernelRelease })
	row("git commit", func(d *Data) string { return d.Env.GitCommit })
	row("load at the start", func(d *Data) string { return or(d.Env.HostLoadAvg, d.Env.LoadAvg) })
	row("regime", func(d *Data) string { return strings.TrimPrefix(d.regimeLine(), "**Regime:** ") })
	w("\n")
	ds := [2]*Data{da, db}
	if da.Options.Primary != db.Options.Primary || da.Options.LowCost != db.Options.LowCost {
		w("**A and B measure different metrics:** HIGH %s and LOW %s against HIGH %s and LOW %s.\n\n",
			da.Options.Primary, da.Options.LowCost, db.Options.Primary, db.Options.LowCost)
	}
	groups := map[string][2]*analysis.Group{}
	var order []string
	for i, d := range ds {
		if d.Result == nil {
			continue
		}
		for j := range d.Result.Groups {
			g := &d.Result.Groups[j]
			k := groupName(*g)
			if !slices.Contains(order, k) {
				order = append(order, k)
			}
			v := groups[k]
			v[i] = g
			groups[k] = v
		}
	}
	for _, k := range order {
		v := groups[k]
		w("## Regime %s\n\n", k)
		w("| arm | A: HIGH survived | A: HIGH stall median | A: shift vs %s [CI] | B: HIGH survived | B: HIGH stall median | B: shift vs %s [CI] |\n|---|---|---|---|---|---|---|\n", da.Options.Reference, db.Options.Reference)
		var arms []string
		for _, g := range v {
			if g != nil {
				for _, h := range g.Headline {
					if !slices.Contains(arms, h.Arm) {
						arms = append(arms, h.Arm)
					}
				}
			}
		}
		for _, arm := range arms {
			cells := []string{arm}
			for i, g := range v {
				surv, st, sh := "–", "–", "–"
				if g != nil {
					for _, h := range g.Headline {
						if h.Arm != arm {
							continue
						}
						surv = fmt.Sprintf("%d/%d [%.2f, %.2f]", h.Survived.K, h.Survived.N, h.Survived.Lo, h.Survived.Hi)
						st = stallCell(h.Stall)
						if c := h.StallTest; c != nil {
							sh = shiftCell(c, ds[i].Options.Primary)
						}
					}
				}
				cells = append(cells, surv, st, sh)
			}
			w("| %s |\n", strings.Join(cells, " | "))
		}
		w("\n")
		lowCostTable(w, [2]string{da.Options.LowCost, db.Options.LowCost}, v)
	}
	return s.String(), nil
}

// shiftCell is a comparison's shift, its CI and its Holm-adjusted p.
func shiftCell(c *analysis.Comparison, metric string) string {
	v := func(x float64) string {
		if math.IsInf(x, 0) {
			return stallCell(x) // says which arm had the kills
		}
		return analysis.MetricValue(x, metric)
	}
	p := "n/a"
	if !math.IsNaN(c.PAdj) {
		p = fmt.Sprintf("%.2g", c.PAdj)
	}
	return fmt.Sprintf("%s [%s, %s], Holm p %s", v(c.Estimate), v(c.Lo), v(c.Hi), p)
}

// lowCostTable sets what each LOW trace paid (its cost metric, against the
// reference arm) in the two folders side by side.
func lowCostTable(w func(string, ...any), metrics [2]string, v [2]*analysis.Group) {
	type key struct{ arm, trace string }
	var keys []key
	rows := map[key][2]*analysis.LowRow{}
	for i, g := range v {
		if g == nil {
			continue
		}
		for j := range g.LowCost {
			r := &g.LowCost[j]
			k := key{r.Arm, r.Trace}
			if _, ok := rows[k]; !ok {
				keys = append(keys, k)
			}
			x := rows[k]
			x[i] = r
			rows[k] = x
		}
	}
	if len(keys) == 0 {
		return
	}
	w("LOW's cost (%s):\n\n", metrics[0])
	w("| arm | LOW trace | A: median | A: shift [CI] | B: median | B: shift [CI] |\n|---|---|---|---|---|---|\n")
	for _, k := range keys {
		cells := []string{k.arm, k.trace}
		for i, r := range rows[k] {
			med, sh := "–", "–"
			if r != nil {
				med = analysis.MetricValue(r.Cost, metrics[i])
				if r.CostTest != nil {
					sh = shiftCell(r.CostTest, metrics[i])
				}
			}
			cells = append(cells, med, sh)
		}
		w("| %s |\n", strings.Join(cells, " | "))
	}
	w("\n")
}
