package run

import (
	"context"
	"log/slog"
	"time"

	"github.com/agentcg/agentcg/cgroup"
)

// Monitor is the HighOnly arm: the BPF policy's gate run in userspace. Every
// Poll it reads the parent's usage and HIGH's memory.current; while usage is
// at least GatePct of the parent's limit and HIGH grew within ActiveWindow,
// each LOW session's memory.high is pinned at its usage then (never below
// Floor), so LOW is throttled by the kernel's memory.high penalty. When the
// gate closes, LOW's memory.high goes back to max.
type Monitor struct {
	Parent       string   // parent cgroup dir
	High         string   // HIGH session cgroup dir
	Lows         []string // LOW session cgroup dirs
	GatePct      uint32
	ActiveWindow time.Duration
	Poll         time.Duration
	Floor        int64
	Log          *slog.Logger

	now       func() time.Time
	lastHigh  int64
	lastGrow  time.Time
	tightened bool
	// Tightenings counts gate openings, for the run record.
	Tightenings int
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
	if h, err := cgroup.ReadBytes(m.High, "memory.current"); err == nil {
		if h > m.lastHigh {
			m.lastGrow = now
		}
		m.lastHigh = h
	}
	active := m.ActiveWindow == 0 || (!m.lastGrow.IsZero() && now.Sub(m.lastGrow) <= m.ActiveWindow)
	gate := false
	if used, err := cgroup.ReadBytes(m.Parent, "memory.current"); err == nil {
		if limit, err := cgroup.ReadBytes(m.Parent, "memory.max"); err == nil && limit > 0 {
			gate = used*100 >= int64(m.GatePct)*limit
		}
	}
	switch {
	case gate && active && !m.tightened:
		m.Tightenings++
		for _, l := range m.Lows {
			cur, err := cgroup.ReadBytes(l, "memory.current")
			if err != nil {
				continue
			}
			if err := cgroup.Write(l, "memory.high", cgroup.FormatBytes(max(cur, m.Floor))); err != nil && m.Log != nil {
				m.Log.Warn("highonly tighten", "cgroup", l, "err", err)
			}
		}
		m.tightened = true
	case !(gate && active) && m.tightened:
		m.release()
	}
}

func (m *Monitor) release() {
	for _, l := range m.Lows {
		if err := cgroup.Write(l, "memory.high", "max"); err != nil && m.Log != nil {
			m.Log.Debug("highonly release", "cgroup", l, "err", err)
		}
	}
	m.tightened = false
}
