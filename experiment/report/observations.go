package report

import (
	"math"
	"slices"
	"strings"

	"github.com/agentcg/agentcg/experiment/analysis"
	"github.com/agentcg/agentcg/experiment/results"
)

// Metric names as they appear in the analysis tables and sessions.csv.
// Lower is better for all but work_done_bytes and utilisation.
const (
	MStallSome    = analysis.MStallSome // session memory.pressure "some" total over the run, µs
	MStallFull    = analysis.MStallFull
	MMaxStepLag   = analysis.MMaxStepLag // largest delay of a step behind schedule
	MPeakLateness = "peak_lateness_s"    // when the window's peak was reached, behind schedule
	MLag          = "lag_s"              // completion behind schedule at the end
	MRefaults     = analysis.MRefaults   // workingset_refault_anon + _file
	MRetouch      = "retouch_s"          // time spent re-reading the working set
	MSwapPeak     = "swap_peak_bytes"    // memory.swap.peak: most of the session swapped out at once
	MReclaimed    = "reclaimed_bytes"    // pgsteal × page size: what reclaim took from the session
	MWorkDone     = analysis.MWorkDone   // bytes the replay made resident
	MCPU          = "cpu_usage_s"        // cpu.stat usage
	MCPUSome      = "cpu_some_us"        // cpu.pressure some total
	MEventsHigh   = "events_high"        // memory.events
	MEventsMax    = "events_max"
	MEventsLow    = "events_low"
	MDelayNonZero = "bpf_delay_nonzero" // get_high_delay_ms returns > 0
	MDelayTotal   = "bpf_delay_total_ms"
	MBelowLow     = "bpf_below_low_true"

	MUtilisation = analysis.MUtilisation // parent, time-weighted
	MParentPeak  = "parent_peak_bytes"
	MParentMax   = "parent_events_max"
	MParentOOM   = "parent_events_oom_kill"
	MParentHigh  = "parent_events_high"
	MParentStall = "parent_stall_some_us"
	MZramRatio   = "zram_ratio" // compression ratio of the swap device at the end
)

// SessionMetrics lists the session metrics in sessions.csv's column order.
var SessionMetrics = []string{MStallSome, MStallFull, MMaxStepLag, MPeakLateness, MLag, MRefaults, MRetouch, MSwapPeak, MReclaimed,
	MWorkDone, MCPU, MCPUSome, MEventsLow, MEventsHigh, MEventsMax, MDelayNonZero, MDelayTotal, MBelowLow}

// ParentMetrics lists the per-run (parent) metrics.
var ParentMetrics = []string{MUtilisation, MParentPeak, MParentMax, MParentOOM, MParentHigh, MParentStall, MZramRatio}

// HigherIsBetter are the metrics where more is better.
var HigherIsBetter = []string{MWorkDone, MUtilisation}

// Killed is whether a session did not survive: OOM-killed, killed by a
// signal, or without a complete replay result.
func Killed(s *results.Session) bool {
	return s.Killed() || s.Replay == nil || !s.Replay.Complete
}

// SessionValues returns s's metrics; absent ones were not measured.
func SessionValues(s *results.Session) map[string]float64 {
	m := map[string]float64{}
	k := s.Kernel
	m[MStallSome] = float64(k.Memory.SomeUs)
	m[MStallFull] = float64(k.Memory.FullUs)
	m[MCPUSome] = float64(k.CPU.SomeUs)
	if v, ok := k.CPUStat["usage_usec"]; ok {
		m[MCPU] = float64(v) / 1e6
	}
	m[MRefaults] = float64(k.Stat["workingset_refault_anon"] + k.Stat["workingset_refault_file"])
	if v, ok := k.Stat["pgsteal"]; ok {
		m[MReclaimed] = float64(v) * float64(pageSize(s))
	}
	m[MSwapPeak] = float64(k.SwapPeak)
	m[MEventsLow] = float64(k.Events["low"])
	m[MEventsHigh] = float64(k.Events["high"])
	m[MEventsMax] = float64(k.Events["max"])
	if r := s.Replay; r != nil {
		m[MMaxStepLag] = r.MaxStepLagS
		m[MPeakLateness] = r.PeakLatenessS
		m[MLag] = r.LagS
		m[MRetouch] = r.RetouchS
		m[MWorkDone] = float64(r.TouchedBytes)
	}
	if c := s.Counters; c != nil {
		m[MDelayNonZero] = float64(c.DelayNonZero)
		m[MDelayTotal] = float64(c.DelayTotalMs)
		m[MBelowLow] = float64(c.BelowLowTrue)
	}
	for k, v := range m {
		if math.IsInf(v, 0) {
			delete(m, k)
		}
	}
	return m
}

