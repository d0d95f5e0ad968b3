package policy

import "fmt"

// Config holds every knob of the priority policy. The BPF loader copies the
// BPF part into the program's read-only config before load; the native
// fallback uses the byte values. Config files are decoded over DefaultConfig,
// so an omitted field keeps its default. WithDefaults fills zero fields for
// callers that build a Config in code, except GatePct and HighActiveWindowMs,
// where 0 has a meaning (ungated; always active): such callers start from
// DefaultConfig.
//
// The seed's literal policy (the experiment's BPF-Seed arm: LOW delayed
// 2000 ms on every slow-path charge, whatever the parent's usage or HIGH
// does; HIGH's below_low always true) is
//
//	gate_pct: 0, delay_base_ms: 2000, delay_max_ms: 2000, high_active_window_ms: 0
type Config struct {
	// PinDir is the bpffs directory holding one pinned link per cgroup.
	PinDir string `json:"pin_dir" yaml:"pin_dir"`

	// GatePct: LOW is delayed only while the shared parent's usage is at
	// least GatePct percent of its limit. 0 is ungated: LOW is delayed (by
	// DelayBaseMs at least) even with no limited ancestor.
	GatePct uint32 `json:"gate_pct" yaml:"gate_pct"`
	// DelayBaseMs is the delay at the gate; it rises linearly to DelayMaxMs
	// as the parent's usage reaches its limit.
	DelayBaseMs uint32 `json:"delay_base_ms" yaml:"delay_base_ms"`
	DelayMaxMs  uint32 `json:"delay_max_ms" yaml:"delay_max_ms"`
	// HighActiveWindowMs and HighGrowthBytes define HIGH activity
	// (GrowthSignal): a HIGH cgroup is active for HighActiveWindowMs after
	// its usage grew by HighGrowthBytes within one window. Zero window means
	// LOW is throttled whenever the gate is open, whatever HIGH does.
	HighActiveWindowMs uint32 `json:"high_active_window_ms" yaml:"high_active_window_ms"`
	HighGrowthBytes    uint64 `json:"high_growth_bytes" yaml:"high_growth_bytes"`

	// NativeLowBytes is written to memory.low of HIGH cgroups in native mode.
	NativeLowBytes int64 `json:"native_low_bytes" yaml:"native_low_bytes"`
	// NativeHighBytes is written to memory.high of LOW cgroups in native mode.
	NativeHighBytes int64 `json:"native_high_bytes" yaml:"native_high_bytes"`
}

// DefaultHighGrowthBytes is the growth within one activity window that makes
// HIGH active: 8 MiB in 2 s is an agent allocating, not noise.
const DefaultHighGrowthBytes = 8 << 20

// DefaultPinDir is where links are pinned unless configured otherwise.
const DefaultPinDir = "/sys/fs/bpf/agentcg"

// DefaultConfig returns the defaults documented in the README.
func DefaultConfig() Config {
	return Config{
		PinDir:             DefaultPinDir,
		GatePct:            80,
		DelayBaseMs:        10,
		DelayMaxMs:         200,
		HighActiveWindowMs: 2000,
		HighGrowthBytes:    DefaultHighGrowthBytes,
		NativeLowBytes:     512 << 20,
		NativeHighBytes:    256 << 20,
	}
}

// WithDefaults fills zero fields from DefaultConfig.
func (c Config) WithDefaults() Config {
	d := DefaultConfig()
	if c.PinDir == "" {
		c.PinDir = d.PinDir
	}
	if c.DelayBaseMs == 0 {
		c.DelayBaseMs = d.DelayBaseMs
	}
	if c.DelayMaxMs == 0 {
		c.DelayMaxMs = d.DelayMaxMs
	}
	if c.HighGrowthBytes == 0 {
		c.HighGrowthBytes = d.HighGrowthBytes
	}
	if c.NativeLowBytes == 0 {
		c.NativeLowBytes = d.NativeLowBytes
	}
	if c.NativeHighBytes == 0 {
		c.NativeHighBytes = d.NativeHighBytes
	}
	return c
}

// Validate rejects knob combinations the policy cannot run with.
func (c Config) Validate() error {
	switch {
	case c.GatePct > 100:
		return fmt.Errorf("gate_pct %d: must be between 0 and 100", c.GatePct)
	case c.DelayMaxMs > 2000:
		return fmt.Errorf("delay_max_ms %d: the kernel clamps delays at 2000 ms", c.DelayMaxMs)
	case c.DelayBaseMs > c.DelayMaxMs:
		return fmt.Errorf("delay_base_ms %d exceeds delay_max_ms %d", c.DelayBaseMs, c.DelayMaxMs)
	}
	return nil
}
