// Package run owns executing an experiment: for every planned run it checks
// the machine is clean, builds the parent and session cgroups, applies the
// arm (Static limits, NoLimit, the HighOnly userspace monitor or the BPF
// policy through the real plugin/hook), starts the session containers at a
// common barrier, samples them, collects what the kernel and the runtime
// say about each session, and cleans up, also on SIGINT/SIGTERM.
package run

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/agentcg/agentcg/cgroup"
	"github.com/agentcg/agentcg/experiment/config"
	"github.com/agentcg/agentcg/experiment/contention"
	"github.com/agentcg/agentcg/experiment/results"
	"github.com/agentcg/agentcg/experiment/runtime"
	"github.com/agentcg/agentcg/policy"
	"github.com/agentcg/agentcg/replayimage/trace"
)

// Orchestrator runs one experiment into Dir.
type Orchestrator struct {
	Cfg      config.Config // MemScale and ParentLimitBytes already decided
	Dir      string        // results/<id>
	Runtime  runtime.Runtime
	Enforcer Enforcer // nil when no BPF arm is planned
	Tree     Tree
	OutRoot  string // host folder for the replays' result files (bind-mounted)
	// TraceDir is the host folder of the traces; it is mounted read-only
	// into every session container at TraceMount, so a config may name
	// traces the image does not hold.
	TraceDir string
	Progress *Progress // nil: no progress report
	Log      *slog.Logger
	// Zram sets up the swap regime's device (nil: swap.device existing).
	Zram     *Zram
	Estimate contention.Estimate

	// Failures counts runs of this Execute that could not be measured.
	Failures int
	// SwapDevice is what the swap regime ran on, for env.json.
	SwapDevice *results.SwapDevice

	traces  map[string]*trace.Trace
	periods map[string]float64
	plan    *contention.Plan
	files   *ContentFiles
}

// Mount points inside the session containers.
const (
	TraceMount = "/agentcg-traces"
	FileMount  = "/agentcg-file"
	OutMount   = "/out"
)

// MaxConsecutiveFailures stops an experiment whose runs all fail.
const MaxConsecutiveFailures = 5

// Prepare loads the traces and computes the contention plan the runs use
// for their windows and contention windows.
func (o *Orchestrator) Prepare() (*contention.Plan, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.TraceDir == "" {
		o.TraceDir = o.Cfg.TraceDir
	}
	var err error
	if o.traces, err = contention.LoadTraces(o.TraceDir, o.Cfg.Sessions); err != nil {
		return nil, err
	}
	if o.periods, err = contention.Periods(o.Cfg, o.traces); err != nil {
		return nil, err
	}
	if o.plan, err = contention.Compute(o.Cfg, o.traces, o.Cfg.MemScale, "as run", o.Estimate); err != nil {
		return nil, err
	}
	return o.plan, nil
}

// Execute runs every planned run not yet finished in Dir, in plan order.
// It returns ctx's error when interrupted; finished runs stay on disk.
func (o *Orchestrator) Execute(ctx context.Context) error {
	if o.plan == nil {
		if _, err := o.Prepare(); err != nil {
			return err
		}
	}
	if err := o.writeToolCalls(); err != nil {
		return err
	}
	plan := o.Cfg.Plan(o.periods)
	done := map[int]bool{}
	var pending []config.Planned
	for i, pl := range plan {
		if results.Finished(o.Dir, pl.ID) {
			done[i] = true
		} else {
			pending = append(pending, pl)
		}
	}
	teardown, err := o.prepareRegimes(ctx, pending)
	defer func() {
		if terr := teardown(); terr != nil {
			o.Log.Error("tear down the reclaim regimes", "err", terr)
		}
	}()
	if err != nil {
		return err
	}
	if o.Progress != nil {
		exp := make([]float64, len(plan))
		for i, pl := range plan {
			exp[i] = o.expected(pl)
		}
		o.Progress.Begin(exp, done)
		defer o.Progress.Finish()
	}
	consecutive := 0
	for i, pl := range plan {
		if done[i] {
			continue
		}
		stop := func() {}
		if o.Progress != nil {
			stop = o.Progress.Run(i, fmt.Sprintf("%s (block %d)", pl.Point.Label, pl.Block))
		}
		rd, err := o.runOne(ctx, pl)
		stop()
		if ctx.Err() != nil {
			return fmt.Errorf("run %s: %w", pl.ID, ctx.Err())
		}
		if err != nil {
			// Record it, go on with the other arms, and stop only when
			// nothing works any more.
			o.Failures++
			consecutive++
			o.Log.Error("run failed", "run", pl.ID, "err", err)
			if werr := results.WriteJSON(filepath.Join(results.RunDir(o.Dir, pl.ID), results.FailedFile),
				results.Failed{ID: pl.ID, Label: pl.Point.Label, Error: err.Error()}); werr != nil {
				return werr
			}
			if consecutive >= MaxConsecutiveFailures {
				return fmt.Errorf("%d runs in a row failed, the last (%s) with: %w", consecutive, pl.ID, err)
			}
			continue
		}
		consecutive = 0
		o.Log.Info("run finished", "run", pl.ID, "setup_s", round2(rd.Run.SetupS), "teardown_s", round2(rd.Run.TeardownS),
			"excluded", rd.Run.Excluded, "reason", rd.Run.ExcludeReason, "error", rd.Run.Error)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(o.Cfg.CooldownS * float64(time.Second))):
		}
	}
	return nil
}