func pageSize(s *results.Session) int64 {
	if s.Replay != nil && s.Replay.PageSize > 0 {
		return int64(s.Replay.PageSize)
	}
	return 4096
}

// RunValues returns a run's per-run (parent) metrics.
func RunValues(r *results.Run) map[string]float64 {
	m := map[string]float64{
		MUtilisation: r.Utilisation,
		MParentPeak:  float64(r.ParentPeak),
		MParentMax:   float64(r.Parent.Events["max"]),
		MParentOOM:   float64(r.Parent.Events["oom_kill"]),
		MParentHigh:  float64(r.Parent.Events["high"]),
		MParentStall: float64(r.Parent.Memory.SomeUs),
	}
	if r.Zram != nil && r.Zram.Ratio > 0 {
		m[MZramRatio] = r.Zram.Ratio
	}
	return m
}

// PointOf is the sweep-point part of a run's label: the label without its
// arm and regime ("BPF swap gate=70" → "gate=70").
func PointOf(r *results.Run) string {
	f := strings.Fields(r.Label)
	if len(f) > 0 && f[0] == r.Arm {
		f = f[1:]
	}
	if len(f) > 0 && f[0] == r.Reclaim {
		f = f[1:]
	}
	return strings.Join(f, " ")
}

// groupsFor returns the analysis points an observation at point p goes
// into: every maximal point of its regime whose parameters include p's. A
// NoLimit run ("") is thus compared with each BPF sweep point.
func groupsFor(p string, points []string) []string {
	sub := func(a, b string) bool { // every token of a is in b
		bt := strings.Fields(b)
		for _, t := range strings.Fields(a) {
			if !slices.Contains(bt, t) {
				return false
			}
		}
		return true
	}
	var out []string
	for _, q := range points {
		if !sub(p, q) {
			continue
		}
		maximal := true
		for _, q2 := range points {
			if q2 != q && sub(q, q2) {
				maximal = false
			}
		}
		if maximal {
			out = append(out, q)
		}
	}
	return out
}

// Observations turns included runs into the analysis's rows: one per
// session, plus one parent row per run. Killed sessions keep their
// partial measurements and their Killed flag.
func Observations(runs []results.RunData) []analysis.Observation {
	points := map[string][]string{} // regime → points
	for i := range runs {
		r := &runs[i].Run
		p := PointOf(r)
		if !slices.Contains(points[r.Reclaim], p) {
			points[r.Reclaim] = append(points[r.Reclaim], p)
		}
	}
	for _, ps := range points {
		slices.Sort(ps)
	}
	var out []analysis.Observation
	for i := range runs {
		rd := &runs[i]
		r := &rd.Run
		for _, g := range groupsFor(PointOf(r), points[r.Reclaim]) {
			for j := range rd.Sessions {
				s := &rd.Sessions[j]
				out = append(out, analysis.Observation{Block: r.Block, Arm: r.Arm, Regime: r.Reclaim, Point: g, Session: s.Name,
					Role: s.Role, Trace: s.Trace, Killed: Killed(s), Metrics: SessionValues(s)})
			}
			out = append(out, analysis.Observation{Block: r.Block, Arm: r.Arm, Regime: r.Reclaim, Point: g, Session: analysis.RoleParent,
				Role: analysis.RoleParent, Metrics: RunValues(r)})
		}
	}
	return out
}
