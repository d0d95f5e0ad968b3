// Package config owns what an experiment is: the profiles (default,
// extended, smoke), the sessions and the windows of their traces, the
// reclaim regimes, the arms and their parameter sweeps, and the blocked run
// order derived from them (one repetition of every point per block, in a
// seeded random order, with LOW phase offsets drawn per block).
package config

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/agentcg/agentcg/experiment/results"
	"github.com/agentcg/agentcg/policy"
	"github.com/agentcg/agentcg/replayimage/trace"
)

// Arms and controls (design.md §4.2). Solo and Uncontended are controls;
// the rest are arms.
const (
	ArmSolo           = results.ArmSolo // HIGH alone under the parent limit
	ArmUncontended    = "Uncontended"   // every session, parent unlimited: CPU interference alone
	ArmStatic         = "Static"        // every session memory.max = limit / sessions
	ArmStaticPriority = "StaticPriority"
	ArmNoLimit        = "NoLimit"
	ArmHighOnly       = "HighOnly" // the BPF policy mirrored in userspace
	ArmBPF            = "BPF"
	ArmBPFSeed        = "BPFSeed" // the seed's literal policy
)

// AllArms in the design's order.
var AllArms = []string{ArmSolo, ArmUncontended, ArmStatic, ArmStaticPriority, ArmNoLimit, ArmHighOnly, ArmBPF, ArmBPFSeed}

// IsBPF reports whether an arm runs the BPF policy through the plugin or hook.
func IsBPF(arm string) bool { return arm == ArmBPF || arm == ArmBPFSeed }

// Reclaim regimes (design.md §4.1).
const (
	ReclaimNone = "none" // anonymous memory, swap off: the negative control
	ReclaimSwap = "swap" // a swap device, memory.swap.max open
	ReclaimFile = "file" // part of every session's memory is clean page cache
)

// AllReclaim lists the regimes.
var AllReclaim = []string{ReclaimNone, ReclaimSwap, ReclaimFile}

// HighOnlyDifferences lists how the HighOnly arm (the userspace mirror in
// experiment/run) differs from the BPF policy; the report prints it.
var HighOnlyDifferences = []string{
	"it samples HIGH's usage and the gate every poll_ms; BPF evaluates both on every LOW slow-path charge",
	"it slows LOW with memory.high pinned at LOW's usage: the kernel's overage-proportional penalty (up to 2 s per return to userspace) plus direct reclaim of LOW down to that line; BPF returns a delay that rises linearly from delay_base_ms at the gate to delay_max_ms at the limit and never reclaims LOW itself",
	"it protects HIGH with memory.low = max on HIGH's session and container cgroups, which the kernel honours only while others have reclaimable memory; BPF's below_low returns true on the same reclaim-protection path",
	"it acts on whole session cgroups, BPF on the container cgroups its ops are attached to",
}

// SeedPolicy is the seed's literal policy: LOW delayed 2000 ms on every
// charge, always (no gate, no activity window); HIGH's below_low is true.
// gate_pct 0 means ungated.
func SeedPolicy(base policy.Config) policy.Config {
	p := base
	p.GatePct, p.DelayBaseMs, p.DelayMaxMs, p.HighActiveWindowMs = 0, 2000, 2000, 0
	return p
}

// Session is one container of a run.
type Session struct {
	Name  string `json:"name" yaml:"name"`
	Role  string `json:"role" yaml:"role"` // high or low
	Trace string `json:"trace" yaml:"trace"`
	// Window is the part of the trace played. A looping session (LOW)
	// plays its window over and over until the run ends; its length is
	// set by the orchestrator. HIGH's window sets the run's length.
	Window trace.Window `json:"window" yaml:"window"`
	// RandomOffset draws the window phase of a looping session per block
	// from the seed, the same for every arm of the block.
	RandomOffset bool    `json:"random_offset" yaml:"random_offset"`
	DelayS       float64 `json:"delay_s" yaml:"delay_s"` // after the barrier
}

// Regime is one reclaim regime with the arms run under it.
type Regime struct {
	Reclaim string   `json:"reclaim" yaml:"reclaim"`
	Arms    []string `json:"arms" yaml:"arms"` // empty: Config.Arms
}