// expected is a run's planned wall time with the setup estimate.
func (o *Orchestrator) expected(pl config.Planned) float64 {
	l, err := contention.RunLength(o.Cfg, pl.Point.Sessions, o.traces)
	if err != nil {
		l = o.plan.RunS
	}
	return l + o.Estimate.RunS + o.Estimate.SessionS*float64(len(pl.Point.Sessions)) + o.Cfg.CooldownS
}

// prepareRegimes sets up what the pending runs' regimes need: the swap
// device, the file regime's content files. The returned func undoes it.
func (o *Orchestrator) prepareRegimes(ctx context.Context, pending []config.Planned) (func() error, error) {
	var undo []func() error
	teardown := func() error {
		var errs []error
		for i := len(undo) - 1; i >= 0; i-- {
			errs = append(errs, undo[i]())
		}
		return errors.Join(errs...)
	}
	need := map[string]bool{}
	for _, pl := range pending {
		need[pl.Point.Reclaim] = true
	}
	limit := int64(float64(o.Cfg.ParentLimitBytes) * o.Cfg.MemScale)
	if need[config.ReclaimSwap] {
		switch {
		case o.Cfg.Swap.Device == "existing":
			n := ActiveSwapBytes()
			if n == 0 {
				return teardown, errors.New("swap regime with swap.device existing, but no swap is active (/proc/swaps)")
			}
			o.SwapDevice = &results.SwapDevice{Device: "existing", SizeBytes: n}
		case ActiveSwapBytes() > 0:
			return teardown, errors.New("swap regime: a swap device is already active; turn it off or set swap.device: existing")
		case o.Zram != nil:
			size := o.Cfg.Swap.SizeBytes
			if size == 0 {
				size = 2 * limit
			}
			dev, err := o.Zram.Setup(ctx, size, o.Cfg.Swap.Algorithm)
			undo = append(undo, o.Zram.Teardown)
			if err != nil {
				return teardown, fmt.Errorf("swap regime: %w", err)
			}
			o.SwapDevice = &dev
			o.Log.Info("swap regime: zram on", "device", dev.Device, "size", dev.SizeBytes, "algorithm", dev.Algorithm)
		default:
			return teardown, errors.New("swap regime without a swap device")
		}
	}
	if need[config.ReclaimFile] {
		sizes := map[string]int64{}
		ps := int64(os.Getpagesize())
		for _, s := range o.Cfg.Sessions {
			w := s.Window
			if w.Loop {
				w.Length = 1
			}
			pts, err := o.traces[s.Trace].Schedule(trace.Window{From: w.From, To: w.To, Loop: w.Loop, Length: max(w.Length, 0)})
			if err != nil {
				return teardown, err
			}
			var peak int64
			for _, p := range pts {
				peak = max(peak, p.Bytes)
			}
			// The window's whole span, looped or not, plus a page of slack.
			for _, sm := range o.traces[s.Trace].Samples {
				if sm.T >= w.From && (w.To == 0 || sm.T <= w.To) {
					peak = max(peak, sm.UsedBytes)
				}
			}
			sizes[s.Name] = (int64(math.Ceil(float64(peak)*o.Cfg.MemScale*o.Cfg.FileShare))/ps + 2) * ps
		}
		f, err := PrepareFiles(o.Cfg.ScratchDir, sizes, o.Cfg.RandomShare)
		if err != nil {
			return teardown, fmt.Errorf("file regime: %w", err)
		}
		o.files = f
		undo = append(undo, f.Remove)
	}
	return teardown, nil
}

