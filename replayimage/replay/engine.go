// Package replay owns the replay engine: it turns a cleaned trace into memory
// pressure by resizing one anonymous arena to each sample's target, page-exact,
// on the trace's schedule (or back to back), and measures how long that took.
// It knows no policy: the workload is policy-blind.
package replay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"time"

	"github.com/agentcg/agentcg/replayimage/trace"
	"golang.org/x/sys/unix"
	"gonum.org/v1/gonum/stat"
)

// Options controls one replay.
type Options struct {
	Speed    float64 // trace seconds per wall second; > 0
	MemScale float64 // multiplies every memory target; > 0
	Unpaced  bool    // run steps back to back, ignoring the schedule
	CPU      bool    // burn the derived per-interval CPU as a duty cycle (paced only)
	MaxCPU   float64 // cap for CPU replay in percent; 0 means 100 × NumCPU
	Touch    bool    // write one byte per page instead of MADV_POPULATE_WRITE
	// StartAt, when set, is a wall-clock barrier: step 0 waits for it, so
	// that several sessions started at different moments begin together.
	StartAt time.Time

	// Progress, when set, is called after every step.
	Progress func(Status)
	// StepLog, when set, receives one JSON line per step (see Step).
	StepLog io.Writer
}

// Status is the engine's state after a step.
type Status struct {
	Step, Steps   int
	TargetBytes   int64
	ResidentBytes int64
	Elapsed       time.Duration
	Lag           time.Duration // how late the step started
}

// Step is one line of the step log. Times are CLOCK_MONOTONIC nanoseconds so
// that an outside observer can line them up with its own samples.
type Step struct {
	I             int     `json:"i"`
	Index         int     `json:"index"` // source sample index
	TS            float64 `json:"t_s"`   // trace time of the sample
	TargetBytes   int64   `json:"target_bytes"`
	ResidentBytes int64   `json:"resident_bytes"`
	StartMonoNs   int64   `json:"start_mono_ns"`
	DoneMonoNs    int64   `json:"done_mono_ns"`
	LatencyMs     float64 `json:"latency_ms"`
	LagS          float64 `json:"lag_s"`
}

// Latency summarises per-step allocation latency in milliseconds.
type Latency struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// Result is the per-run report. Field meanings are documented in the README.
type Result struct {
	Trace          string    `json:"trace"`
	Version        string    `json:"version,omitempty"`
	Complete       bool      `json:"complete"`
	Interrupted    string    `json:"interrupted,omitempty"`
	Error          string    `json:"error,omitempty"`
	Mode           string    `json:"mode"`
	Speed          float64   `json:"speed"`
	MemScale       float64   `json:"mem_scale"`
	CPUReplay      bool      `json:"cpu_replay"`
	Populate       string    `json:"populate"`
	PageSize       int       `json:"page_size"`
	StartedAt      time.Time `json:"started_at"`
	StartUnix      float64   `json:"start_unix"` // the active interval: step 0 began ...
	EndUnix        float64   `json:"end_unix"`   // ... and the last resize ended (Unix seconds)
	Samples        int       `json:"samples"`
	SamplesTotal   int       `json:"samples_total"`
	CompletionS    float64   `json:"completion_s"`
	IdealS         float64   `json:"ideal_s"`
	LagS           float64   `json:"lag_s"`
	MaxStepLagS    float64   `json:"max_step_lag_s"`
	Slowdown       float64   `json:"slowdown"`
	BusyS          float64   `json:"busy_s"`
	GrowS          float64   `json:"grow_s"`
	PeakBytes      int64     `json:"peak_bytes"`
	TargetPeak     int64     `json:"target_peak_bytes"`
	TouchedBytes   int64     `json:"touched_bytes"`
	ReleasedBytes  int64     `json:"released_bytes"`
	AllocLatencyMs Latency   `json:"alloc_latency_ms"`
}

// Plan is the replay's schedule: per step, when (wall offset from start) and
// how many resident pages.
type Plan struct {
	At    []time.Duration
	Pages []int
	CPU   []float64 // percent over the interval ending at the step
}

// NewPlan scales a trace's timeline and targets. Targets round up to whole
// pages, so a replay never undershoots the trace by more than a page.
func NewPlan(tr *trace.Trace, speed, memScale float64, pageSize int) Plan {
	p := Plan{}
	for _, s := range tr.Samples {
		p.At = append(p.At, time.Duration(s.T/speed*float64(time.Second)))
		b := math.Ceil(float64(s.UsedBytes) * memScale / float64(pageSize))
		p.Pages = append(p.Pages, int(b))
		p.CPU = append(p.CPU, s.CPU)
	}
	return p
}

func (o *Options) validate() error {
	if !(o.Speed > 0) || math.IsInf(o.Speed, 0) {
		return fmt.Errorf("speed %v: must be > 0", o.Speed)
	}
	if !(o.MemScale > 0) || math.IsInf(o.MemScale, 0) {
		return fmt.Errorf("mem-scale %v: must be > 0", o.MemScale)
	}
	if o.CPU && o.Unpaced {
		return errors.New("cpu replay needs paced mode: unpaced steps have no intervals to fill")
	}
	if o.MaxCPU < 0 {
		return fmt.Errorf("max-cpu %v: must be >= 0", o.MaxCPU)
	}
	return nil
}

