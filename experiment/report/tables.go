// Package report owns everything derived from raw results: summary.csv,
// stats.csv, the merged timeseries.csv, the figures and report.md. It reads
// only what package results loads, so `agentcg experiment report DIR`
// reproduces the tables byte for byte.
package report

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/agentcg/agentcg/experiment/results"
	"github.com/agentcg/agentcg/experiment/stats"
)

// Metric names as they appear in summary.csv.
const (
	MCompletion     = "completion_s"
	MNormCompletion = "norm_completion" // HIGH: / mean solo completion; LOW: / ideal_s
	MLag            = "lag_s"
	MSlowdown       = "slowdown"
	MComplete       = "complete"
	MAllocP99       = "alloc_latency_p99_ms"
	MPeak           = "memory_peak_bytes"
	MOOMKills       = "oom_kills"
	MEventsHigh     = "events_high"
	MEventsMax      = "events_max"
	MDelayNonZero   = "bpf_delay_nonzero"
	MDelayTotal     = "bpf_delay_total_ms"
	MBelowLow       = "bpf_below_low_true"
	MUtilisation    = "utilisation"
	MParentPeak     = "parent_peak_bytes"
)

var sessionMetrics = []string{MCompletion, MNormCompletion, MLag, MSlowdown, MComplete, MAllocP99, MPeak, MOOMKills, MEventsHigh, MEventsMax, MDelayNonZero, MDelayTotal, MBelowLow}

// RoleParent labels per-run (not per-session) metrics.
const RoleParent = "parent"

// Row is one line of summary.csv.
type Row struct {
	Label, Role, Metric string
	stats.Summary
}

// Data is the analysed experiment.
type Data struct {
	Runs     []results.RunData
	Included []results.RunData // not excluded, in order
	Excluded []results.RunData
	SoloT    float64 // mean completion of HIGH in solo runs (NaN without)
	Labels   []string
	Traces   map[string]results.TraceInfo // from toolcalls/<trace>.json
	Failed   []results.Failed
}

// Analyse splits runs into included and excluded and computes solo T.
func Analyse(runs []results.RunData) *Data {
	d := &Data{Runs: runs, SoloT: math.NaN()}
	var solo []float64
	for _, r := range runs {
		if r.Run.Excluded {
			d.Excluded = append(d.Excluded, r)
			continue
		}
		d.Included = append(d.Included, r)
		if !slices.Contains(d.Labels, r.Run.Label) {
			d.Labels = append(d.Labels, r.Run.Label)
		}
		if r.Run.Arm == results.ArmSolo {
			for _, s := range r.ByRole(results.RoleHigh) {
				if s.Replay != nil && s.Replay.Complete {
					solo = append(solo, s.Replay.CompletionS)
				}
			}
		}
	}
	if len(solo) > 0 {
		d.SoloT = stats.Summarize(solo).Mean
	}
	slices.SortStableFunc(d.Labels, func(a, b string) int { return strings.Compare(labelKey(a), labelKey(b)) })
	return d
}

// labelKey orders the solo baseline first, then arms in the design's order.
func labelKey(l string) string {
	for i, a := range []string{results.ArmSolo, "Static", "NoLimit", "HighOnly", "BPF"} {
		if l == a || strings.HasPrefix(l, a+" ") {
			return fmt.Sprintf("%d%s", i, l)
		}
	}
	return "9" + l
}

// SessionValue returns metric m for s, NaN when it was not measured
// (a killed session has no completion time).
func (d *Data) SessionValue(s *results.Session, m string) float64 {
	nan := math.NaN()
	rp := s.Replay
	done := rp != nil && rp.Complete
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	switch m {
	case MCompletion:
		if done {
			return rp.CompletionS
		}
	case MNormCompletion:
		if !done {
			return nan
		}
		if s.Role == results.RoleHigh {
			return rp.CompletionS / d.SoloT
		}
		if rp.IdealS > 0 {
			return rp.CompletionS / rp.IdealS
		}
	case MLag:
		if done {
			return rp.LagS
		}
	case MSlowdown:
		if done {
			return rp.Slowdown
		}
	case MComplete:
		return b(done)
	case MAllocP99:
		if rp != nil {
			return rp.AllocLatency.P99
		}
	case MPeak:
		return float64(s.PeakBytes)
	case MOOMKills:
		k := float64(s.Events["oom_kill"])
		if k == 0 && s.OOMKilled {
			k = 1 // the runtime saw it although the counter did not move
		}
		return k
	case MEventsHigh:
		return float64(s.Events["high"])
	case MEventsMax:
		return float64(s.Events["max"])
	case MDelayNonZero:
		if s.Counters != nil {
			return float64(s.Counters.DelayNonZero)
		}
	case MDelayTotal:
		if s.Counters != nil {
			return float64(s.Counters.DelayTotalMs)
		}
	case MBelowLow:
		if s.Counters != nil {
			return float64(s.Counters.BelowLowTrue)
		}
	}
	return nan
}

