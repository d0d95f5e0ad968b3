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
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/agentcg/agentcg/cgroup"
	"github.com/agentcg/agentcg/experiment/config"
	"github.com/agentcg/agentcg/experiment/results"
	"github.com/agentcg/agentcg/experiment/runtime"
	"github.com/agentcg/agentcg/policy"
	"github.com/agentcg/agentcg/replayimage/trace"
)

// Orchestrator runs one experiment into Dir.
type Orchestrator struct {
	Cfg      config.Config
	Dir      string // results/<id>
	Runtime  runtime.Runtime
	Enforcer Enforcer // nil when no BPF arm is planned
	Tree     Tree
	OutRoot  string // host folder for the replays' result files (bind-mounted)
	// ReplayStartAt: the replay image understands --start-at (contract 1).
	ReplayStartAt bool
	Progress      io.Writer // nil: no progress bar
	Log           *slog.Logger

	// Failures counts runs of this Execute that could not be measured.
	Failures int

	expected map[string]float64 // trace → ideal seconds at the config's speed
	// setup is the longest time so far from the first container create to
	// "every session ready": the barrier is sized from it, since container
	// start times vary by orders of magnitude between bare metal and TCG.
	setup time.Duration
}

// errBarrierMissed marks a run whose containers were not ready by the
// barrier; it is retried once with a barrier sized from what was observed.
var errBarrierMissed = errors.New("barrier missed")

// barrier is the delay from the first create to the common start.
func (o *Orchestrator) barrier() time.Duration {
	return max(time.Duration(o.Cfg.BarrierS*float64(time.Second)), o.setup*3/2+2*time.Second)
}

// MaxConsecutiveFailures stops an experiment whose runs all fail.
const MaxConsecutiveFailures = 5

// Execute runs every planned run not yet finished in Dir, in plan order.
// It returns ctx's error when interrupted; finished runs stay on disk.
func (o *Orchestrator) Execute(ctx context.Context) error {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if err := o.loadTraces(); err != nil {
		return err
	}
	plan := o.Cfg.Plan()
	var bar *progressbar.ProgressBar
	if o.Progress != nil {
		bar = progressbar.NewOptions(len(plan), progressbar.OptionSetWriter(o.Progress), progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true), progressbar.OptionSetWidth(20), progressbar.OptionShowElapsedTimeOnFinish(),
			progressbar.OptionSetDescription("experiment"))
	}
	consecutive := 0
	for i, pl := range plan {
		if results.Finished(o.Dir, pl.ID) {
			if bar != nil {
				bar.Add(1)
			}
			continue
		}
		stop := o.describe(bar, i, len(plan), pl)
		rd, err := o.runOne(ctx, pl)
		if errors.Is(err, errBarrierMissed) && ctx.Err() == nil {
			o.Log.Warn("retrying with a longer barrier", "run", pl.ID, "err", err, "barrier", o.barrier())
			rd, err = o.runOne(ctx, pl)
		}
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
			if bar != nil {
				bar.Add(1)
			}
			continue
		}
		consecutive = 0
		o.Log.Info("run finished", "run", pl.ID, "excluded", rd.Run.Excluded, "reason", rd.Run.ExcludeReason, "error", rd.Run.Error)
		if bar != nil {
			bar.Add(1)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(o.Cfg.CooldownS * float64(time.Second))):
		}
	}
	if bar != nil {
		bar.Finish()
		fmt.Fprintln(o.Progress)
	}
	return nil
}

// describe keeps the bar's description on the current run with its own ETA.
func (o *Orchestrator) describe(bar *progressbar.ProgressBar, i, n int, pl config.Planned) func() {
	if bar == nil {
		return func() {}
	}
	want := 0.0
	for _, s := range pl.Point.Sessions {
		want = max(want, o.expected[s.Trace])
	}
	want += o.Cfg.BarrierS
	start := time.Now()
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			el := time.Since(start).Seconds()
			bar.Describe(fmt.Sprintf("run %d/%d %s r%d: %.0fs, ~%.0fs left", i+1, n, pl.Point.Label, pl.Index, el, max(0, want-el)))
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(done) }
}