// Run replays tr. When ctx ends first it returns the partial result with
// Complete false and a nil error; an error means the arena itself failed,
// and the result up to that point is returned with it.
func Run(ctx context.Context, tr *trace.Trace, opt Options) (*Result, error) {
	if err := opt.validate(); err != nil {
		return nil, err
	}
	res := &Result{
		Trace: tr.Name, Mode: "paced", Speed: opt.Speed, MemScale: opt.MemScale,
		CPUReplay: opt.CPU, SamplesTotal: len(tr.Samples),
	}
	if opt.Unpaced {
		res.Mode = "unpaced"
	}
	arena, err := NewArena(int64(math.Ceil(float64(tr.Peak())*opt.MemScale)), opt.Touch)
	if err != nil {
		return nil, err
	}
	defer arena.Close()
	ps := arena.PageSize()
	plan := NewPlan(tr, opt.Speed, opt.MemScale, ps)
	res.PageSize = ps
	res.TargetPeak = int64(slices.Max(plan.Pages)) * int64(ps)
	if !opt.Unpaced {
		res.IdealS = plan.At[len(plan.At)-1].Seconds()
	}

	var cpu *burner
	if opt.CPU {
		maxCPU := opt.MaxCPU
		if maxCPU == 0 {
			maxCPU = 100 * float64(runtime.NumCPU())
		}
		cpu = startBurner(ctx, maxCPU)
		defer cpu.stop()
	}

	var (
		enc       *json.Encoder
		monoBase  int64
		latencies []float64
		busy      time.Duration
		grow      time.Duration
		maxLag    time.Duration
	)
	if opt.StepLog != nil {
		enc = json.NewEncoder(opt.StepLog)
	}
	if !opt.StartAt.IsZero() {
		if err := sleepUntil(ctx, opt.StartAt); err != nil {
			res.Interrupted = err.Error()
			return res, nil
		}
	}
	res.StartedAt = time.Now().UTC()
	start := time.Now()
	res.StartUnix = unixSeconds(start)
	if enc != nil {
		var ts unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
			return nil, fmt.Errorf("clock_gettime: %w", err)
		}
		monoBase = ts.Nano()
	}
	mono := func(t time.Time) int64 { return monoBase + int64(t.Sub(start)) }
	finish := func(end time.Time) {
		res.CompletionS = end.Sub(start).Seconds()
		res.EndUnix = unixSeconds(end)
		res.BusyS = busy.Seconds()
		res.GrowS = grow.Seconds()
		res.MaxStepLagS = maxLag.Seconds()
		if !opt.Unpaced {
			res.LagS = max(0, res.CompletionS-res.IdealS)
			if res.IdealS > 0 {
				res.Slowdown = res.CompletionS / res.IdealS
			}
		}
		res.Populate = arena.Populate()
		res.AllocLatencyMs = summarize(latencies)
	}

	for i, at := range plan.At {
		if !opt.Unpaced {
			if err := sleepUntil(ctx, start.Add(at)); err != nil {
				res.Interrupted = err.Error()
				finish(time.Now())
				return res, nil
			}
			if cpu != nil && i+1 < len(plan.CPU) {
				// The next sample's CPU is what was burnt over the coming interval.
				cpu.set(plan.CPU[i+1])
			}
		}
		before := arena.Pages()
		t0 := time.Now()
		err := arena.Resize(ctx, plan.Pages[i])
		t1 := time.Now()
		after := arena.Pages()
		busy += t1.Sub(t0)
		if after > before {
			res.TouchedBytes += int64(after-before) * int64(ps)
			grow += t1.Sub(t0)
			latencies = append(latencies, float64(t1.Sub(t0))/float64(time.Millisecond))
		} else {
			res.ReleasedBytes += int64(before-after) * int64(ps)
		}
		res.PeakBytes = max(res.PeakBytes, int64(after)*int64(ps))
		if err != nil {
			finish(t1)
			if ctx.Err() != nil {
				res.Interrupted = ctx.Err().Error()
				return res, nil
			}
			res.Error = err.Error()
			return res, err
		}
		res.Samples = i + 1
		lag := time.Duration(0)
		if !opt.Unpaced {
			lag = max(0, t0.Sub(start.Add(at)))
			maxLag = max(maxLag, lag)
		}
		if enc != nil {
			_ = enc.Encode(Step{
				I: i, Index: tr.Samples[i].Index, TS: tr.Samples[i].T,
				TargetBytes: int64(plan.Pages[i]) * int64(ps), ResidentBytes: int64(after) * int64(ps),
				StartMonoNs: mono(t0), DoneMonoNs: mono(t1),
				LatencyMs: float64(t1.Sub(t0)) / float64(time.Millisecond), LagS: lag.Seconds(),
			})
		}
		if opt.Progress != nil {
			opt.Progress(Status{
				Step: i + 1, Steps: len(plan.At),
				TargetBytes: int64(plan.Pages[i]) * int64(ps), ResidentBytes: int64(after) * int64(ps),
				Elapsed: t1.Sub(start), Lag: lag,
			})
		}
	}
	finish(time.Now())
	res.Complete = true
	return res, nil
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// sleepUntil waits for the deadline or the context, whichever comes first.
func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

func summarize(ms []float64) Latency {
	if len(ms) == 0 {
		return Latency{}
	}
	s := slices.Clone(ms)
	slices.Sort(s)
	return Latency{
		N:   len(s),
		P50: stat.Quantile(0.50, stat.Empirical, s, nil),
		P95: stat.Quantile(0.95, stat.Empirical, s, nil),
		P99: stat.Quantile(0.99, stat.Empirical, s, nil),
		Max: s[len(s)-1],
	}
}