// writeToolCalls stores each trace's tool calls for the figures.
func (o *Orchestrator) writeToolCalls() error {
	for _, s := range o.Cfg.Sessions {
		t := o.traces[s.Trace]
		tc := results.ToolCalls{Trace: s.Trace, Info: results.TraceInfo{Trace: s.Trace, DurationS: t.Duration(), PeakBytes: t.Peak()}}
		for _, c := range t.ToolCalls {
			tc.T = append(tc.T, c.T)
			tc.Tools = append(tc.Tools, c.Tool)
		}
		if err := results.WriteJSON(filepath.Join(o.Dir, "toolcalls", s.Trace+".json"), tc); err != nil {
			return err
		}
	}
	return nil
}

// Clean removes leftovers of earlier runs: labelled containers and pods,
// the experiment's cgroup tree and policy pins.
func (o *Orchestrator) Clean(ctx context.Context) error {
	var errs []error
	if n, err := o.Runtime.RemoveAll(ctx); err != nil {
		errs = append(errs, err)
	} else if n > 0 {
		o.Log.Warn("removed leftover containers", "count", n)
	}
	if o.Tree.Exists() {
		// The runtime removes container cgroups asynchronously (slowly
		// under TCG); a process still in the tree after the runtime let go
		// of it is ours to kill.
		var err error
		for i := range 150 {
			if err = o.Tree.Remove(); err == nil {
				break
			}
			if i == 50 {
				_ = cgroup.Write(o.Tree.ParentDir(), "cgroup.kill", "1")
			}
			time.Sleep(200 * time.Millisecond)
		}
		errs = append(errs, err)
	}
	if o.Enforcer != nil {
		errs = append(errs, o.Enforcer.DetachAll(ctx))
	}
	return errors.Join(errs...)
}

// CheckClean verifies the state a run must start from.
func (o *Orchestrator) CheckClean(ctx context.Context) error {
	if o.Tree.Exists() {
		return fmt.Errorf("not clean: cgroup %s still exists", o.Tree.ParentDir())
	}
	if n, err := o.Runtime.RemoveAll(ctx); err != nil || n > 0 {
		return fmt.Errorf("not clean: %d labelled containers were still there (%v)", n, err)
	}
	pins, err := PinsLeft(o.Cfg.Policy.WithDefaults().PinDir)
	if err != nil {
		return fmt.Errorf("not clean: pins: %w", err)
	}
	if len(pins) > 0 {
		return fmt.Errorf("not clean: %d policy pins left: %s", len(pins), strings.Join(pins, ", "))
	}
	return nil
}

// session is one container of a run while it runs.
type session struct {
	cfg      config.Session
	window   trace.Window
	dir      string // session cgroup
	id       string
	leaf     string
	leafID   uint64
	exit     runtime.Exit
	err      error
	timedOut bool
}

// limits returns the run's parent memory.max (-1 for Uncontended), the
// limit its gate and utilisation refer to, and the parent's swap.max.
func (o *Orchestrator) limits(pt config.Point) (limit, gate, swapMax int64) {
	gate = int64(float64(o.Cfg.ParentLimitBytes) * pt.MemScale)
	limit = gate
	if pt.Arm == config.ArmUncontended {
		limit = cgroup.Max
	}
	if pt.Reclaim == config.ReclaimSwap {
		swapMax = cgroup.Max
	}
	return limit, gate, swapMax
}

