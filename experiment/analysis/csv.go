package analysis

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
)

// File names of the tidy tables, and their header lines (fixed column
// order; `check` can validate against them).
const (
	FileHeadline = "headline.csv"
	FileTests    = "tests.csv"
	FileLowCost  = "low_cost.csv"
	FileMetrics  = "metrics.csv"
	FilePower    = "power.csv"
)

// Headers maps each file to its column names.
var Headers = map[string][]string{
	FileHeadline: {"regime", "point", "arm", "in_family", "n", "survived", "survival", "survival_lo", "survival_hi",
		"survival_diff", "survival_diff_lo", "survival_diff_hi", "fisher_p", "fisher_p_holm",
		"stall_metric", "stall_n", "stall_median", "stall_shift", "stall_shift_lo", "stall_shift_hi", "stall_test", "stall_p", "stall_p_holm"},
	FileTests: {"regime", "point", "family", "role", "trace", "metric", "arm", "reference", "test", "method",
		"n_pairs", "n_arm", "n_ref", "killed_arm", "killed_ref", "killed_as", "estimate", "ci_lo", "ci_hi", "ci_level", "cliff_delta", "p", "p_holm"},
	FileLowCost: {"regime", "point", "trace", "arm", "n", "survived", "survival", "survival_lo", "survival_hi",
		"cost_metric", "cost_n", "cost_median", "cost_shift", "cost_shift_lo", "cost_shift_hi", "cost_test", "cost_p", "cost_p_holm"},
	FileMetrics: {"regime", "point", "arm", "role", "trace", "metric", "n", "killed", "median", "min", "max"},
	FilePower: {"regime", "point", "n", "m", "alpha", "holm_alpha", "planned_kill_ref", "planned_kill_arm", "fisher_power", "fisher_power_holm",
		"planned_stall_effect", "signed_rank_power", "signed_rank_power_holm", "min_p_signed_rank", "min_p_fisher", "power_sims", "seed"},
}

// num formats a float the same way on every run: 6 significant digits,
// empty for NaN (pandas reads it as missing), "inf"/"-inf" for killed
// sessions' worst values.
func num(v float64) string {
	switch {
	case math.IsNaN(v):
		return ""
	case math.IsInf(v, 1):
		return "inf"
	case math.IsInf(v, -1):
		return "-inf"
	}
	return strconv.FormatFloat(v, 'g', 6, 64)
}

func itoa(i int) string { return strconv.Itoa(i) }

// CSV renders every table; the same Result always gives the same bytes.
func (r Result) CSV() map[string][]byte {
	return map[string][]byte{
		FileHeadline: r.table(FileHeadline, r.headlineRows),
		FileTests:    r.table(FileTests, r.testRows),
		FileLowCost:  r.table(FileLowCost, r.lowRows),
		FileMetrics:  r.table(FileMetrics, r.metricRows),
		FilePower:    r.table(FilePower, r.powerRows),
	}
}

// WriteCSV writes every table into dir.
func (r Result) WriteCSV(dir string) error {
	for name, b := range r.CSV() {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return fmt.Errorf("analysis: write %s: %w", p, err)
		}
	}
	return nil
}

func (r Result) table(name string, rows func(Group) [][]string) []byte {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	_ = w.Write(Headers[name]) // a bytes.Buffer does not fail
	for _, g := range r.Groups {
		_ = w.WriteAll(rows(g))
	}
	w.Flush()
	return buf.Bytes()
}

func (r Result) headlineRows(g Group) [][]string {
	var out [][]string
	for _, h := range g.Headline {
		s := h.Survived
		row := []string{g.Regime, g.Point, h.Arm, strconv.FormatBool(h.InFamily), itoa(s.N), itoa(s.K), num(s.P), num(s.Lo), num(s.Hi)}
		if c := h.Survival; c != nil {
			row = append(row, num(c.Estimate), num(c.Lo), num(c.Hi), num(c.P), num(c.PAdj))
		} else {
			row = append(row, "", "", "", "", "")
		}
		row = append(row, r.Options.Primary, itoa(h.NStall), num(h.Stall))
		if c := h.StallTest; c != nil {
			row = append(row, num(c.Estimate), num(c.Lo), num(c.Hi), c.Test, num(c.P), num(c.PAdj))
		} else {
			row = append(row, "", "", "", "", "", "")
		}
		out = append(out, row)
	}
	return out
}

func (r Result) testRows(g Group) [][]string {
	var out [][]string
	for _, c := range g.Tests {
		out = append(out, []string{g.Regime, g.Point, c.Family, c.Role, c.Trace, c.Metric, c.Arm, c.Reference, c.Test, c.Method,
			itoa(c.NPairs), itoa(c.NArm), itoa(c.NRef), itoa(c.KilledArm), itoa(c.KilledRef), c.WorstAs,
			num(c.Estimate), num(c.Lo), num(c.Hi), num(c.Conf), num(c.Cliff), num(c.P), num(c.PAdj)})
	}
	return out
}

func (r Result) lowRows(g Group) [][]string {
	var out [][]string
	for _, l := range g.LowCost {
		s := l.Survived
		row := []string{g.Regime, g.Point, l.Trace, l.Arm, itoa(s.N), itoa(s.K), num(s.P), num(s.Lo), num(s.Hi),
			r.Options.LowCost, itoa(l.NCost), num(l.Cost)}
		if c := l.CostTest; c != nil {
			row = append(row, num(c.Estimate), num(c.Lo), num(c.Hi), c.Test, num(c.P), num(c.PAdj))
		} else {
			row = append(row, "", "", "", "", "", "")
		}
		out = append(out, row)
	}
	return out
}

func (r Result) metricRows(g Group) [][]string {
	var out [][]string
	for _, m := range g.Summary {
		out = append(out, []string{g.Regime, g.Point, m.Arm, m.Role, m.Trace, m.Metric, itoa(m.N), itoa(m.Killed), num(m.Median), num(m.Min), num(m.Max)})
	}
	return out
}

func (r Result) powerRows(g Group) [][]string {
	p := g.Power
	return [][]string{{g.Regime, g.Point, itoa(p.N), itoa(p.M), num(p.Alpha), num(p.HolmAlpha),
		num(p.Planned.KillRef), num(p.Planned.KillArm), num(p.Fisher), num(p.FisherHolm),
		num(p.Planned.StallEffect), num(p.Signed), num(p.SignedHolm), num(p.MinPSigned), num(p.MinPFisher),
		itoa(r.Options.PowerSims), strconv.FormatUint(r.Options.Seed, 10)}}
}
