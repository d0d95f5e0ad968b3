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
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
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
	// StartFile, when set, is polled until it holds the start time (Unix
	// seconds, as text): a barrier whose time is decided once every session
	// is ready. ReadyFile, when set, is created when the replay is ready to
	// start (arena mapped, file opened), just before it waits.
	StartFile string
	ReadyFile string
	// StopFile, when set, ends the replay as complete once it exists
	// (checked at every step and every 200 ms while waiting): a looping
	// session runs until the session that sets the run's length is done.
	StopFile string
	// Delay postpones step 0 by this much after the start.
	Delay time.Duration

	// Window is the part of the trace to play (the zero Window: all of it).
	Window trace.Window

	// RandomShare is the share of each page written with pseudo-random
	// bytes (the rest stays zero); it sets how well the pages compress in
	// a swap regime. 0 populates zero-filled pages without writing them.
	RandomShare float64
	// Seed varies the random content between sessions.
	Seed uint64
	// FileShare is the share of each step's target held as clean page cache
	// of FilePath (mapped read-only) rather than anonymous memory.
	FileShare float64
	FilePath  string
	// RetouchPerS is the share of the resident pages read again per second
	// (paced mode), cycling through them: the working set an agent keeps
	// using. A page that was swapped out or evicted faults back in then.
	RetouchPerS float64

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
	CPUSpinS       float64   `json:"cpu_spin_s,omitempty"` // CPU replay: seconds its workers spun, summed
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

	// How the memory was made, and the window played.
	Window      trace.Window `json:"window"`
	DelayS      float64      `json:"delay_s"`
	Stopped     bool         `json:"stopped"` // ended by the stop file (complete, before the schedule's end)
	RandomShare float64      `json:"random_share"`
	FileShare   float64      `json:"file_share"`
	RetouchPerS float64      `json:"retouch_per_s"`
	Passes      int          `json:"passes"` // loop passes begun

	// The schedule's largest target: when it was due (wall seconds from the
	// start) and when its resize finished. Lateness is the difference.
	PeakDueS      float64 `json:"peak_due_s"`
	PeakReachedS  float64 `json:"peak_reached_s"`
	PeakLatenessS float64 `json:"peak_lateness_s"`

	FilePeakBytes int64 `json:"file_peak_bytes"` // page-cache part of peak_bytes

	// Working-set re-reads: bytes read again, the time spent doing it
	// (faulting swapped or evicted pages back in shows up here), and the
	// longest single batch.
	RetouchedBytes int64   `json:"retouched_bytes"`
	RetouchS       float64 `json:"retouch_s"`
	RetouchMaxMs   float64 `json:"retouch_max_ms"`
}

// Plan is the replay's schedule: per step, when (wall offset from start) and
// how many resident pages.
type Plan struct {
	At     []time.Duration
	Pages  []int
	CPU    []float64 // percent over the interval ending at the step
	Points []trace.Point
}

// NewPlan scales a schedule's times and targets. Targets round up to whole
// pages, so a replay never undershoots the trace by more than a page.
func NewPlan(pts []trace.Point, speed, memScale float64, pageSize int) Plan {
	p := Plan{Points: pts}
	for _, s := range pts {
		p.At = append(p.At, time.Duration(s.T/speed*float64(time.Second)))
		b := math.Ceil(float64(s.Bytes) * memScale / float64(pageSize))
		p.Pages = append(p.Pages, int(b))
		p.CPU = append(p.CPU, s.CPU)
	}
	return p
}