func (o *Orchestrator) runOne(ctx context.Context, pl config.Planned) (rd results.RunData, err error) {
	pt := pl.Point
	cfg := o.Cfg
	limit, gateLimit, swapMax := o.limits(pt)
	runS, err := contention.RunLength(cfg, pt.Sessions, o.traces)
	if err != nil {
		return rd, err
	}
	wins, err := contention.Windows(cfg, pt.Sessions, o.traces, pl.Offsets, runS)
	if err != nil {
		return rd, err
	}
	rdir := results.RunDir(o.Dir, pl.ID)
	if err := os.RemoveAll(rdir); err != nil { // a half-written earlier attempt
		return rd, err
	}
	if err := os.MkdirAll(rdir, 0o755); err != nil {
		return rd, err
	}
	if err := o.Clean(ctx); err != nil {
		return rd, fmt.Errorf("clean before run: %w", err)
	}
	if err := o.CheckClean(ctx); err != nil {
		return rd, err
	}
	var names []string
	for _, s := range pt.Sessions {
		names = append(names, s.Name)
	}
	if err := o.Tree.Create(limit, swapMax, names); err != nil {
		return rd, err
	}
	sessions := make([]*session, len(pt.Sessions))
	for i, s := range pt.Sessions {
		sessions[i] = &session{cfg: s, dir: o.Tree.SessionDir(s.Name), window: wins[s.Name]}
	}
	outDir := filepath.Join(o.OutRoot, pl.ID)
	// Cleanup runs whatever happens, with its own deadline: an interrupt
	// must still leave no containers, cgroups or pins behind.
	cleaned := false
	cleanup := func() error {
		if cleaned {
			return nil
		}
		cleaned = true
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		var errs []error
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, s := range sessions {
			if s.id != "" {
				wg.Go(func() {
					err := o.Runtime.Remove(cctx, s.id)
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				})
			}
		}
		wg.Wait()
		if o.Enforcer != nil && config.IsBPF(pt.Arm) {
			errs = append(errs, o.Enforcer.Done(cctx))
		}
		errs = append(errs, o.Clean(cctx), os.RemoveAll(outDir))
		return errors.Join(errs...)
	}
	defer func() {
		if cerr := cleanup(); cerr != nil {
			o.Log.Error("cleanup after run", "run", pl.ID, "err", cerr)
			if err == nil {
				err = fmt.Errorf("cleanup: %w", cerr)
			}
		}
	}()

	// The arm and the regime, on the session cgroups.
	for _, s := range sessions {
		sm := int64(0)
		if pt.Reclaim == config.ReclaimSwap {
			sm = cfg.Swap.SessionMaxBytes
		}
		if err := cgroup.Write(s.dir, "memory.swap.max", cgroup.FormatBytes(sm)); err != nil {
			return rd, err
		}
	}
	switch pt.Arm {
	case config.ArmStatic:
		per := limit / int64(len(cfg.Sessions))
		for _, s := range sessions {
			if err := cgroup.Write(s.dir, "memory.max", cgroup.FormatBytes(per)); err != nil {
				return rd, err
			}
		}
	case config.ArmStaticPriority:
		for s, v := range o.priorityLimits(pt, limit) {
			if err := cgroup.Write(o.Tree.SessionDir(s), "memory.max", cgroup.FormatBytes(v)); err != nil {
				return rd, err
			}
		}
	case config.ArmBPF, config.ArmBPFSeed:
		if o.Enforcer == nil {
			return rd, errors.New("BPF arm without a BPF enforcer")
		}
		if err := o.Enforcer.Prepare(ctx, pt, rdir); err != nil {
			return rd, err
		}
	}
	if pt.Reclaim == config.ReclaimFile && o.files != nil {
		if err := o.files.Drop(); err != nil {
			return rd, err
		}
	}
	if err := os.MkdirAll(outDir, 0o777); err != nil {
		return rd, err
	}

	// Containers: created and started in parallel; every replay maps its
	// memory, says it is ready, and waits for the start time.
	setupStart := time.Now()
	var ready []string
	for _, s := range sessions {
		ready = append(ready, filepath.Join(outDir, s.cfg.Name+".ready"))
	}
	// Creating and starting are not interrupted half-way: a container
	// whose create RPC was cancelled may still appear in the runtime, where
	// nothing would remove it. An interrupt is acted on once all are up.
	var cw sync.WaitGroup
	uctx, cancelUp := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
	defer cancelUp()
	for i, s := range sessions {
		spec := o.spec(pl, pt, s, i, outDir)
		cw.Go(func() {
			id, err := o.Runtime.Create(uctx, spec)
			s.id, s.err = id, err
			if err == nil {
				s.err = o.Runtime.Start(uctx, id)
			}
		})
	}
	cw.Wait()
	if ctx.Err() != nil {
		return rd, ctx.Err()
	}
	for _, s := range sessions {
		if s.err != nil {
			return rd, s.err
		}
		var err error
		if s.leaf, err = waitLeaf(ctx, o.Tree, s.cfg.Name, s.id); err != nil {
			return rd, err
		}
		s.leafID, _ = cgroup.ID(s.leaf)
	}
	if config.IsBPF(pt.Arm) {
		if err := o.checkAttached(ctx, sessions); err != nil {
			return rd, err
		}
	}
	var mon *Monitor
	if pt.Arm == config.ArmHighOnly {
		pc := pt.Policy
		mon = &Monitor{Root: o.Tree.Root, GatePct: pc.GatePct, Poll: time.Duration(pt.PollMs) * time.Millisecond,
			Activity: policy.GrowthSignal{Window: time.Duration(pc.HighActiveWindowMs) * time.Millisecond, MinGrowth: uint64(float64(pc.HighGrowthBytes) * pt.MemScale)},
			Floor:    int64(float64(cfg.HighOnlyFloorB) * pt.MemScale), Log: o.Log}
		for _, s := range sessions {
			if s.cfg.Role == results.RoleHigh {
				mon.High = []string{s.dir, s.leaf}
			} else {
				mon.Lows = append(mon.Lows, s.dir)
			}
		}
		if err := mon.Protect(); err != nil {
			return rd, err
		}
	}
	if err := waitFiles(ctx, ready, setupStart.Add(time.Duration(cfg.ReadyTimeoutS*float64(time.Second)))); err != nil {
		exits := ""
		for _, s := range sessions {
			if st, err := o.Runtime.Wait(context.Background(), s.id); err == nil && !st.FinishedAt.IsZero() {
				exits += fmt.Sprintf(" %s exited %d (%s);", s.cfg.Name, st.Code, st.Reason)
			}
		}
		return rd, fmt.Errorf("replays: %w (ready_timeout_s %v)%s", err, cfg.ReadyTimeoutS, exits)
	}
	var zram0 results.Zram
	if o.Zram != nil && pt.Reclaim == config.ReclaimSwap {
		zram0 = o.Zram.Stat()
	}
	// The start is announced a little ahead so every replay, polling every
	// 20 ms, sees it before it is due.
	startAt := time.Now().Add(500 * time.Millisecond)
	if err := writeStart(filepath.Join(outDir, "go"), startAt); err != nil {
		return rd, err
	}
	setupS := time.Since(setupStart).Seconds()

	// Measure.
	sctx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	smp := &Sampler{RunID: pl.ID, Zero: startAt, Period: time.Duration(cfg.SampleMs) * time.Millisecond, StatsEvery: 5,
		Cgroups: []Named{{"parent", o.Tree.ParentDir()}}}
	for _, s := range sessions {
		smp.Cgroups = append(smp.Cgroups, Named{s.cfg.Name, s.dir})
	}
	if config.IsBPF(pt.Arm) {
		smp.Stats = o.Enforcer.Stats
	}
	var wg sync.WaitGroup
	wg.Go(func() { smp.Run(sctx) })
	// The swap device at its fullest during the run: what was swapped
	// out and how well it compressed (at the end the pages are gone).
	var zpeak results.Zram
	if o.Zram != nil && pt.Reclaim == config.ReclaimSwap {
		wg.Go(func() {
			t := time.NewTicker(250 * time.Millisecond)
			defer t.Stop()
			for {
				if z := o.Zram.Stat(); z.OrigBytes-zram0.OrigBytes > zpeak.OrigBytes {
					zpeak = *zramDiff(zram0, z)
					if zpeak.ComprBytes > 0 {
						zpeak.Ratio = float64(zpeak.OrigBytes) / float64(zpeak.ComprBytes)
					}
				}
				select {
				case <-sctx.Done():
					return
				case <-t.C:
				}
			}
		})
	}
	if mon != nil {
		mctx, cancel := context.WithCancel(sctx)
		defer cancel()
		// The monitor starts with the replays, so its activity window
		// sees HIGH's first growth.
		wg.Go(func() {
			if sleepCtx(mctx, time.Until(startAt)) == nil {
				mon.Run(mctx)
			}
		})
	}
	wctx, cancelWait := context.WithDeadline(ctx, startAt.Add(time.Duration((runS+cfg.RunTimeoutS)*float64(time.Second))))
	defer cancelWait()
	// When every session that sets the run's length has exited, the
	// looping ones get the tail and then the stop file.
	var ww sync.WaitGroup
	var leaders sync.WaitGroup
	for _, s := range sessions {
		if !s.window.Loop {
			leaders.Add(1)
		}
		ww.Go(func() {
			s.exit, s.err = o.Runtime.Wait(wctx, s.id)
			if !s.window.Loop {
				leaders.Done()
			}
		})
	}
	ww.Go(func() {
		leaders.Wait()
		if sleepCtx(wctx, time.Duration(cfg.TailS*float64(time.Second))) == nil || wctx.Err() != nil {
			if err := os.WriteFile(filepath.Join(outDir, "stop"), nil, 0o644); err != nil {
				o.Log.Warn("stop file", "run", pl.ID, "err", err)
			}
		}
	})
	ww.Wait()
	if wctx.Err() != nil && ctx.Err() == nil {
		// Past the deadline: stop what still runs (SIGTERM writes a partial
		// result), and count it as not having finished, which is an
		// outcome (a thrashing HIGH), not a reason to drop the run.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		for _, s := range sessions {
			if s.err == nil {
				continue
			}
			s.timedOut = true
			if err := o.Runtime.Stop(sctx, s.id, 10*time.Second); err != nil {
				o.Log.Warn("stop after the deadline", "run", pl.ID, "session", s.cfg.Name, "err", err)
			}
			s.exit, s.err = o.Runtime.Wait(sctx, s.id)
		}
		cancel()
		o.Log.Warn("run deadline passed: sessions stopped", "run", pl.ID, "deadline_s", runS+cfg.RunTimeoutS)
	}
	stopSampling()
	wg.Wait()
	if ctx.Err() != nil {
		return rd, ctx.Err()
	}

	// Collect, while the session cgroups still exist.
	rd.Run = results.Run{ID: pl.ID, Arm: pt.Arm, Reclaim: pt.Reclaim, Label: pt.Label, Params: pt.Params, Index: pl.Block, Block: pl.Block,
		Position: pl.Position, Order: pl.Order, Offsets: pl.Offsets, Speed: cfg.Speed, MemScale: pt.MemScale, Runtime: o.Runtime.Name(),
		StartUnix: unixS(startAt), ParentPath: o.Tree.ParentDir(), ParentLimit: limit, GateLimit: gateLimit, PlannedS: runS,
		SetupS: setupS, LoadAvg: loadAvg()}
	if len(pt.Sessions) > 1 && pl.Block < len(o.plan.Blocks) {
		b := o.plan.Blocks[pl.Block]
		rd.Run.ContentionStartS, rd.Run.ContentionEndS = b.ContentionStartS, b.ContentionEndS
	}
	rd.Run.Parent = ReadCgroup(o.Tree.ParentDir())
	rd.Run.ParentPeak = rd.Run.Parent.PeakBytes
	if o.Zram != nil && pt.Reclaim == config.ReclaimSwap {
		rd.Run.Zram = &zpeak
	}
	ctrs := smp.Counters()
	end := unixS(startAt)
	for _, s := range sessions {
		rs := o.collect(s, outDir, rdir, startAt, ctrs, config.IsBPF(pt.Arm))
		end = max(end, rs.ActiveEnd)
		rd.Sessions = append(rd.Sessions, rs)
	}
	rd.Run.EndUnix = end
	samples := smp.Samples()
	rd.Run.Utilisation = Utilisation(samples, "parent", gateLimit, 0, end-unixS(startAt))
	if mon != nil {
		st := mon.Stats
		rd.Run.Monitor = &st
		rd.Run.Params = cloneWith(rd.Run.Params, "highonly_tightenings", strconv.Itoa(st.Tightenings))
	}
	results.CheckOverlap(&rd)
	if rd.Run.Error != "" && !rd.Run.Excluded {
		rd.Run.Excluded, rd.Run.ExcludeReason = true, rd.Run.Error
	}
	if err := writeSeries(filepath.Join(rdir, "timeseries.csv"), samples); err != nil {
		return rd, err
	}
	t0 := time.Now()
	if err := cleanup(); err != nil {
		return rd, fmt.Errorf("cleanup: %w", err)
	}
	rd.Run.TeardownS = time.Since(t0).Seconds()
	return rd, results.SaveRun(o.Dir, rd)
}

