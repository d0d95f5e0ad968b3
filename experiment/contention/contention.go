// Package contention designs the experiment's contention before anything
// runs: from the traces, their windows, the LOW phase offsets of every block
// and the memory scale it computes what every session asks for over wall
// time, their coincident sum against the parent limit and the gate line,
// and how many bytes the LOW sessions must give up, for how long, for
// HIGH's window to fit. A config whose contention is below the floor is
// weak: `run` refuses it unless told otherwise.
package contention

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"sort"

	"github.com/agentcg/agentcg/experiment/config"
	"github.com/agentcg/agentcg/experiment/results"
	"github.com/agentcg/agentcg/replayimage/trace"
)

// LoadTraces reads every session's trace from dir (a folder of trace folders).
func LoadTraces(dir string, sessions []config.Session) (map[string]*trace.Trace, error) {
	out := map[string]*trace.Trace{}
	for _, s := range sessions {
		if out[s.Trace] != nil {
			continue
		}
		t, err := trace.Load(filepath.Join(dir, s.Trace), trace.DefaultOptions())
		if err != nil {
			return nil, fmt.Errorf("session %s: trace %s in %s: %w", s.Name, s.Trace, dir, err)
		}
		out[s.Trace] = t
	}
	return out, nil
}

// Periods is each looping session's window length in trace seconds, from
// which the block offsets are drawn.
func Periods(cfg config.Config, traces map[string]*trace.Trace) (map[string]float64, error) {
	out := map[string]float64{}
	for _, s := range cfg.Sessions {
		w := s.Window
		if w.Loop {
			w.Length = 1 // set per run; only the period matters here
		}
		w, err := w.Resolve(traces[s.Trace])
		if err != nil {
			return nil, fmt.Errorf("session %s: %w", s.Name, err)
		}
		out[s.Name] = w.Period()
	}
	return out, nil
}

// RunLength is the wall length of a run: the end of the last session that
// does not loop, plus the tail. Looping sessions play until then.
func RunLength(cfg config.Config, sessions []config.Session, traces map[string]*trace.Trace) (float64, error) {
	end := 0.0
	for _, s := range sessions {
		if s.Window.Loop {
			continue
		}
		w, err := s.Window.Resolve(traces[s.Trace])
		if err != nil {
			return 0, fmt.Errorf("session %s: %w", s.Name, err)
		}
		end = max(end, s.DelayS+w.Span()/cfg.Speed)
	}
	if end == 0 {
		return 0, errors.New("every session loops: nothing sets the run's length")
	}
	return end + cfg.TailS, nil
}

// Windows resolves what each session plays in one run: its window with
// the block's offset and, for looping sessions, the length that lasts
// until runS.
func Windows(cfg config.Config, sessions []config.Session, traces map[string]*trace.Trace, offsets map[string]float64, runS float64) (map[string]trace.Window, error) {
	out := map[string]trace.Window{}
	for _, s := range sessions {
		w := s.Window
		if off, ok := offsets[s.Name]; ok {
			w.Offset = off
		}
		if w.Loop {
			w.Length = max(0, runS-s.DelayS) * cfg.Speed
		}
		r, err := w.Resolve(traces[s.Trace])
		if err != nil {
			return nil, fmt.Errorf("session %s: %w", s.Name, err)
		}
		out[s.Name] = r
	}
	return out, nil
}

// Estimate is what a run costs besides its replay, for the time budget.
type Estimate struct {
	RunS     float64 `json:"run_s"`     // per run: cgroups, clean-up, cool-down
	SessionS float64 `json:"session_s"` // per container: create, start, ready, remove
	FixedS   float64 `json:"fixed_s"`   // per experiment: boot, calibration, report
}

// DefaultEstimate was measured in the TCG VM on the 2-core development
// machine (experiment/README.md gives the numbers and the load).
var DefaultEstimate = Estimate{RunS: 8, SessionS: 3.5, FixedS: 90}