// filePages is the page-cache part of a target of total pages.
func filePages(total int, share float64) int {
	return int(math.Round(float64(total) * share))
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
	if !(o.RandomShare >= 0 && o.RandomShare <= 1) {
		return fmt.Errorf("random-share %v: must be in [0, 1]", o.RandomShare)
	}
	if !(o.FileShare >= 0 && o.FileShare <= 1) {
		return fmt.Errorf("file-share %v: must be in [0, 1]", o.FileShare)
	}
	if o.FileShare > 0 && o.FilePath == "" {
		return errors.New("file-share needs a file to map (--file)")
	}
	if !(o.RetouchPerS >= 0) || math.IsInf(o.RetouchPerS, 0) {
		return fmt.Errorf("retouch %v: must be ≥ 0", o.RetouchPerS)
	}
	if o.Delay < 0 {
		return fmt.Errorf("delay %v: must be ≥ 0", o.Delay)
	}
	if !o.StartAt.IsZero() && o.StartFile != "" {
		return errors.New("start-at and start-file are exclusive")
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
	pts, err := tr.Schedule(opt.Window)
	if err != nil {
		return nil, err
	}
	win, _ := opt.Window.Resolve(tr)
	res := &Result{
		Trace: tr.Name, Mode: "paced", Speed: opt.Speed, MemScale: opt.MemScale,
		CPUReplay: opt.CPU, SamplesTotal: len(pts), Window: win, DelayS: opt.Delay.Seconds(),
		RandomShare: opt.RandomShare, FileShare: opt.FileShare, RetouchPerS: opt.RetouchPerS,
	}
	if opt.Unpaced {
		res.Mode = "unpaced"
	}
	var maxBytes int64
	for _, p := range pts {
		maxBytes = max(maxBytes, p.Bytes)
	}
	arena, err := NewArena(int64(math.Ceil(float64(maxBytes)*opt.MemScale)), opt.Touch)
	if err != nil {
		return nil, err
	}
	defer arena.Close()
	ps := arena.PageSize()
	if opt.RandomShare > 0 {
		c, err := NewContent(opt.RandomShare, ps, opt.Seed)
		if err != nil {
			return nil, err
		}
		arena.SetContent(c)
	}
	plan := NewPlan(pts, opt.Speed, opt.MemScale, ps)
	maxPages := slices.Max(plan.Pages)
	var file *FileArena
	if opt.FileShare > 0 {
		if file, err = OpenFileArena(opt.FilePath, int64(filePages(maxPages, opt.FileShare))*int64(ps)); err != nil {
			return nil, err
		}
		defer file.Close()
	}
	res.PageSize = ps
	res.TargetPeak = int64(maxPages) * int64(ps)
	peakStep := slices.Index(plan.Pages, maxPages)
	res.PeakDueS = (opt.Delay + plan.At[peakStep]).Seconds()
	if !opt.Unpaced {
		res.IdealS = plan.At[len(plan.At)-1].Seconds()
	}
	resize := func(ctx context.Context, pages int) error {
		fp := 0
		if file != nil {
			fp = filePages(pages, opt.FileShare)
			// Shrink before growing, so the total never overshoots.
			if fp < file.Pages() {
				if err := file.Resize(ctx, fp); err != nil {
					return err
				}
			}
		}
		if err := arena.Resize(ctx, pages-fp); err != nil {
			return err
		}
		if file != nil && fp > file.Pages() {
			return file.Resize(ctx, fp)
		}
		return nil
	}
	resident := func() int {
		if file != nil {
			return arena.Pages() + file.Pages()
		}
		return arena.Pages()
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
	if opt.ReadyFile != "" {
		if err := os.WriteFile(opt.ReadyFile, []byte("ready\n"), 0o644); err != nil {
			return nil, fmt.Errorf("ready file: %w", err)
		}
	}
	startAt, err := waitStart(ctx, opt)
	if err != nil {
		res.Interrupted = err.Error()
		return res, nil
	}
	if err := sleepUntil(ctx, startAt); err != nil {
		res.Interrupted = err.Error()
		return res, nil
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
	rt := &retoucher{rate: opt.RetouchPerS, last: start, anon: arena, file: file, stopFile: opt.StopFile}
	var lastLag time.Duration
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
		res.RetouchedBytes = rt.pages * int64(ps)
		res.RetouchS = rt.busy.Seconds()
		res.RetouchMaxMs = float64(rt.maxBatch) / float64(time.Millisecond)
		if cpu != nil {
			res.CPUSpinS = cpu.spinTime().Seconds()
		}
	}

	stopped := func() *Result {
		finish(time.Now())
		res.Complete, res.Stopped = true, true
		// The schedule reached so far is the ideal; the lag is how far
		// behind it the last step began.
		res.LagS = lastLag.Seconds()
		res.IdealS = max(0, res.CompletionS-res.LagS)
		res.Slowdown = 0
		if res.IdealS > 0 {
			res.Slowdown = res.CompletionS / res.IdealS
		}
		return res
	}
	for i, at := range plan.At {
		if rt.stopRequested() {
			return stopped(), nil
		}
		if !opt.Unpaced {
			if err := rt.idleUntil(ctx, start.Add(at)); errors.Is(err, errStopped) {
				return stopped(), nil
			} else if err != nil {
				res.Interrupted = err.Error()
				finish(time.Now())
				return res, nil
			}
			if cpu != nil && i+1 < len(plan.CPU) {
				// The next sample's CPU is what was burnt over the coming interval.
				cpu.set(plan.CPU[i+1])
			}
		}
		before := resident()
		t0 := time.Now()
		err := resize(ctx, plan.Pages[i])
		t1 := time.Now()
		after := resident()
		busy += t1.Sub(t0)
		if after > before {
			res.TouchedBytes += int64(after-before) * int64(ps)
			grow += t1.Sub(t0)
			latencies = append(latencies, float64(t1.Sub(t0))/float64(time.Millisecond))
		} else {
			res.ReleasedBytes += int64(before-after) * int64(ps)
		}
		res.PeakBytes = max(res.PeakBytes, int64(after)*int64(ps))
		if file != nil {
			res.FilePeakBytes = max(res.FilePeakBytes, int64(file.Pages())*int64(ps))
		}
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
		res.Passes = plan.Points[i].Pass + 1
		if i == peakStep {
			res.PeakReachedS = opt.Delay.Seconds() + t1.Sub(start).Seconds()
			res.PeakLatenessS = max(0, res.PeakReachedS-res.PeakDueS)
		}
		lag := time.Duration(0)
		if !opt.Unpaced {
			lag = max(0, t0.Sub(start.Add(at)))
			maxLag = max(maxLag, lag)
			lastLag = lag
		}
		if enc != nil {
			_ = enc.Encode(Step{
				I: i, Index: plan.Points[i].Index, TS: plan.Points[i].T,
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

// waitStart returns when step 0 is due: StartAt, or the time a StartFile
// announces once it appears, or now; plus Delay. The wall clock after it
// (StartUnix) excludes the delay, the schedule is relative to it.
func waitStart(ctx context.Context, opt Options) (time.Time, error) {
	at := opt.StartAt
	if opt.StartFile != "" {
		t := time.NewTicker(startPoll)
		defer t.Stop()
		for {
			if b, err := os.ReadFile(opt.StartFile); err == nil {
				if v, err := strconv.ParseFloat(strings.TrimSpace(string(b)), 64); err == nil && v > 0 {
					at = time.Unix(0, int64(v*1e9))
					break
				}
			}
			select {
			case <-ctx.Done():
				return at, ctx.Err()
			case <-t.C:
			}
		}
	}
	if at.IsZero() {
		at = time.Now()
	}
	return at.Add(opt.Delay), nil
}

// startPoll is how often a start file is looked for.
const startPoll = 20 * time.Millisecond

// retouchTick is how often the working set is re-read (and the stop file
// looked for) while a paced replay waits for its next step. Under TCG every
// wake-up switches the guest's context and costs the other replays their
// soft-TLB, so it is not shorter.
const retouchTick = 200 * time.Millisecond

// retoucher reads RetouchPerS of the resident pages per second, cycling
// through anonymous and file pages in proportion to their residency.
type retoucher struct {
	rate     float64
	stopFile string
	anon     *Arena
	file     *FileArena
	last     time.Time
	owed     float64
	anonNext int
	fileNext int
	pages    int64
	busy     time.Duration
	maxBatch time.Duration
}

// errStopped: the stop file appeared.
var errStopped = errors.New("stopped by the stop file")

// stopRequested reports whether the stop file exists.
func (r *retoucher) stopRequested() bool {
	if r.stopFile == "" {
		return false
	}
	_, err := os.Stat(r.stopFile)
	return err == nil
}

// idleUntil waits for deadline, re-reading the working set meanwhile and
// watching for the stop file.
func (r *retoucher) idleUntil(ctx context.Context, deadline time.Time) error {
	if r.rate == 0 && r.stopFile == "" {
		return sleepUntil(ctx, deadline)
	}
	for {
		now := time.Now()
		if !now.Before(deadline) {
			return ctx.Err()
		}
		if r.stopRequested() {
			return errStopped
		}
		if r.rate > 0 {
			r.step(now)
		}
		if err := sleepUntil(ctx, minTime(deadline, time.Now().Add(retouchTick))); err != nil {
			return err
		}
	}
}

func (r *retoucher) step(now time.Time) {
	// Time spent resizing is not owed: the re-reads pace with the clock
	// while the replay waits, and never catch up in a burst.
	dt := min(now.Sub(r.last), 2*retouchTick)
	r.last = now
	a, f := r.anon.Pages(), 0
	if r.file != nil {
		f = r.file.Pages()
	}
	r.owed += dt.Seconds() * r.rate * float64(a+f)
	n := int(r.owed)
	if n == 0 || a+f == 0 {
		return
	}
	r.owed -= float64(n)
	na := n * a / (a + f)
	t0 := time.Now()
	if na > 0 {
		r.anonNext = r.anon.Retouch(r.anonNext, na)
	}
	if n-na > 0 && f > 0 {
		r.fileNext = r.file.Retouch(r.fileNext, n-na)
	}
	d := time.Since(t0)
	r.last = time.Now()
	r.busy += d
	r.maxBatch = max(r.maxBatch, d)
	r.pages += int64(n)
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
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
