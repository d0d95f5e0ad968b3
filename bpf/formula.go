package bpf

import "github.com/agentcg/agentcg/policy"

// DelayMs mirrors get_high_delay_ms in low.bpf.c: the delay for a LOW cgroup
// whose nearest limited ancestor is at pressurePermille (usage per mille of
// its memory.max, capped at 1000), while highActive says whether a HIGH
// cgroup is active by policy.GrowthSignal (ignored when the window is 0).
// The C code is authoritative; this copy documents and tests the formula.
func DelayMs(cfg policy.Config, pressurePermille uint64, highActive bool) uint32 {
	if !highActive && cfg.HighActiveWindowMs != 0 {
		return 0
	}
	if pressurePermille > 1000 {
		pressurePermille = 1000
	}
	gate := uint64(cfg.GatePct) * 10
	if pressurePermille < gate {
		return 0
	}
	if gate >= 1000 {
		return cfg.DelayMaxMs
	}
	return cfg.DelayBaseMs + uint32(uint64(cfg.DelayMaxMs-cfg.DelayBaseMs)*(pressurePermille-gate)/(1000-gate))
}
