// Package config owns what an experiment is: the profiles (default, smoke),
// the sessions, the arms and their parameter sweeps, and the interleaved run
// order derived from them.
package config

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/agentcg/agentcg/experiment/results"
	"github.com/agentcg/agentcg/policy"
)

// Arms of the experiment (besides the solo baseline).
const (
	ArmStatic   = "Static"
	ArmNoLimit  = "NoLimit"
	ArmHighOnly = "HighOnly"
	ArmBPF      = "BPF"
)

// AllArms in the design's order.
var AllArms = []string{ArmStatic, ArmNoLimit, ArmHighOnly, ArmBPF}

// Session is one container of a run.
type Session struct {
	Name  string `json:"name" yaml:"name"`
	Role  string `json:"role" yaml:"role"` // high or low
	Trace string `json:"trace" yaml:"trace"`
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
	Arms     []string  `json:"arms" yaml:"arms"`
	Solo     bool      `json:"solo" yaml:"solo"`
	Runs     int       `json:"runs" yaml:"runs"` // per arm and sweep point

	// ParentLimitBytes is the unscaled memory.max of the shared parent;
	// the effective limit is ParentLimitBytes × mem scale.
	ParentLimitBytes int64   `json:"parent_limit_bytes" yaml:"parent_limit_bytes"`
	Speed            float64 `json:"speed" yaml:"speed"`
	MemScale         float64 `json:"mem_scale" yaml:"mem_scale"`

	Policy policy.Config `json:"policy" yaml:"policy"`   // base knobs (gate, delays)
	PollMs int           `json:"poll_ms" yaml:"poll_ms"` // HighOnly monitor poll interval
	Sweep  Sweep         `json:"sweep" yaml:"sweep"`

	SampleMs       int     `json:"sample_ms" yaml:"sample_ms"`                       // sampler period (100)
	BarrierS       float64 `json:"barrier_s" yaml:"barrier_s"`                       // time from first create to the common start
	RunTimeoutS    float64 `json:"run_timeout_s" yaml:"run_timeout_s"`               // a run longer than this is stopped
	CooldownS      float64 `json:"cooldown_s" yaml:"cooldown_s"`                     // pause between runs
	CgroupParent   string  `json:"cgroup_parent" yaml:"cgroup_parent"`               // under /sys/fs/cgroup
	TraceDir       string  `json:"trace_dir" yaml:"trace_dir"`                       // host copy of the traces (tool calls for figures)
	HighOnlyFloorB int64   `json:"highonly_floor_bytes" yaml:"highonly_floor_bytes"` // unscaled least memory.high the monitor sets
}