// Swap configures the swap regime's device and limits.
type Swap struct {
	// Device: zram (set up before the first swap run and torn down at the
	// end) or existing (the machine's active swap, left alone).
	Device    string `json:"device" yaml:"device"`
	SizeBytes int64  `json:"size_bytes" yaml:"size_bytes"` // zram disksize; 0: twice the scaled parent limit
	Algorithm string `json:"algorithm" yaml:"algorithm"`   // zram comp_algorithm; empty: the kernel's default
	// SessionMaxBytes is every session's memory.swap.max; -1 is max.
	SessionMaxBytes int64 `json:"session_max_bytes" yaml:"session_max_bytes"`
}

// Sweep lists the values to try; an empty list means "the base value".
type Sweep struct {
	GatePct    []uint32  `json:"gate_pct" yaml:"gate_pct"`
	DelayMaxMs []uint32  `json:"delay_max_ms" yaml:"delay_max_ms"`
	PollMs     []int     `json:"poll_ms" yaml:"poll_ms"`
	MemScale   []float64 `json:"mem_scale" yaml:"mem_scale"`
}

// Config is one experiment. JSON and YAML files use the same field names.
type Config struct {
	Profile  string    `json:"profile" yaml:"profile"`
	Runtime  string    `json:"runtime" yaml:"runtime"` // docker or containerd
	Image    string    `json:"image" yaml:"image"`
	Sessions []Session `json:"sessions" yaml:"sessions"`
	Arms     []string  `json:"arms" yaml:"arms"`       // default arm list of every regime
	Regimes  []Regime  `json:"regimes" yaml:"regimes"` // empty: swap with Arms
	Runs     int       `json:"runs" yaml:"runs"`       // blocks: repetitions of every point
	Seed     uint64    `json:"seed" yaml:"seed"`       // arm order and LOW offsets per block

	// ParentLimitBytes is the unscaled memory.max of the shared parent;
	// the effective limit is ParentLimitBytes × mem scale. 0 chooses it
	// from the contention plan at the run's scale: the middle of the range
	// that fits HIGH and meets the give-up floor in every block.
	ParentLimitBytes int64   `json:"parent_limit_bytes" yaml:"parent_limit_bytes"`
	Speed            float64 `json:"speed" yaml:"speed"`
	// MemScale multiplies trace bytes and limits; 0 calibrates it at run
	// time from the machine's first-touch rate.
	MemScale float64 `json:"mem_scale" yaml:"mem_scale"`
	TailS    float64 `json:"tail_s" yaml:"tail_s"` // the LOWs run this long after HIGH's window

	// The workload's memory (every regime, so that the regimes differ only
	// in what the kernel can reclaim).
	RandomShare float64 `json:"random_share" yaml:"random_share"`   // random bytes per page: compressibility
	RetouchPerS float64 `json:"retouch_per_s" yaml:"retouch_per_s"` // working-set re-reads
	FileShare   float64 `json:"file_share" yaml:"file_share"`       // file regime: page-cache share
	Swap        Swap    `json:"swap" yaml:"swap"`
	ScratchDir  string  `json:"scratch_dir" yaml:"scratch_dir"` // disk-backed folder for the file regime's files

	// The contention plan and its floor.
	SessionOverheadBytes int64   `json:"session_overhead_bytes" yaml:"session_overhead_bytes"` // per container, not scaled
	MinGiveUpFrac        float64 `json:"min_give_up_frac" yaml:"min_give_up_frac"`             // of HIGH's window peak
	MinGiveUpS           float64 `json:"min_give_up_s" yaml:"min_give_up_s"`                   // wall seconds
	AllowWeak            bool    `json:"allow_weak" yaml:"allow_weak"`

	// Calibration (mem_scale 0): the largest scale at which HIGH's fastest
	// growth needs at most Safety × the measured first-touch rate.
	CalibrateSafety float64 `json:"calibrate_safety" yaml:"calibrate_safety"`
	CalibrateBytes  int64   `json:"calibrate_bytes" yaml:"calibrate_bytes"`

	Policy policy.Config `json:"policy" yaml:"policy"`   // base knobs (gate, delays, activity)
	PollMs int           `json:"poll_ms" yaml:"poll_ms"` // HighOnly monitor poll interval
	Sweep  Sweep         `json:"sweep" yaml:"sweep"`

	SampleMs       int     `json:"sample_ms" yaml:"sample_ms"`                       // sampler period (200)
	ReadyTimeoutS  float64 `json:"ready_timeout_s" yaml:"ready_timeout_s"`           // containers ready by then, else the run fails
	RunTimeoutS    float64 `json:"run_timeout_s" yaml:"run_timeout_s"`               // sessions still running this long after the planned end are stopped (did not finish)
	CooldownS      float64 `json:"cooldown_s" yaml:"cooldown_s"`                     // pause between runs
	CgroupParent   string  `json:"cgroup_parent" yaml:"cgroup_parent"`               // under /sys/fs/cgroup
	TraceDir       string  `json:"trace_dir" yaml:"trace_dir"`                       // traces, mounted read-only into the sessions
	HighOnlyFloorB int64   `json:"highonly_floor_bytes" yaml:"highonly_floor_bytes"` // unscaled least memory.high the monitor sets
}