// SessionPlan is one session in the plan.
type SessionPlan struct {
	Name      string       `json:"name"`
	Role      string       `json:"role"`
	Trace     string       `json:"trace"`
	Window    trace.Window `json:"window"` // block 0's
	DelayS    float64      `json:"delay_s"`
	PeakBytes int64        `json:"peak_bytes"` // scaled window peak, without overhead (block 0)
	MinBytes  int64        `json:"min_bytes"`  // scaled window minimum (block 0)
	// MaxPeakBytes is the largest scaled peak the session plays in any
	// block: a looped LOW's phase moves which part of its window it plays.
	MaxPeakBytes int64 `json:"max_peak_bytes"`
}

// Block is the contention of one block (its LOW offsets).
type Block struct {
	Block   int                `json:"block"`
	Offsets map[string]float64 `json:"offsets_s"`
	// GiveUpBytes is the most LOW must give up at any time while HIGH runs;
	// GiveUpS how long (wall seconds) the give-up is at or above the floor.
	GiveUpBytes int64   `json:"give_up_bytes"`
	GiveUpS     float64 `json:"give_up_s"`
	// LowShare is the largest share of LOW's bytes it must give up.
	LowShare float64 `json:"low_share"`
	// The contention window: from the first to the last moment with a
	// give-up above zero (wall seconds from the barrier).
	ContentionStartS float64 `json:"contention_start_s"`
	ContentionEndS   float64 `json:"contention_end_s"`
	// MaxLimitBytes is the largest scaled parent limit for which this block
	// still meets the floor.
	MaxLimitBytes int64 `json:"max_limit_bytes"`
	Weak          bool  `json:"weak"`
}

// Sample is one row of the plan's time table.
type Sample struct {
	T           float64          `json:"t_s"`
	Bytes       map[string]int64 `json:"bytes"` // per session, with overhead while it runs
	SumBytes    int64            `json:"sum_bytes"`
	GiveUpBytes int64            `json:"give_up_bytes"`
}

// Budget is the time the experiment is expected to take.
type Budget struct {
	Runs         int      `json:"runs"`
	Blocks       int      `json:"blocks"`
	RunsPerBlock int      `json:"runs_per_block"`
	ReplayS      float64  `json:"replay_s"` // Σ run lengths
	SetupS       float64  `json:"setup_s"`  // Σ per-run and per-container overhead
	FixedS       float64  `json:"fixed_s"`
	TotalS       float64  `json:"total_s"`
	Estimate     Estimate `json:"estimate"`
}

// Plan is the designed contention of a config at one memory scale.
type Plan struct {
	Profile  string  `json:"profile"`
	MemScale float64 `json:"mem_scale"`
	// ScaleNote says where the scale came from (config, flag, calibration,
	// or an assumption when the config calibrates at run time).
	ScaleNote string  `json:"scale_note"`
	Speed     float64 `json:"speed"`
	RunS      float64 `json:"run_s"` // wall length of a contended run

	ParentLimitBytes int64  `json:"parent_limit_bytes"` // scaled
	GatePct          uint32 `json:"gate_pct"`
	GateBytes        int64  `json:"gate_bytes"`
	OverheadBytes    int64  `json:"session_overhead_bytes"`

	HighPeakBytes int64   `json:"high_peak_bytes"`
	FloorBytes    int64   `json:"floor_bytes"` // min_give_up_frac × high_peak_bytes
	FloorS        float64 `json:"floor_s"`
	// GiveUpBytes and GiveUpS are the weakest block's: every block has at
	// least this much contention.
	GiveUpBytes int64   `json:"give_up_bytes"`
	GiveUpS     float64 `json:"give_up_s"`
	// Feasible: HIGH's window peak fits the limit beside the containers'
	// overhead, so some arm can let HIGH finish.
	Feasible bool     `json:"feasible"`
	Weak     bool     `json:"weak"`
	Problems []string `json:"problems,omitempty"`
	// LimitRange is the unscaled parent limits that are feasible and meet
	// the floor in every block ([0, 0] when none does). FitLimitBytes is
	// the least unscaled limit HIGH fits in beside the overhead.
	LimitRange    [2]int64 `json:"limit_range_bytes"`
	FitLimitBytes int64    `json:"fit_limit_bytes"`

	Sessions []SessionPlan `json:"sessions"`
	Blocks   []Block       `json:"blocks"`
	Series   []Sample      `json:"series"` // block 0, every change of any target
	Budget   Budget        `json:"budget"`
}