// loadTraces stores each trace's tool calls for the figures and learns the
// ideal duration at the configured speed. Missing host traces only cost
// the markers and the per-run ETA.
func (o *Orchestrator) loadTraces() error {
	o.expected = map[string]float64{}
	for _, s := range o.Cfg.Sessions {
		t, err := trace.Load(filepath.Join(o.Cfg.TraceDir, s.Trace), trace.DefaultOptions())
		if err != nil {
			o.Log.Warn("trace not readable on this side: no tool-call markers", "trace", s.Trace, "err", err)
			continue
		}
		o.expected[s.Trace] = t.Samples[len(t.Samples)-1].T / o.Cfg.Speed
		tc := results.ToolCalls{Trace: s.Trace, Info: results.TraceInfo{Trace: s.Trace, DurationS: t.Samples[len(t.Samples)-1].T}}
		for _, smp := range t.Samples {
			tc.Info.PeakBytes = max(tc.Info.PeakBytes, smp.UsedBytes)
		}
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
		// The runtime removes container cgroups asynchronously.
		var err error
		for range 50 {
			if err = o.Tree.Remove(); err == nil {
				break
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
	cfg    config.Session
	dir    string // session cgroup
	id     string
	leaf   string
	leafID uint64
	exit   runtime.Exit
	err    error
}

func (o *Orchestrator) runOne(ctx context.Context, pl config.Planned) (rd results.RunData, err error) {
	pt := pl.Point
	cfg := o.Cfg
	limit := int64(float64(cfg.ParentLimitBytes) * pt.MemScale)
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
	if err := o.Tree.Create(limit, names); err != nil {
		return rd, err
	}
	sessions := make([]*session, len(pt.Sessions))
	for i, s := range pt.Sessions {
		sessions[i] = &session{cfg: s, dir: o.Tree.SessionDir(s.Name)}
	}
	outDir := filepath.Join(o.OutRoot, pl.ID)
	// Cleanup runs whatever happens, with its own deadline: an interrupt
	// must still leave no containers, cgroups or pins behind.
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		var errs []error
		for _, s := range sessions {
			if s.id != "" {
				errs = append(errs, o.Runtime.Remove(cctx, s.id))
			}
		}
		if o.Enforcer != nil && pt.Arm == config.ArmBPF {
			errs = append(errs, o.Enforcer.Done(cctx))
		}
		errs = append(errs, o.Clean(cctx), os.RemoveAll(outDir))
		if cerr := errors.Join(errs...); cerr != nil {
			o.Log.Error("cleanup after run", "run", pl.ID, "err", cerr)
			if err == nil {
				err = fmt.Errorf("cleanup: %w", cerr)
			}
		}
	}()

	// The arm.
	switch pt.Arm {
	case config.ArmStatic:
		per := limit / int64(len(cfg.Sessions))
		for _, s := range sessions {
			if err := cgroup.Write(s.dir, "memory.max", cgroup.FormatBytes(per)); err != nil {
				return rd, err
			}
		}
	case config.ArmBPF:
		if o.Enforcer == nil {
			return rd, errors.New("BPF arm without a BPF enforcer")
		}
		if err := o.Enforcer.Prepare(ctx, pt, rdir); err != nil {
			return rd, err
		}
	}
	if err := os.MkdirAll(outDir, 0o777); err != nil {
		return rd, err
	}

	// The barrier: with --start-at every replay sleeps until startAt, so
	// container start latency does not matter; without it, the containers
	// are created first and started together.
	setupStart := time.Now()
	startAt := setupStart.Add(o.barrier())
	for _, s := range sessions {
		args := []string{"run", "/traces/" + s.cfg.Trace, "--speed", ftoa(cfg.Speed), "--mem-scale", ftoa(pt.MemScale),
			"--out", "/out/" + s.cfg.Name + ".json"}
		if o.ReplayStartAt {
			args = append(args, "--start-at", strconv.FormatFloat(float64(startAt.UnixNano())/1e9, 'f', 3, 64))
		}
		spec := runtime.Spec{
			Name:         "agentcg-" + pl.ID + "-" + s.cfg.Name,
			Image:        cfg.Image,
			Args:         args,
			CgroupParent: o.Tree.RuntimeParent(s.cfg.Name),
			Binds:        []runtime.Bind{{Host: outDir, Container: "/out"}},
		}
		if pt.Arm == config.ArmBPF {
			spec.Annotations = map[string]string{"agentcg.priority": s.cfg.Role}
		}
		id, err := o.Runtime.Create(ctx, spec)
		if err != nil {
			return rd, err
		}
		s.id = id
	}
	if !o.ReplayStartAt {
		startAt = time.Now()
	}
	var sw sync.WaitGroup
	for _, s := range sessions {
		sw.Go(func() { s.err = o.Runtime.Start(ctx, s.id) })
	}
	sw.Wait()
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
	if pt.Arm == config.ArmBPF {
		if err := o.checkAttached(ctx, sessions); err != nil {
			return rd, err
		}
	}
	o.setup = max(o.setup, time.Since(setupStart))
	if late := time.Since(startAt); o.ReplayStartAt && late > 0 {
		return rd, fmt.Errorf("%w by %v: the containers took %v to get ready (barrier_s=%v)", errBarrierMissed,
			late.Round(time.Millisecond), o.setup.Round(time.Millisecond), cfg.BarrierS)
	}

	// Measure.
	sctx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	smp := &Sampler{RunID: pl.ID, Zero: startAt, Period: time.Duration(cfg.SampleMs) * time.Millisecond, StatsEvery: 5,
		Cgroups: []Named{{"parent", o.Tree.ParentDir()}}}
	for _, s := range sessions {
		smp.Cgroups = append(smp.Cgroups, Named{s.cfg.Name, s.dir})
	}
	if pt.Arm == config.ArmBPF {
		smp.Stats = o.Enforcer.Stats
	}
	var wg sync.WaitGroup
	wg.Go(func() { smp.Run(sctx) })
	var mon *Monitor
	if pt.Arm == config.ArmHighOnly {
		mon = &Monitor{Parent: o.Tree.ParentDir(), GatePct: pt.Policy.GatePct, Poll: time.Duration(pt.PollMs) * time.Millisecond,
			ActiveWindow: time.Duration(pt.Policy.HighActiveWindowMs) * time.Millisecond,
			Floor:        int64(float64(cfg.HighOnlyFloorB) * pt.MemScale), Log: o.Log}
		for _, s := range sessions {
			if s.cfg.Role == results.RoleHigh {
				mon.High = s.dir
			} else {
				mon.Lows = append(mon.Lows, s.dir)
			}
		}
		wg.Go(func() { mon.Run(sctx) })
	}
	wctx, cancelWait := context.WithDeadline(ctx, startAt.Add(time.Duration(cfg.RunTimeoutS*float64(time.Second))))
	defer cancelWait()
	var ww sync.WaitGroup
	for _, s := range sessions {
		ww.Go(func() { s.exit, s.err = o.Runtime.Wait(wctx, s.id) })
	}
	ww.Wait()
	timedOut := wctx.Err() != nil && ctx.Err() == nil
	stopSampling()
	wg.Wait()
	if ctx.Err() != nil {
		return rd, ctx.Err()
	}

	// Collect.
	rd.Run = results.Run{ID: pl.ID, Arm: pt.Arm, Label: pt.Label, Params: pt.Params, Index: pl.Index, Order: pl.Order,
		Speed: cfg.Speed, MemScale: pt.MemScale, Runtime: o.Runtime.Name(), StartUnix: unix(startAt),
		ParentPath: o.Tree.ParentDir(), ParentLimit: limit}
	if timedOut {
		rd.Run.Error = fmt.Sprintf("timeout after %v s", cfg.RunTimeoutS)
	}
	rd.Run.ParentPeak, _ = cgroup.ReadBytes(o.Tree.ParentDir(), "memory.peak")
	ctrs := smp.Counters()
	end := unix(startAt)
	for _, s := range sessions {
		rs := o.collect(s, outDir, rdir, startAt, ctrs, pt.Arm == config.ArmBPF)
		end = max(end, rs.ActiveEnd)
		rd.Sessions = append(rd.Sessions, rs)
	}
	rd.Run.EndUnix = end
	samples := smp.Samples()
	rd.Run.Utilisation = Utilisation(samples, "parent", limit, 0, end-unix(startAt))
	if mon != nil {
		rd.Run.Params = cloneWith(rd.Run.Params, "highonly_tightenings", strconv.Itoa(mon.Tightenings))
	}
	results.CheckOverlap(&rd)
	if rd.Run.Error != "" && !rd.Run.Excluded {
		rd.Run.Excluded, rd.Run.ExcludeReason = true, rd.Run.Error
	}
	if err := writeSeries(filepath.Join(rdir, "timeseries.csv"), samples); err != nil {
		return rd, err
	}
	return rd, results.SaveRun(o.Dir, rd)
}

func (o *Orchestrator) collect(s *session, outDir, rdir string, startAt time.Time, ctrs map[uint64]policy.Counters, bpfArm bool) results.Session {
	rs := results.Session{Name: s.cfg.Name, Role: s.cfg.Role, Trace: s.cfg.Trace, ContainerID: s.id, CgroupPath: s.leaf, CgroupID: s.leafID,
		ExitCode: s.exit.Code, MemoryMax: cgroup.Max, MemoryHigh: cgroup.Max}
	rs.MemoryMax, _ = cgroup.ReadBytes(s.dir, "memory.max")
	if s.exit.Code > 128 {
		rs.Signal = s.exit.Code - 128
	}
	// The session cgroup outlives the container: hierarchical events of
	// the whole session, fresh for this run (created empty).
	ev, err := cgroup.ReadKeyed(s.dir, "memory.events")
	if err != nil {
		o.Log.Warn("memory.events", "session", s.cfg.Name, "err", err)
	}
	rs.Events = eventDelta(nil, ev)
	rs.PeakBytes, _ = cgroup.ReadBytes(s.dir, "memory.peak")
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
	if bpfArm {
		// The link was checked before the barrier; a cgroup the programs
		// never ran for (no reclaim reached HIGH, say) has no map entry yet,
		// which means zero counts, not missing ones.
		c := ctrs[s.leafID]
		rs.Counters = &c
	}
	// Active interval: the replay's own, else the container's life after the barrier.
	if r := rs.Replay; r != nil && r.StartUnix == 0 && !r.StartedAt.IsZero() {
		r.StartUnix = unix(r.StartedAt)
		r.EndUnix = r.StartUnix + r.CompletionS
	}
	if r := rs.Replay; r != nil && r.StartUnix > 0 && r.EndUnix >= r.StartUnix {
		rs.ActiveStart, rs.ActiveEnd = r.StartUnix, r.EndUnix
	} else {
		rs.ActiveStart = max(unix(startAt), unix(s.exit.StartedAt))
		rs.ActiveEnd = max(rs.ActiveStart, unix(s.exit.FinishedAt))
	}
	return rs
}

// checkAttached verifies the plugin/hook attached every BPF session's leaf
// cgroup with its role before the barrier opens.
func (o *Orchestrator) checkAttached(ctx context.Context, sessions []*session) error {
	links, err := o.Enforcer.Links(ctx)
	if err != nil {
		return fmt.Errorf("list policy links: %w", err)
	}
	for _, s := range sessions {
		found := false
		for _, l := range links {
			if l.CgroupID == s.leafID && string(l.Priority) == s.cfg.Role && !l.Orphan {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("session %s (cgroup %s, id %d): no %s policy link: the plugin/hook did not attach", s.cfg.Name, s.leaf, s.leafID, s.cfg.Role)
		}
	}
	return nil
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

func unix(t time.Time) float64 {
	if t.IsZero() || t.Unix() <= 0 {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}

func ftoa(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