// Values collects metric m over the included runs of label for role.
func (d *Data) Values(label, role, m string) []float64 {
	var out []float64
	for _, r := range d.Included {
		if r.Run.Label != label {
			continue
		}
		if role == RoleParent {
			switch m {
			case MUtilisation:
				out = append(out, r.Run.Utilisation)
			case MParentPeak:
				out = append(out, float64(r.Run.ParentPeak))
			}
			continue
		}
		for _, s := range r.ByRole(role) {
			out = append(out, d.SessionValue(s, m))
		}
	}
	return out
}

// Summary returns summary.csv's rows in a fixed order.
func (d *Data) Summary() []Row {
	var rows []Row
	for _, l := range d.Labels {
		for _, role := range []string{results.RoleHigh, results.RoleLow} {
			for _, m := range sessionMetrics {
				v := d.Values(l, role, m)
				if len(v) == 0 {
					continue
				}
				rows = append(rows, Row{l, role, m, stats.Summarize(v)})
			}
		}
		for _, m := range []string{MUtilisation, MParentPeak} {
			if v := d.Values(l, RoleParent, m); len(v) > 0 {
				rows = append(rows, Row{l, RoleParent, m, stats.Summarize(v)})
			}
		}
	}
	return rows
}

// num formats deterministically; NaN becomes NA.
func num(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "NA"
	}
	return strconv.FormatFloat(v, 'g', 8, 64)
}

// SummaryCSV renders summary.csv.
func (d *Data) SummaryCSV() string {
	var b strings.Builder
	b.WriteString("arm,role,metric,n,mean,std,ci95_low,ci95_high,p50,max\n")
	for _, r := range d.Summary() {
		fmt.Fprintf(&b, "%s,%s,%s,%d,%s,%s,%s,%s,%s,%s\n", csvField(r.Label), r.Role, r.Metric, r.N,
			num(r.Mean), num(r.Std), num(r.CILow), num(r.CIHigh), num(r.P50), num(r.Max))
	}
	return b.String()
}

func csvField(s string) string {
	if strings.ContainsAny(s, ",\"\n") {
		return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
	}
	return s
}

// Test is one line of stats.csv.
type Test struct {
	Metric, A, B string
	stats.UTest
	Err string
}

// Tests compares HIGH completion and HIGH lag of every BPF label against
// every other non-solo label with the two-sided Mann-Whitney U test.
func (d *Data) Tests(c stats.Comparer) []Test {
	var out []Test
	for _, a := range d.Labels {
		if !isArm(a, "BPF") {
			continue
		}
		for _, b := range d.Labels {
			if b == a || b == results.ArmSolo {
				continue
			}
			for _, m := range []string{MCompletion, MLag} {
				x, y := dropNaN(d.Values(a, results.RoleHigh, m)), dropNaN(d.Values(b, results.RoleHigh, m))
				t := Test{Metric: "high_" + m, A: a, B: b}
				r, err := c.Compare(x, y)
				t.UTest = r
				if err != nil {
					t.Err = err.Error()
				}
				out = append(out, t)
			}
		}
	}
	return out
}

func isArm(label, arm string) bool { return label == arm || strings.HasPrefix(label, arm+" ") }

func dropNaN(x []float64) []float64 {
	out := x[:0:0]
	for _, v := range x {
		if !math.IsNaN(v) {
			out = append(out, v)
		}
	}
	return out
}

// StatsCSV renders stats.csv.
func (d *Data) StatsCSV(c stats.Comparer) string {
	var b strings.Builder
	b.WriteString("metric,arm_a,arm_b,n_a,n_b,U,p,note\n")
	for _, t := range d.Tests(c) {
		fmt.Fprintf(&b, "%s,%s,%s,%d,%d,%s,%s,%s\n", t.Metric, csvField(t.A), csvField(t.B), t.N1, t.N2, num(t.U), num(t.P), csvField(t.Err))
	}
	return b.String()
}