// piece is a constant stretch of every session's demand.
type piece struct {
	t0, t1     float64
	high, low  int64 // scaled trace bytes
	overhead   int64
	highActive bool
	per        map[string]int64
}

// Compute builds the plan at scale (which must be positive).
func Compute(cfg config.Config, traces map[string]*trace.Trace, scale float64, note string, est Estimate) (*Plan, error) {
	if !(scale > 0) {
		return nil, fmt.Errorf("plan: scale %v must be positive", scale)
	}
	periods, err := Periods(cfg, traces)
	if err != nil {
		return nil, err
	}
	runS, err := RunLength(cfg, cfg.Sessions, traces)
	if err != nil {
		return nil, err
	}
	p := &Plan{Profile: cfg.Profile, MemScale: scale, ScaleNote: note, Speed: cfg.Speed, RunS: runS,
		ParentLimitBytes: int64(float64(cfg.ParentLimitBytes) * scale), GatePct: cfg.Policy.WithDefaults().GatePct,
		OverheadBytes: cfg.SessionOverheadBytes, FloorS: cfg.MinGiveUpS, Feasible: true}
	p.GateBytes = int64(float64(p.ParentLimitBytes) * float64(p.GatePct) / 100)
	p.LimitRange[1] = math.MaxInt64
	nsess := int64(len(cfg.Sessions))
	for b := 0; b < cfg.Runs; b++ {
		offs := config.Offsets(cfg.Seed, b, cfg.Sessions, periods)
		wins, err := Windows(cfg, cfg.Sessions, traces, offs, runS)
		if err != nil {
			return nil, err
		}
		pieces, err := demand(cfg, traces, wins, scale)
		if err != nil {
			return nil, err
		}
		if b == 0 {
			for _, s := range cfg.Sessions {
				sp := SessionPlan{Name: s.Name, Role: s.Role, Trace: s.Trace, Window: wins[s.Name], DelayS: s.DelayS, MinBytes: math.MaxInt64}
				for _, pc := range pieces {
					if v, ok := pc.per[s.Name]; ok {
						sp.PeakBytes = max(sp.PeakBytes, v-cfg.SessionOverheadBytes)
						sp.MinBytes = min(sp.MinBytes, v-cfg.SessionOverheadBytes)
					}
				}
				if s.Role == results.RoleHigh {
					p.HighPeakBytes = sp.PeakBytes
				}
				p.Sessions = append(p.Sessions, sp)
			}
			p.FloorBytes = int64(cfg.MinGiveUpFrac * float64(p.HighPeakBytes))
			p.Series = series(pieces, p.ParentLimitBytes)
			if need := p.HighPeakBytes + nsess*cfg.SessionOverheadBytes; need > p.ParentLimitBytes {
				p.Feasible = false
				p.Problems = append(p.Problems, fmt.Sprintf("HIGH's window peak %s plus %d containers' overhead (%s) exceeds the parent limit %s: HIGH cannot fit even if LOW gives up everything",
					MB(p.HighPeakBytes), nsess, MB(nsess*cfg.SessionOverheadBytes), MB(p.ParentLimitBytes)))
			}
			p.LimitRange[0] = int64(math.Ceil(float64(p.HighPeakBytes+nsess*cfg.SessionOverheadBytes) / scale))
			p.FitLimitBytes = p.LimitRange[0]
		}
		for i := range p.Sessions {
			for _, pc := range pieces {
				if v, ok := pc.per[p.Sessions[i].Name]; ok {
					p.Sessions[i].MaxPeakBytes = max(p.Sessions[i].MaxPeakBytes, v-cfg.SessionOverheadBytes)
				}
			}
		}
		blk := block(b, offs, pieces, p.ParentLimitBytes, p.FloorBytes, p.FloorS)
		p.LimitRange[1] = min(p.LimitRange[1], int64(float64(blk.MaxLimitBytes)/scale))
		if blk.Weak {
			p.Weak = true
		}
		p.Blocks = append(p.Blocks, blk)
	}
	weakest := 0
	for i, b := range p.Blocks {
		if b.GiveUpS < p.Blocks[weakest].GiveUpS || (b.GiveUpS == p.Blocks[weakest].GiveUpS && b.GiveUpBytes < p.Blocks[weakest].GiveUpBytes) {
			weakest = i
		}
	}
	if len(p.Blocks) > 0 {
		p.GiveUpBytes, p.GiveUpS = p.Blocks[weakest].GiveUpBytes, p.Blocks[weakest].GiveUpS
	}
	if p.Weak {
		p.Problems = append(p.Problems, fmt.Sprintf("weak contention: in block %d LOW must give up %s at most and at least %s (%.0f%% of HIGH's window peak) for only %.2f s; the floor is %.1f s",
			weakest, MB(p.GiveUpBytes), MB(p.FloorBytes), 100*cfg.MinGiveUpFrac, p.GiveUpS, p.FloorS))
	}
	if p.LimitRange[0] > p.LimitRange[1] {
		p.LimitRange = [2]int64{0, 0}
	}
	p.Budget = budget(cfg, traces, runS, est)
	return p, nil
}