// Profiles lists the named profiles.
var Profiles = []string{"default", "extended", "smoke"}

// Profile returns a named profile: "default" is the decisive experiment
// within an hour on a 2-core TCG VM, "extended" runs every arm and regime,
// "smoke" is one short block for CI.
func Profile(name string) (Config, error) {
	c := Config{
		Profile: name,
		Runtime: "containerd",
		Image:   "agentcg/replay:latest",
		// HIGH plays Medical_Bio_Hard's spike: 265 MB (the sample at
		// 209.5 s), a ramp from 210.6 s to 4.06 GB at 223.0 s, back to
		// 196 MB at 225.1 s, and 1.4 trace seconds of its working set after. The LOWs loop busy stretches of
		// their traces from a phase drawn per block.
		Sessions: []Session{
			{Name: "high", Role: results.RoleHigh, Trace: "Medical_Bio_Hard", Window: trace.Window{From: 210.5, To: 226.5}},
			{Name: "low1", Role: results.RoleLow, Trace: "ML_Scientific_Hard", Window: trace.Window{From: 140, To: 250, Loop: true}, RandomOffset: true},
			{Name: "low2", Role: results.RoleLow, Trace: "CLI_Tools_Easy", Window: trace.Window{From: 54, To: 88, Loop: true}, RandomOffset: true},
		},
		// The default fits an hour on a 2-core TCG VM with 10 blocks (the
		// budget is in experiment/README.md): Uncontended (the control the
		// memory effect is read against), NoLimit and BPF under swap, and
		// the none control point. The extended profile adds Solo, Static,
		// StaticPriority, HighOnly, BPFSeed and the file regime.
		Arms: []string{ArmUncontended, ArmNoLimit, ArmBPF},
		Regimes: []Regime{
			{Reclaim: ReclaimSwap},
			{Reclaim: ReclaimNone, Arms: []string{ArmNoLimit, ArmBPF}},
		},
		Runs: 10,
		Seed: 1,
		// HIGH's 4.06 GB peak fits alone; beside the LOWs (0.49-0.62 GB in
		// these windows) they must give up more than 10% of it while it
		// lasts (2.2 s at speed 0.5). The limit that does both depends on
		// the containers' overhead at the run's scale, so the plan picks it.
		ParentLimitBytes: 0,
		Speed:            0.5,
		MemScale:         0,
		TailS:            1,
		RandomShare:      0.33,
		RetouchPerS:      0.25,
		FileShare:        0.5,
		Swap:             Swap{Device: "zram", SessionMaxBytes: -1},
		ScratchDir:       "/var/lib/agentcg-experiment",

		SessionOverheadBytes: 6 << 20,
		MinGiveUpFrac:        0.10,
		MinGiveUpS:           2,
		CalibrateSafety:      0.5,
		CalibrateBytes:       128 << 20,

		Policy:         policy.DefaultConfig(),
		PollMs:         100,
		SampleMs:       200,
		ReadyTimeoutS:  180,
		RunTimeoutS:    90,
		CooldownS:      0.5,
		CgroupParent:   "agentcg-exp",
		TraceDir:       "replayimage/traces",
		HighOnlyFloorB: 64_000_000,
	}
	switch name {
	case "default", "":
		c.Profile = "default"
	case "extended":
		c.Arms = slices.Clone(AllArms)
		c.Regimes = []Regime{
			{Reclaim: ReclaimSwap},
			{Reclaim: ReclaimFile, Arms: []string{ArmUncontended, ArmNoLimit, ArmHighOnly, ArmBPF}},
			{Reclaim: ReclaimNone, Arms: []string{ArmNoLimit, ArmHighOnly, ArmBPF, ArmBPFSeed}},
		}
	case "smoke":
		// Every arm once, and one run of each other regime, fast: the spike
		// is too short to meet the contention floor, so it is allowed weak.
		c.Arms = slices.Clone(AllArms)
		c.Regimes = []Regime{
			{Reclaim: ReclaimSwap},
			{Reclaim: ReclaimFile, Arms: []string{ArmBPF}},
			{Reclaim: ReclaimNone, Arms: []string{ArmNoLimit}},
		}
		c.Runs = 1
		// Calibrated like the default (a loaded CI machine gets a smaller
		// scale rather than a thrashing run), from a quicker measurement.
		c.CalibrateBytes = 64 << 20
		c.Speed = 2
		c.AllowWeak = true
		c.RunTimeoutS = 30
	default:
		return c, fmt.Errorf("unknown profile %q: allowed values are %s", name, strings.Join(Profiles, ", "))
	}
	return c, nil
}

