package report

import (
	"fmt"
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
	groups := map[string][2]*analysis.Group{}
	var order []string
	for i, d := range []*Data{da, db} {
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
		w("| arm | A: HIGH survived | A: HIGH stall median | A: shift vs %s [CI] | B: HIGH survived | B: HIGH stall median | B: shift [CI] |\n|---|---|---|---|---|---|---|\n", da.Options.Reference)
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
			for _, g := range v {
				surv, st, sh := "–", "–", "–"
				if g != nil {
					for _, h := range g.Headline {
						if h.Arm != arm {
							continue
						}
						surv = fmt.Sprintf("%d/%d [%.2f, %.2f]", h.Survived.K, h.Survived.N, h.Survived.Lo, h.Survived.Hi)
						st = stallCell(h.Stall)
						if c := h.StallTest; c != nil {
							sh = fmt.Sprintf("%s [%s, %s]", stallCell(c.Estimate), stallCell(c.Lo), stallCell(c.Hi))
						}
					}
				}
				cells = append(cells, surv, st, sh)
			}
			w("| %s |\n", strings.Join(cells, " | "))
		}
		w("\n")
	}
	return s.String(), nil
}