// demand splits the run into stretches where every session's target is
// constant, with each running container's overhead added.
func demand(cfg config.Config, traces map[string]*trace.Trace, wins map[string]trace.Window, scale float64) ([]piece, error) {
	type sched struct {
		s     config.Session
		pts   []trace.Point
		start float64
		end   float64
	}
	var ss []sched
	cuts := []float64{0}
	for _, s := range cfg.Sessions {
		pts, err := traces[s.Trace].Schedule(wins[s.Name])
		if err != nil {
			return nil, fmt.Errorf("session %s: %w", s.Name, err)
		}
		sc := sched{s: s, pts: pts, start: s.DelayS, end: s.DelayS + pts[len(pts)-1].T/cfg.Speed}
		for _, pt := range pts {
			cuts = append(cuts, sc.start+pt.T/cfg.Speed)
		}
		cuts = append(cuts, sc.end)
		ss = append(ss, sc)
	}
	slices.Sort(cuts)
	cuts = slices.Compact(cuts)
	var out []piece
	for i := 0; i+1 < len(cuts); i++ {
		t0, t1 := cuts[i], cuts[i+1]
		if t1-t0 < 1e-9 {
			continue
		}
		pc := piece{t0: t0, t1: t1, per: map[string]int64{}}
		for _, sc := range ss {
			if t0 < sc.start-1e-9 || t0 >= sc.end-1e-9 {
				continue
			}
			v := int64(math.Ceil(float64(trace.ValueAt(sc.pts, (t0-sc.start)*cfg.Speed)) * scale))
			pc.per[sc.s.Name] = v + cfg.SessionOverheadBytes
			pc.overhead += cfg.SessionOverheadBytes
			if sc.s.Role == results.RoleHigh {
				pc.high, pc.highActive = v, true
			} else {
				pc.low += v
			}
		}
		out = append(out, pc)
	}
	return out, nil
}

func (pc piece) sum() int64 { return pc.high + pc.low + pc.overhead }

// block measures one block's give-up against limit.
func block(b int, offs map[string]float64, pieces []piece, limit, floor int64, floorS float64) Block {
	blk := Block{Block: b, Offsets: offs, ContentionStartS: -1, ContentionEndS: -1}
	type span struct {
		v int64 // sum − floor: the limit below which this stretch meets the floor
		d float64
	}
	var spans []span
	for _, pc := range pieces {
		if !pc.highActive {
			continue
		}
		g := min(max(0, pc.sum()-limit), pc.low)
		if g > 0 {
			if blk.ContentionStartS < 0 {
				blk.ContentionStartS = pc.t0
			}
			blk.ContentionEndS = pc.t1
		}
		blk.GiveUpBytes = max(blk.GiveUpBytes, g)
		if pc.low > 0 {
			blk.LowShare = max(blk.LowShare, float64(g)/float64(pc.low))
		}
		if g >= floor && g > 0 {
			blk.GiveUpS += pc.t1 - pc.t0
		}
		spans = append(spans, span{pc.sum() - floor, pc.t1 - pc.t0})
	}
	blk.Weak = blk.GiveUpS < floorS || blk.GiveUpBytes < floor || blk.GiveUpBytes == 0
	// The largest limit that still leaves floorS seconds at or above the
	// floor: walk the stretches from the most demanding down.
	sort.Slice(spans, func(i, j int) bool { return spans[i].v > spans[j].v })
	acc := 0.0
	for _, s := range spans {
		acc += s.d
		if acc >= floorS-1e-9 {
			blk.MaxLimitBytes = s.v
			break
		}
	}
	if blk.ContentionStartS < 0 {
		blk.ContentionStartS, blk.ContentionEndS = 0, 0
	}
	return blk
}