// Load reads a JSON or YAML file over the named profile; fields the file
// does not set keep the profile's values.
func Load(path, profile string) (Config, error) {
	c, err := Profile(profile)
	if err != nil {
		return c, err
	}
	if path == "" {
		return c, c.Validate()
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("experiment config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("experiment config %s: %w", path, err)
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("experiment config %s: %w", path, err)
	}
	return c, nil
}

// Validate rejects configs the orchestrator cannot run.
func (c Config) Validate() error {
	highs := 0
	names := map[string]bool{}
	for i, s := range c.Sessions {
		switch s.Role {
		case results.RoleHigh:
			highs++
			if s.Window.Loop || s.RandomOffset {
				return fmt.Errorf("sessions[%d] %q: HIGH's window sets the run's length: it cannot loop or take a random offset", i, s.Name)
			}
		case results.RoleLow:
		default:
			return fmt.Errorf("sessions[%d] %q: role %q: allowed values are high, low", i, s.Name, s.Role)
		}
		if s.Name == "" || s.Name == "parent" || names[s.Name] || strings.ContainsAny(s.Name, "/,. ") {
			return fmt.Errorf("sessions[%d]: name %q: must be unique, non-empty, not \"parent\", without / , . or space", i, s.Name)
		}
		names[s.Name] = true
		if s.Trace == "" || strings.ContainsAny(s.Trace, "/\\") || strings.HasPrefix(s.Trace, ".") {
			return fmt.Errorf("sessions[%d] %q: trace %q: a folder name inside trace_dir", i, s.Name, s.Trace)
		}
		w := s.Window
		if !(w.From >= 0) || !(w.To >= 0) || (w.To > 0 && w.To <= w.From) || !(w.Offset >= 0) || w.Length != 0 {
			return fmt.Errorf("sessions[%d] %q: window %+v: want 0 ≤ from_s < to_s (0: the trace's end), offset_s ≥ 0, no length_s (the run sets it)", i, s.Name, w)
		}
		if s.RandomOffset && !w.Loop {
			return fmt.Errorf("sessions[%d] %q: random_offset needs loop (it draws the phase of the looped window)", i, s.Name)
		}
		if !(s.DelayS >= 0) {
			return fmt.Errorf("sessions[%d] %q: delay_s %v must be ≥ 0", i, s.Name, s.DelayS)
		}
	}
	if highs != 1 {
		return fmt.Errorf("%d high sessions: exactly one is required", highs)
	}
	if err := validArms("arms", c.Arms); err != nil {
		return err
	}
	seen := map[string]bool{}
	for i, r := range c.Regimes {
		if !slices.Contains(AllReclaim, r.Reclaim) {
			return fmt.Errorf("regimes[%d]: reclaim %q: allowed values are %s", i, r.Reclaim, strings.Join(AllReclaim, ", "))
		}
		if seen[r.Reclaim] {
			return fmt.Errorf("regimes[%d]: reclaim %q twice", i, r.Reclaim)
		}
		seen[r.Reclaim] = true
		if err := validArms(fmt.Sprintf("regimes[%d].arms", i), r.Arms); err != nil {
			return err
		}
	}
	if len(c.Points()) == 0 {
		return fmt.Errorf("no arm to run: arms and regimes are empty")
	}
	share := func(name string, v float64) error {
		if !(v >= 0 && v <= 1) {
			return fmt.Errorf("%s %v: must be in [0, 1]", name, v)
		}
		return nil
	}
	for _, err := range []error{share("random_share", c.RandomShare), share("file_share", c.FileShare), share("min_give_up_frac", c.MinGiveUpFrac)} {
		if err != nil {
			return err
		}
	}
	switch {
	case c.Runtime != "docker" && c.Runtime != "containerd":
		return fmt.Errorf("runtime %q: allowed values are docker, containerd", c.Runtime)
	case c.Runs < 1:
		return fmt.Errorf("runs %d: at least 1", c.Runs)
	case !(c.Speed > 0) || !(c.MemScale >= 0) || math.IsInf(c.Speed, 0) || math.IsInf(c.MemScale, 0):
		return fmt.Errorf("speed %v must be positive and mem_scale %v ≥ 0 (0: calibrate)", c.Speed, c.MemScale)
	case c.ParentLimitBytes < 0:
		return fmt.Errorf("parent_limit_bytes %d must be ≥ 0 (0: chosen from the contention plan)", c.ParentLimitBytes)
	case c.SampleMs <= 0 || c.PollMs <= 0:
		return fmt.Errorf("sample_ms %d and poll_ms %d must be positive", c.SampleMs, c.PollMs)
	case !(c.RetouchPerS >= 0) || !(c.TailS >= 0) || !(c.MinGiveUpS >= 0) || c.SessionOverheadBytes < 0:
		return fmt.Errorf("retouch_per_s %v, tail_s %v, min_give_up_s %v and session_overhead_bytes %d must be ≥ 0",
			c.RetouchPerS, c.TailS, c.MinGiveUpS, c.SessionOverheadBytes)
	case c.MemScale == 0 && (!(c.CalibrateSafety > 0 && c.CalibrateSafety <= 1) || c.CalibrateBytes <= 0):
		return fmt.Errorf("calibrate_safety %v must be in (0, 1] and calibrate_bytes %d positive", c.CalibrateSafety, c.CalibrateBytes)
	case c.Swap.Device != "zram" && c.Swap.Device != "existing":
		return fmt.Errorf("swap.device %q: allowed values are zram, existing", c.Swap.Device)
	case c.Swap.SessionMaxBytes < -1 || c.Swap.SizeBytes < 0:
		return fmt.Errorf("swap.session_max_bytes %d (-1 = max) and swap.size_bytes %d must be ≥ 0", c.Swap.SessionMaxBytes, c.Swap.SizeBytes)
	case strings.Contains(c.CgroupParent, "..") || c.CgroupParent == "" || strings.HasPrefix(c.CgroupParent, "/"):
		return fmt.Errorf("cgroup_parent %q: a relative path under /sys/fs/cgroup", c.CgroupParent)
	case c.ReadyTimeoutS <= 0 || c.RunTimeoutS <= 0:
		return fmt.Errorf("ready_timeout_s %v and run_timeout_s %v must be positive", c.ReadyTimeoutS, c.RunTimeoutS)
	}
	for _, s := range c.Sweep.MemScale {
		if !(s > 0) {
			return fmt.Errorf("sweep mem_scale %v must be positive", s)
		}
	}
	for _, p := range c.Sweep.PollMs {
		if p <= 0 {
			return fmt.Errorf("sweep poll_ms %d must be positive", p)
		}
	}
	return c.Policy.WithDefaults().Validate()
}

func validArms(field string, arms []string) error {
	seen := map[string]bool{}
	for _, a := range arms {
		if !slices.Contains(AllArms, a) {
			return fmt.Errorf("%s: arm %q: allowed values are %s", field, a, strings.Join(AllArms, ", "))
		}
		if seen[a] {
			return fmt.Errorf("%s: arm %q twice", field, a)
		}
		seen[a] = true
	}
	return nil
}

// RegimeList is Regimes, or swap with Arms when none are configured.
func (c Config) RegimeList() []Regime {
	if len(c.Regimes) == 0 {
		return []Regime{{Reclaim: ReclaimSwap, Arms: c.Arms}}
	}
	out := make([]Regime, len(c.Regimes))
	for i, r := range c.Regimes {
		out[i] = r
		if len(r.Arms) == 0 {
			out[i].Arms = c.Arms
		}
	}
	return out
}

// High returns the HIGH session.
func (c Config) High() Session {
	for _, s := range c.Sessions {
		if s.Role == results.RoleHigh {
			return s
		}
	}
	return Session{}
}

// Point is one arm under one regime at one sweep point: what a run executes.
type Point struct {
	Arm      string
	Reclaim  string
	Label    string            // arm, regime when several, swept parameters: "BPF swap gate=80"
	Params   map[string]string // every parameter that applies to the arm
	MemScale float64           // 0 until calibrated
	Policy   policy.Config     // effective gate/delays (BPF, BPFSeed, HighOnly)
	PollMs   int               // HighOnly
	Sessions []Session         // Solo: HIGH only
}

// Points expands regimes × arms × sweeps. A parameter appears in the label
// only when its sweep has more than one value, the regime only when there
// are several.
func (c Config) Points() []Point {
	or := func(xs []float64, v float64) []float64 {
		if len(xs) == 0 {
			return []float64{v}
		}
		return xs
	}
	oru := func(xs []uint32, v uint32) []uint32 {
		if len(xs) == 0 {
			return []uint32{v}
		}
		return xs
	}
	ori := func(xs []int, v int) []int {
		if len(xs) == 0 {
			return []int{v}
		}
		return xs
	}
	base := c.Policy.WithDefaults()
	scales := or(c.Sweep.MemScale, c.MemScale)
	gates := oru(c.Sweep.GatePct, base.GatePct)
	delays := oru(c.Sweep.DelayMaxMs, base.DelayMaxMs)
	polls := ori(c.Sweep.PollMs, c.PollMs)
	high := []Session{c.High()}
	regimes := c.RegimeList()
	var out []Point
	for _, rg := range regimes {
		for _, sc := range scales {
			label := func(arm string, kv ...string) (string, map[string]string) {
				parts := []string{arm}
				params := map[string]string{"mem_scale": ftoa(sc), "reclaim": rg.Reclaim}
				if len(regimes) > 1 {
					parts = append(parts, rg.Reclaim)
				}
				if len(scales) > 1 {
					parts = append(parts, "scale="+ftoa(sc))
				}
				for i := 0; i+2 < len(kv); i += 3 {
					params[kv[i]] = kv[i+2]
					if kv[i+1] == "swept" {
						parts = append(parts, shortName(kv[i])+"="+kv[i+2])
					}
				}
				return strings.Join(parts, " "), params
			}
			swept := func(n int) string {
				if n > 1 {
					return "swept"
				}
				return "fixed"
			}
			pt := func(arm string, pc policy.Config, poll int, sess []Session, kv ...string) Point {
				l, p := label(arm, kv...)
				return Point{Arm: arm, Reclaim: rg.Reclaim, Label: l, Params: p, MemScale: sc, Policy: pc, PollMs: poll, Sessions: sess}
			}
			for _, arm := range rg.Arms {
				switch arm {
				case ArmSolo:
					out = append(out, pt(arm, base, c.PollMs, high))
				case ArmUncontended, ArmStatic, ArmStaticPriority, ArmNoLimit:
					out = append(out, pt(arm, base, c.PollMs, c.Sessions))
				case ArmHighOnly:
					for _, g := range gates {
						for _, poll := range polls {
							pc := base
							pc.GatePct = g
							out = append(out, pt(arm, pc, poll, c.Sessions, "gate_pct", swept(len(gates)), utoa(g),
								"poll_ms", swept(len(polls)), strconv.Itoa(poll),
								"high_active_window_ms", "fixed", utoa(pc.HighActiveWindowMs), "high_growth_bytes", "fixed", strconv.FormatUint(pc.HighGrowthBytes, 10)))
						}
					}
				case ArmBPF:
					for _, g := range gates {
						for _, d := range delays {
							pc := base
							pc.GatePct, pc.DelayMaxMs = g, d
							pc.DelayBaseMs = min(pc.DelayBaseMs, d)
							out = append(out, pt(arm, pc, c.PollMs, c.Sessions, "gate_pct", swept(len(gates)), utoa(g),
								"delay_max_ms", swept(len(delays)), utoa(d), "delay_base_ms", "fixed", utoa(pc.DelayBaseMs),
								"high_active_window_ms", "fixed", utoa(pc.HighActiveWindowMs), "high_growth_bytes", "fixed", strconv.FormatUint(pc.HighGrowthBytes, 10)))
						}
					}
				case ArmBPFSeed:
					pc := SeedPolicy(base)
					out = append(out, pt(arm, pc, c.PollMs, c.Sessions, "gate_pct", "fixed", "0", "delay_max_ms", "fixed", "2000",
						"delay_base_ms", "fixed", "2000", "high_active_window_ms", "fixed", "0"))
				}
			}
		}
	}
	return out
}

func shortName(k string) string {
	switch k {
	case "gate_pct":
		return "gate"
	case "delay_max_ms":
		return "delay"
	case "poll_ms":
		return "poll"
	}
	return k
}

func ftoa(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
func utoa(v uint32) string  { return strconv.FormatUint(uint64(v), 10) }

// Planned is one run in the execution order.
type Planned struct {
	ID       string
	Order    int // position in the whole experiment
	Block    int
	Position int // position inside the block
	Point    Point
	Offsets  map[string]float64 // window phase (trace seconds) of each session with random_offset
}

// Offsets draws the window phases of one block: uniform over each looping
// session's window, from a generator seeded by (seed, block), so every arm
// of a block sees the same alignment. periods maps session → window length.
func Offsets(seed uint64, block int, sessions []Session, periods map[string]float64) map[string]float64 {
	r := rand.New(rand.NewPCG(seed, uint64(block)<<1|1))
	out := map[string]float64{}
	for _, s := range sessions {
		if s.RandomOffset && periods[s.Name] > 0 {
			// Millisecond resolution keeps the phases readable in run.json.
			out[s.Name] = math.Floor(r.Float64()*periods[s.Name]*1000) / 1000
		}
	}
	return out
}

// Order is the seeded random order of n points in one block.
func Order(seed uint64, block, n int) []int {
	r := rand.New(rand.NewPCG(seed^0x5bd1e995, uint64(block)<<1))
	return r.Perm(n)
}

// Plan lays out the runs: block 0 (every point once, in a seeded random
// order), block 1, … so that drift over time hits every arm alike and the
// arms of a block share the LOW offsets (a paired design). periods gives
// each looping session's window length in trace seconds (see Offsets).
func (c Config) Plan(periods map[string]float64) []Planned {
	pts := c.Points()
	var out []Planned
	for b := 0; b < c.Runs; b++ {
		offs := Offsets(c.Seed, b, c.Sessions, periods)
		for pos, i := range Order(c.Seed, b, len(pts)) {
			p := pts[i]
			n := len(out)
			out = append(out, Planned{ID: fmt.Sprintf("%03d-b%02d-%s", n, b, slug(p.Label)), Order: n, Block: b, Position: pos, Point: p, Offsets: offs})
		}
	}
	return out
}

func slug(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.':
			return r
		}
		return '_'
	}, s)
}