// spec is session i's container.
func (o *Orchestrator) spec(pl config.Planned, pt config.Point, s *session, i int, outDir string) runtime.Spec {
	binds := []runtime.Bind{{Host: outDir, Container: OutMount}, {Host: absPath(o.TraceDir), Container: TraceMount, ReadOnly: true}}
	if pt.Reclaim == config.ReclaimFile && o.files != nil {
		binds = append(binds, runtime.Bind{Host: o.files.Paths[s.cfg.Name], Container: FileMount, ReadOnly: true})
	}
	spec := runtime.Spec{
		Name:         "agentcg-" + pl.ID + "-" + s.cfg.Name,
		Image:        o.Cfg.Image,
		Args:         o.replayArgs(pt, s, i),
		CgroupParent: o.Tree.RuntimeParent(s.cfg.Name),
		Binds:        binds,
		LogDir:       filepath.Join(outDir, "logs"),
	}
	if config.IsBPF(pt.Arm) {
		spec.Annotations = map[string]string{"agentcg.priority": s.cfg.Role}
	}
	return spec
}

// replayArgs is the replay command line of session i.
func (o *Orchestrator) replayArgs(pt config.Point, s *session, i int) []string {
	cfg := o.Cfg
	w := s.window
	a := []string{"run", TraceMount + "/" + s.cfg.Trace, "-q",
		"--speed", ftoa(cfg.Speed), "--mem-scale", ftoa(pt.MemScale),
		"--window", ftoa(w.From) + ":" + ftoa(w.To), "--offset", ftoa(w.Offset),
		"--delay", ftoa(s.cfg.DelayS),
		"--random-share", ftoa(cfg.RandomShare), "--seed", strconv.Itoa(i + 1), "--retouch", ftoa(cfg.RetouchPerS),
		"--ready-file", OutMount + "/" + s.cfg.Name + ".ready", "--start-file", OutMount + "/go",
		"--out", OutMount + "/" + s.cfg.Name + ".json"}
	if w.Loop {
		// A looping session plays until the orchestrator writes the stop
		// file (the sessions that set the run's length are done, plus the
		// tail); the duration only caps it.
		a = append(a, "--loop", "--duration", ftoa(math.Ceil(3*w.Length/cfg.Speed+60)), "--stop-file", OutMount+"/stop")
	}
	if pt.Reclaim == config.ReclaimFile && o.files != nil {
		a = append(a, "--file", FileMount, "--file-share", ftoa(cfg.FileShare))
	}
	return a
}