func series(pieces []piece, limit int64) []Sample {
	var out []Sample
	for _, pc := range pieces {
		g := int64(0)
		if pc.highActive {
			g = min(max(0, pc.sum()-limit), pc.low)
		}
		out = append(out, Sample{T: round3(pc.t0), Bytes: pc.per, SumBytes: pc.sum(), GiveUpBytes: g})
	}
	return out
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

// budget adds up the planned runs: replay time plus the setup estimate.
func budget(cfg config.Config, traces map[string]*trace.Trace, runS float64, est Estimate) Budget {
	pts := cfg.Points()
	b := Budget{Blocks: cfg.Runs, RunsPerBlock: len(pts), Runs: cfg.Runs * len(pts), FixedS: est.FixedS, Estimate: est}
	for _, p := range pts {
		l, err := RunLength(cfg, p.Sessions, traces)
		if err != nil {
			l = runS
		}
		b.ReplayS += float64(cfg.Runs) * l
		b.SetupS += float64(cfg.Runs) * (est.RunS + est.SessionS*float64(len(p.Sessions)) + cfg.CooldownS)
	}
	b.TotalS = b.ReplayS + b.SetupS + b.FixedS
	return b
}

// MB formats bytes as decimal megabytes.
func MB(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/1e6) }

// ChooseLimit picks the unscaled parent limit for parent_limit_bytes 0: the
// middle of the range that fits HIGH beside the containers' overhead and
// meets the floor in every block, at this scale.
func ChooseLimit(cfg config.Config, traces map[string]*trace.Trace, scale float64) (int64, [2]int64, error) {
	probe := cfg
	probe.ParentLimitBytes = 1
	p, err := Compute(probe, traces, scale, "", Estimate{})
	if err != nil {
		return 0, [2]int64{}, err
	}
	r := p.LimitRange
	if (r[1] == 0 || r[0] > r[1]) && cfg.AllowWeak {
		// Weak by consent: HIGH still fits, with 2% to spare.
		return p.FitLimitBytes * 102 / 100 / 1_000_000 * 1_000_000, [2]int64{p.FitLimitBytes, p.FitLimitBytes}, nil
	}
	if r[1] == 0 || r[0] > r[1] {
		return 0, r, fmt.Errorf("no parent limit fits HIGH's window peak (%s at scale %g, plus %d containers' overhead) and makes LOW give up %.0f%% of it for %.1f s in every block: widen the windows, lower the floor, or set parent_limit_bytes",
			MB(p.HighPeakBytes), scale, len(cfg.Sessions), 100*cfg.MinGiveUpFrac, cfg.MinGiveUpS)
	}
	// Round to 1 MB for a readable config.
	return (r[0] + r[1]) / 2 / 1_000_000 * 1_000_000, r, nil
}

// DecideLimit fills parent_limit_bytes 0 from the plan at scale (see
// ChooseLimit) and says how it was chosen; a set limit is kept.
func DecideLimit(cfg *config.Config, traces map[string]*trace.Trace, scale float64) (string, error) {
	if cfg.ParentLimitBytes != 0 {
		return "", nil
	}
	l, r, err := ChooseLimit(*cfg, traces, scale)
	if err != nil {
		return "", err
	}
	cfg.ParentLimitBytes = l
	if r[0] == r[1] {
		return fmt.Sprintf("parent limit %s unscaled: no limit meets the floor (allowed weak), so 2%% above the least that fits HIGH (%s)", MB(l), MB(r[0])), nil
	}
	return fmt.Sprintf("parent limit chosen from the plan: %s unscaled, the middle of %s–%s", MB(l), MB(r[0]), MB(r[1])), nil
}
