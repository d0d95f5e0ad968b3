package policy

import "time"

// GrowthSignal is the one definition of "HIGH is active" that every
// enforcement of the policy shares: the BPF programs (bpf/low.bpf.c mirrors
// Observe step for step), the HighOnly userspace arm, and the tests.
//
// A HIGH cgroup is active while it has grown: its usage rose by at least
// MinGrowth bytes above the lowest usage seen since the current window
// began, and that happened no longer than Window ago. A page fault alone,
// or a HIGH that frees and re-touches the same memory, is not growth.
//
// It needs O(1) state and one usage sample per call, so it can run inside
// LOW's get_high_delay_ms (only on LOW's slow-path charges) and costs HIGH
// nothing. Samples may be irregular: the BPF version samples when LOW
// charges, the userspace version every poll interval.
type GrowthSignal struct {
	Window    time.Duration // 0: always active (activity is ignored)
	MinGrowth uint64        // bytes; 0 counts any rise as growth

	base     uint64    // lowest usage since baseAt
	baseAt   time.Time // start of the current window; zero before the first sample
	lastGrow time.Time // when growth was last seen; zero if never
}

// Observe records HIGH's usage at now and reports whether HIGH is active.
func (g *GrowthSignal) Observe(now time.Time, usage uint64) bool {
	if g.Window == 0 {
		return true
	}
	switch {
	case g.baseAt.IsZero() || now.Sub(g.baseAt) > g.Window:
		// First sample, or the window ran out without growth: start anew.
		g.base, g.baseAt = usage, now
	case usage < g.base:
		g.base = usage
	case usage-g.base >= max(g.MinGrowth, 1):
		g.lastGrow = now
		g.base, g.baseAt = usage, now
	}
	return g.Active(now)
}

// Active reports whether growth was seen within Window of now, without a
// new sample.
func (g *GrowthSignal) Active(now time.Time) bool {
	if g.Window == 0 {
		return true
	}
	return !g.lastGrow.IsZero() && now.Sub(g.lastGrow) <= g.Window
}
