package run

import (
	"context"
	"log/slog"
	"time"

	"github.com/agentcg/agentcg/cgroup"
	"github.com/agentcg/agentcg/experiment/config"
	"github.com/agentcg/agentcg/experiment/results"
	"github.com/agentcg/agentcg/policy"
)

// Monitor is the HighOnly arm: the BPF policy mirrored in userspace.
//
//   - HIGH is protected with memory.low = max on its session and container
//     cgroups for the whole run (BPF: below_low returns true for HIGH).
//   - Every Poll it samples HIGH's memory.current into a policy.GrowthSignal
//     (the BPF programs' definition of "HIGH is active", the same knobs)
//     and reads the gate: each LOW's nearest limited ancestor's usage
//     against GatePct of its limit (0: ungated), as the BPF program does.
//   - While the gate is open and HIGH is active, every LOW session's
//     memory.high is pinned at its usage then (never below Floor), so the
//     kernel's memory.high penalty slows its growth and reclaims what it
//     grows by; when either condition ends, memory.high goes back to max.
//
// What still differs from the kernel version is listed in Differences.
type Monitor struct {
	Root     string   // cgroup mount, for the nearest limited ancestor
	High     []string // HIGH's session and container cgroup dirs (memory.current of the first)
	Lows     []string // LOW session cgroup dirs
	GatePct  uint32
	Activity policy.GrowthSignal
	Poll     time.Duration
	Floor    int64
	Log      *slog.Logger

	now       func() time.Time
	tightened bool
	since     time.Time
	Stats     results.MonitorStats
}

// Differences lists how HighOnly differs from the BPF policy; the report
// prints it beside HighOnly's numbers.
var Differences = config.HighOnlyDifferences

// Protect sets memory.low = max on HIGH's cgroups.
func (m *Monitor) Protect() error {
	for _, d := range m.High {
		if err := cgroup.Write(d, "memory.low", "max"); err != nil {
			return err
		}
	}
	return nil
}

// Run polls until ctx ends and then releases every LOW.
func (m *Monitor) Run(ctx context.Context) {
	if m.now == nil {
		m.now = time.Now
	}
	t := time.NewTicker(m.Poll)
	defer t.Stop()
	defer m.release()
	for {
		m.Step()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Step does one poll; exported for tests.
func (m *Monitor) Step() {
	if m.now == nil {
		m.now = time.Now
	}
	now := m.now()
	m.Stats.Polls++
	active := false
	if len(m.High) > 0 {
		if h, err := cgroup.ReadBytes(m.High[0], "memory.current"); err == nil && h >= 0 {
			active = m.Activity.Observe(now, uint64(h))
		} else {
			active = m.Activity.Active(now)
		}
	}
	gate := m.GatePct == 0
	if !gate && len(m.Lows) > 0 {
		if anc, limit := NearestLimited(m.Root, m.Lows[0]); anc != "" && limit > 0 {
			if used, err := cgroup.ReadBytes(anc, "memory.current"); err == nil {
				gate = used*100 >= int64(m.GatePct)*limit
			}
		}
	}
	switch {
	case gate && active && !m.tightened:
		m.Stats.Tightenings++
		for _, l := range m.Lows {
			cur, err := cgroup.ReadBytes(l, "memory.current")
			if err != nil {
				continue
			}
			if err := cgroup.Write(l, "memory.high", cgroup.FormatBytes(max(cur, m.Floor))); err != nil && m.Log != nil {
				m.Log.Warn("highonly tighten", "cgroup", l, "err", err)
			}
		}
		m.tightened, m.since = true, now
	case !(gate && active) && m.tightened:
		m.release()
	}
}

func (m *Monitor) release() {
	if m.tightened && m.now != nil {
		m.Stats.ActiveS += m.now().Sub(m.since).Seconds()
	}
	for _, l := range m.Lows {
		if err := cgroup.Write(l, "memory.high", "max"); err != nil && m.Log != nil {
			m.Log.Debug("highonly release", "cgroup", l, "err", err)
		}
	}
	m.tightened = false
}