// Profile returns a named profile: "default" reproduces design.md §4,
// "smoke" is one small run per arm for CI.
func Profile(name string) (Config, error) {
	c := Config{
		Profile: name,
		Runtime: "containerd",
		Image:   "agentcg/replay:latest",
		Sessions: []Session{
			{Name: "high", Role: results.RoleHigh, Trace: "Medical_Bio_Hard"},
			{Name: "low1", Role: results.RoleLow, Trace: "ML_Scientific_Hard"},
			{Name: "low2", Role: results.RoleLow, Trace: "CLI_Tools_Easy"},
		},
		Arms: append([]string(nil), AllArms...),
		Solo: true,
		Runs: 5,
		// design.md §4 says 2 GB, but Medical_Bio_Hard peaks at 4.06 GB, so
		// HIGH would be OOM-killed in every arm, solo included, leaving no
		// baseline. 4.5 GB fits HIGH alone but not beside both LOWs at their
		// peaks; examples/design-2gb.yaml keeps the literal 2 GB.
		ParentLimitBytes: 4_500_000_000,
		Speed:            10,
		MemScale:         1,
		Policy:           policy.DefaultConfig(),
		PollMs:           100,
		SampleMs:         100,
		BarrierS:         5,
		RunTimeoutS:      600,
		CooldownS:        2,
		CgroupParent:     "agentcg-exp",
		TraceDir:         "replayimage/traces",
		HighOnlyFloorB:   64_000_000,
	}
	switch name {
	case "default", "":
		c.Profile = "default"
	case "smoke":
		c.Runs = 1
		c.MemScale = 0.1
		c.Speed = 20
		c.BarrierS = 3
		c.RunTimeoutS = 300
		c.CooldownS = 1
	default:
		return c, fmt.Errorf("unknown profile %q: allowed values are default, smoke", name)
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
	for _, s := range c.Sessions {
		switch s.Role {
		case results.RoleHigh:
			highs++
		case results.RoleLow:
		default:
			return fmt.Errorf("session %q: role %q: allowed values are high, low", s.Name, s.Role)
		}
		if s.Name == "" || s.Name == "parent" || names[s.Name] || strings.ContainsAny(s.Name, "/,. ") {
			return fmt.Errorf("session name %q: must be unique, non-empty, not \"parent\", without / , . or space", s.Name)
		}
		names[s.Name] = true
		if s.Trace == "" {
			return fmt.Errorf("session %q: no trace", s.Name)
		}
	}
	if highs != 1 {
		return fmt.Errorf("%d high sessions: exactly one is required", highs)
	}
	for _, a := range c.Arms {
		if !contains(AllArms, a) {
			return fmt.Errorf("arm %q: allowed values are %s", a, strings.Join(AllArms, ", "))
		}
	}
	switch {
	case c.Runtime != "docker" && c.Runtime != "containerd":
		return fmt.Errorf("runtime %q: allowed values are docker, containerd", c.Runtime)
	case c.Runs < 1:
		return fmt.Errorf("runs %d: at least 1", c.Runs)
	case c.Speed <= 0 || c.MemScale <= 0:
		return fmt.Errorf("speed %v and mem_scale %v must be positive", c.Speed, c.MemScale)
	case c.ParentLimitBytes <= 0:
		return fmt.Errorf("parent_limit_bytes %d must be positive", c.ParentLimitBytes)
	case c.SampleMs <= 0 || c.PollMs <= 0:
		return fmt.Errorf("sample_ms %d and poll_ms %d must be positive", c.SampleMs, c.PollMs)
	case strings.Contains(c.CgroupParent, "..") || c.CgroupParent == "" || strings.HasPrefix(c.CgroupParent, "/"):
		return fmt.Errorf("cgroup_parent %q: a relative path under /sys/fs/cgroup", c.CgroupParent)
	}
	for _, s := range c.Sweep.MemScale {
		if s <= 0 {
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

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// Point is one arm at one sweep point: what a run executes.
type Point struct {
	Arm      string
	Label    string            // arm plus the swept parameters, e.g. "BPF gate=80 delay=200"
	Params   map[string]string // every parameter that applies to the arm
	MemScale float64
	Policy   policy.Config // effective gate/delays (BPF and HighOnly)
	PollMs   int           // HighOnly
	Sessions []Session     // Solo: HIGH only
}

// Points expands arms × sweeps. A parameter appears in the label only when
// its sweep has more than one value.
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
	var high []Session
	for _, s := range c.Sessions {
		if s.Role == results.RoleHigh {
			high = append(high, s)
		}
	}
	var out []Point
	for _, sc := range scales {
		label := func(arm string, kv ...string) (string, map[string]string) {
			parts := []string{arm}
			params := map[string]string{"mem_scale": ftoa(sc)}
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
		if c.Solo {
			l, p := label(results.ArmSolo)
			out = append(out, Point{Arm: results.ArmSolo, Label: l, Params: p, MemScale: sc, Policy: base, PollMs: c.PollMs, Sessions: high})
		}
		for _, arm := range c.Arms {
			switch arm {
			case ArmStatic, ArmNoLimit:
				l, p := label(arm)
				out = append(out, Point{Arm: arm, Label: l, Params: p, MemScale: sc, Policy: base, PollMs: c.PollMs, Sessions: c.Sessions})
			case ArmHighOnly:
				for _, g := range gates {
					for _, poll := range polls {
						pc := base
						pc.GatePct = g
						l, p := label(arm, "gate_pct", swept(len(gates)), utoa(g), "poll_ms", swept(len(polls)), strconv.Itoa(poll))
						out = append(out, Point{Arm: arm, Label: l, Params: p, MemScale: sc, Policy: pc, PollMs: poll, Sessions: c.Sessions})
					}
				}
			case ArmBPF:
				for _, g := range gates {
					for _, d := range delays {
						pc := base
						pc.GatePct, pc.DelayMaxMs = g, d
						if pc.DelayBaseMs > d {
							pc.DelayBaseMs = d
						}
						l, p := label(arm, "gate_pct", swept(len(gates)), utoa(g), "delay_max_ms", swept(len(delays)), utoa(d),
							"delay_base_ms", "fixed", utoa(pc.DelayBaseMs))
						out = append(out, Point{Arm: arm, Label: l, Params: p, MemScale: sc, Policy: pc, PollMs: c.PollMs, Sessions: c.Sessions})
					}
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
	ID    string
	Order int
	Index int // repetition of this point
	Point Point
}

// Plan interleaves the runs: repetition 0 of every point, then repetition
// 1 of every point, … (ABCD ABCD …), so drift over time hits every arm alike.
func (c Config) Plan() []Planned {
	pts := c.Points()
	var out []Planned
	for i := 0; i < c.Runs; i++ {
		for _, p := range pts {
			n := len(out)
			out = append(out, Planned{ID: fmt.Sprintf("%03d-%s-r%d", n, slug(p.Label), i), Order: n, Index: i, Point: p})
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