// priorityLimits is Static-Priority: each LOW gets the largest peak it plays
// in any block (scaled, plus the container overhead), HIGH the rest of the
// parent limit.
func (o *Orchestrator) priorityLimits(pt config.Point, limit int64) map[string]int64 {
	out := map[string]int64{}
	rest := limit
	var high string
	for _, s := range pt.Sessions {
		if s.Role == results.RoleHigh {
			high = s.Name
			continue
		}
		var peak int64
		for _, sp := range o.plan.Sessions {
			if sp.Name == s.Name {
				peak = int64(float64(sp.MaxPeakBytes)/o.plan.MemScale*pt.MemScale) + o.Cfg.SessionOverheadBytes
			}
		}
		out[s.Name] = peak
		rest -= peak
	}
	out[high] = max(rest, int64(os.Getpagesize()))
	return out
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func round2(v float64) float64 { return math.Round(v*100) / 100 }

func (o *Orchestrator) collect(s *session, outDir, rdir string, startAt time.Time, ctrs map[uint64]policy.Counters, bpfArm bool) results.Session {
	rs := results.Session{Name: s.cfg.Name, Role: s.cfg.Role, Trace: s.cfg.Trace, ContainerID: s.id, CgroupPath: s.leaf, CgroupID: s.leafID,
		ExitCode: s.exit.Code, MemoryMax: cgroup.Max, MemoryHigh: cgroup.Max, DelayS: s.cfg.DelayS, TimedOut: s.timedOut,
		Window: results.Window{From: s.window.From, To: s.window.To, Loop: s.window.Loop, Offset: s.window.Offset, Length: s.window.Length}}
	if s.exit.Code > 128 {
		rs.Signal = s.exit.Code - 128
	}
	// The session cgroup outlives the container: hierarchical counters of
	// the whole session, fresh for this run (created empty).
	rs.Kernel = ReadCgroup(s.dir)
	for _, e := range rs.Kernel.ReadErrors {
		o.Log.Debug("session cgroup", "session", s.cfg.Name, "err", e)
	}
	rs.Events = rs.Kernel.Events
	rs.PeakBytes = rs.Kernel.PeakBytes
	rs.MemoryMax = rs.Kernel.MemoryMax
	switch {
	case rs.Events["oom_kill"] > 0:
		rs.OOMKilled, rs.OOMSource = true, "memory.events oom_kill"
	case s.exit.OOMKilled:
		rs.OOMKilled, rs.OOMSource = true, "runtime ("+s.exit.Reason+")"
	}
	if b, err := os.ReadFile(filepath.Join(outDir, s.cfg.Name+".json")); err == nil {
		var r results.Replay
		if err := json.Unmarshal(b, &r); err == nil {
			rs.Replay = &r
		} else {
			o.Log.Warn("replay result", "session", s.cfg.Name, "err", err)
		}
		os.WriteFile(filepath.Join(rdir, "replay-"+s.cfg.Name+".json"), b, 0o644)
	}
	// What the replay printed (errors only: it runs with -q).
	if logs, _ := filepath.Glob(filepath.Join(outDir, "logs", "*-"+s.cfg.Name+".log")); len(logs) == 1 {
		if b, err := os.ReadFile(logs[0]); err == nil && len(b) > 0 {
			os.WriteFile(filepath.Join(rdir, "log-"+s.cfg.Name+".txt"), b, 0o644)
		}
	}
	if bpfArm {
		// The link was checked before the barrier; a cgroup the programs
		// never ran for (no reclaim reached HIGH, say) has no map entry yet,
		// which means zero counts, not missing ones.
		c := ctrs[s.leafID]
		rs.Counters = &c
	}
	// Active interval: the replay's own, else the container's life after the barrier.
	if r := rs.Replay; r != nil && r.StartUnix == 0 && !r.StartedAt.IsZero() {
		r.StartUnix = unixS(r.StartedAt)
		r.EndUnix = r.StartUnix + r.CompletionS
	}
	if r := rs.Replay; r != nil && r.StartUnix > 0 && r.EndUnix >= r.StartUnix {
		rs.ActiveStart, rs.ActiveEnd = r.StartUnix, r.EndUnix
	} else {
		rs.ActiveStart = max(unixS(startAt), unixS(s.exit.StartedAt))
		rs.ActiveEnd = max(rs.ActiveStart, unixS(s.exit.FinishedAt))
	}
	return rs
}

// checkAttached verifies the plugin/hook attached every BPF session's leaf
// cgroup with its role before the barrier opens. The plugin finishes an
// attach in the background after StartContainer, so it waits up to 20 s.
func (o *Orchestrator) checkAttached(ctx context.Context, sessions []*session) error {
	var missing *session
	for range 100 {
		links, err := o.Enforcer.Links(ctx)
		if err != nil {
			return fmt.Errorf("list policy links: %w", err)
		}
		missing = nil
		for _, s := range sessions {
			found := false
			for _, l := range links {
				if l.CgroupID == s.leafID && string(l.Priority) == s.cfg.Role && !l.Orphan {
					found = true
				}
			}
			if !found {
				missing = s
				break
			}
		}
		if missing == nil {
			return nil
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("session %s (cgroup %s, id %d): no %s policy link: the plugin/hook did not attach", missing.cfg.Name, missing.leaf, missing.leafID, missing.cfg.Role)
}

func waitLeaf(ctx context.Context, t Tree, session, id string) (string, error) {
	var err error
	for range 50 {
		var leaf string
		if leaf, err = t.FindLeaf(session, id); err == nil {
			return leaf, nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return "", err
}

func writeSeries(path string, ss []results.Sample) error {
	var b strings.Builder
	b.WriteString(results.TimeseriesHeader + "\n")
	for _, s := range ss {
		b.WriteString(s.Row() + "\n")
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

func cloneWith(m map[string]string, k, v string) map[string]string {
	out := map[string]string{k: v}
	for kk, vv := range m {
		out[kk] = vv
	}
	return out
}

func unixS(t time.Time) float64 {
	if t.IsZero() || t.Unix() <= 0 {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}

func ftoa(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
