// Package hook owns the OCI hook front door: it turns the runtime-spec state
// a runtime writes on the hook's stdin into an enrollment (createRuntime) or
// an unenrollment (poststop), within a hard timeout, and counts every
// outcome in a file that `agentcg status` and node_exporter read.
package hook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/agentcg/agentcg/enroll"
	"github.com/agentcg/agentcg/hook/hookstats"
	"github.com/agentcg/agentcg/policy"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Stage is the hook point the binary was invoked for.
type Stage string

const (
	CreateRuntime Stage = "createRuntime" // attach (and pin: the hook exits)
	Poststop      Stage = "poststop"      // unpin
)

// ParseStage accepts the OCI stage names, plus prestart (runtimes without
// createRuntime run it at the same point) and the aliases attach/detach.
func ParseStage(s string) (Stage, error) {
	switch s {
	case "createRuntime", "prestart", "attach":
		return CreateRuntime, nil
	case "poststop", "detach":
		return Poststop, nil
	}
	return "", fmt.Errorf("unknown hook stage %q: want createRuntime or poststop", s)
}

// Args is the hook's argv for stage (argv[0] first), as the runc wrapper
// and the hooks.d files write it.
func Args(stage Stage, configPath, timeout string) []string {
	args := []string{"agentcg-hook"}
	if configPath != "" {
		args = append(args, "--config", configPath)
	}
	if timeout != "" {
		args = append(args, "--timeout", timeout)
	}
	return append(args, string(stage))
}

// Reasons the hook adds to enroll's.
const (
	ReasonConfig     enroll.Reason = "config_invalid"     // the config file is unusable
	ReasonBadState   enroll.Reason = "bad_state"          // stdin is not OCI state
	ReasonPolicyOpen enroll.Reason = "policy_unavailable" // the policy (mode) could not be opened
)

// OpenFunc opens the policy named by cfg.Mode. recorded is true at
// poststop, where cfg.Mode is the mode an earlier attach recorded, so the
// kernel feature probe can be skipped.
type OpenFunc func(ctx context.Context, cfg enroll.Config, recorded bool) (policy.Policy, error)

// Hook runs one hook invocation.
type Hook struct {
	Settings Settings
	Open     OpenFunc
	Timeout  time.Duration // overrides hook_timeout when > 0
	// Start is when the hook process started (zero: when Run is called).
	// The timeout counts from it, so process start-up under load is
	// inside the budget the runtime's own bound is derived from.
	Start time.Time
	Log   *slog.Logger
	// Metrics is the counter file (MetricsPath of the config); "" counts
	// nothing. Lock guards it; nil means a bounded flock of its folder.
	Metrics string
	Lock    hookstats.LockFunc
}

// metricsBound bounds the wait for the counter lock. A run that does not
// get it leaves its event pending for the next run to fold, so the bound
// can be short: nothing is lost and no container waits on the counters.
const metricsBound = 300 * time.Millisecond

// reserve is the part of the timeout kept for logging and counting after
// the policy work gives up: the whole run, counters included, ends within
// the timeout, and the runtime's bound (RuntimeMargin more) is never hit.
func reserve(timeout time.Duration) time.Duration {
	return min(timeout/5, metricsBound+200*time.Millisecond)
}

// Run reads the state from stdin and performs stage. It returns within the
// timeout whatever the policy does. The error is non-nil only when the
// runtime should refuse the container: a failed createRuntime of an
// annotated container under fail_mode closed, or under a config file so
// broken that its fail_mode is unknown. Everything else is logged, counted
// and reported as success.
//
// With an invalid config file nothing is attached. An annotated container
// then runs without policy if the file explicitly says fail_mode: open, and
// is refused otherwise; an unannotated one is never affected; poststop
// still detaches what the records name.
func (h Hook) Run(ctx context.Context, stage Stage, stdin io.Reader) error {
	runStart := time.Now()
	start := h.Start
	if start.IsZero() {
		start = runStart
	}
	log := h.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("stage", string(stage))
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = EffectiveTimeout(h.Settings.Config)
	}
	deadline := start.Add(timeout)
	ctx, cancel := context.WithDeadline(ctx, deadline.Add(-reserve(timeout)))
	defer cancel()

	r := h.run(ctx, stage, stdin, timeout, log)

	ev := hookstats.Event{Stage: string(stage), Outcome: string(r.res.Outcome), Reason: string(r.res.Reason), Duration: time.Since(start)}
	if stage == CreateRuntime && r.annotated && r.res.Outcome != enroll.Attached {
		ev.Refused, ev.WithoutPolicy = r.err != nil, r.err == nil
	}
	// Count first: if the runtime kills us after this, the outcome (a
	// fail-open above all) is still on record.
	var countErr error
	if h.Metrics != "" {
		countErr = hookstats.AddEvent(h.Metrics, ev)
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	attrs := []any{"container", r.res.ID, "outcome", ev.Outcome, "reason", ev.Reason, "priority", string(r.res.Priority),
		"duration_ms", ms(ev.Duration), "startup_ms", ms(runStart.Sub(start))}
	if r.phases.done {
		// Where a slow run spent its time: opening the policy (BPF: the
		// pinned objects, or a load) and applying it (cgroup, records,
		// the kernel attach).
		attrs = append(attrs, "open_ms", ms(r.phases.open), "apply_ms", ms(r.phases.apply))
	}
	switch {
	case ev.Refused:
		log.Error("hook run: container refused", append(attrs, "err", r.err)...)
	case ev.WithoutPolicy:
		log.Warn("hook run: container runs without policy", append(attrs, "err", r.res.Err)...)
	case r.res.Outcome == enroll.Failed:
		log.Warn("hook run", append(attrs, "err", r.res.Err)...)
	default:
		log.Info("hook run", attrs...)
	}
	if h.Metrics != "" {
		if countErr == nil {
			bound := min(metricsBound, max(time.Until(deadline), 100*time.Millisecond))
			mctx, mcancel := context.WithTimeout(context.Background(), bound)
			countErr = hookstats.Fold(mctx, h.Metrics, h.Lock)
			mcancel()
		}
		if countErr != nil {
			log.Warn("hook counters", "err", countErr)
		}
	}
	return r.err
}

type runResult struct {
	phases    phases
	res       enroll.Result
	annotated bool  // createRuntime of a container carrying the annotation
	err       error // non-nil: refuse the container
}

func (h Hook) run(ctx context.Context, stage Stage, stdin io.Reader, timeout time.Duration, log *slog.Logger) runResult {
	s := h.Settings
	cfg := s.Config
	// closed: a failed createRuntime refuses the container. An unknown
	// fail_mode (broken file) counts as closed.
	closed := stage == CreateRuntime && (cfg.FailMode == enroll.FailClosed || s.Err != nil && !s.FailModeKnown)

	var st specs.State
	if err := json.NewDecoder(stdin).Decode(&st); err != nil {
		err = fmt.Errorf("agentcg-hook: read OCI state from stdin: %w", err)
		r := runResult{res: enroll.Result{Outcome: enroll.Failed, Reason: ReasonBadState, Err: err}}
		// Whether the container asked for a priority is unknown: only an
		// explicit fail_mode closed refuses it.
		if stage == CreateRuntime && s.FailModeKnown && cfg.FailMode == enroll.FailClosed {
			r.err = err
		}
		return r
	}
	r := runResult{res: enroll.Result{ID: st.ID}}
	if stage == CreateRuntime {
		// KEY or KEY/pod: the runtime gives no container name for
		// KEY/container.<name>.
		val, key, ok := enroll.EffectiveAnnotation(st.Annotations, cfg.AnnotationKey, "")
		if !ok {
			// Most containers carry no annotation: load nothing.
			r.res.Outcome = enroll.Skipped
			return r
		}
		r.annotated = true
		if p, err := policy.ParsePriority(val); err == nil {
			r.res.Priority = p
		}
		if s.Err != nil {
			r.res.Outcome, r.res.Reason = enroll.Rejected, ReasonConfig
			r.res.Err = fmt.Errorf("agentcg-hook: container %s asks for %s=%s but the config cannot be used: %w", st.ID, key, enroll.Truncate(val), s.Err)
			if closed {
				r.err = r.res.Err
			}
			return r
		}
	}

	type done struct {
		res enroll.Result
		ph  phases
		err error
	}
	ch := make(chan done, 1)
	// The work runs in its own goroutine so that a policy stuck in a
	// syscall cannot hold the runtime past the timeout: we return, and the
	// process exits under it.
	go func() {
		var ph phases
		res, err := h.do(ctx, stage, st, cfg, log.With("container", st.ID), &ph)
		ph.done = true
		ch <- done{res, ph, err}
	}()
	select {
	case d := <-ch:
		r.res, r.err, r.phases = d.res, d.err, d.ph
		if r.res.ID == "" {
			r.res.ID = st.ID
		}
	case <-ctx.Done():
		r.res.Outcome, r.res.Reason = enroll.Failed, enroll.ReasonContextCanceled
		r.res.Err = fmt.Errorf("agentcg-hook: %s for container %s: gave up after %s: %w", stage, st.ID, timeout, ctx.Err())
		if closed {
			r.err = r.res.Err
		}
	}
	return r
}

// do performs the stage. The error is non-nil only to refuse the container.
// phases are the durations of a run's parts, for its log line.
type phases struct {
	open, apply time.Duration
	done        bool // the work finished (not cut off by the timeout)
}

func (h Hook) do(ctx context.Context, stage Stage, st specs.State, cfg enroll.Config, log *slog.Logger, ph *phases) (enroll.Result, error) {
	res := enroll.Result{ID: st.ID}
	recorded := false
	if stage == Poststop {
		recs := enroll.Records{Dir: cfg.StateDir}
		rec, ok, err := recs.Get(st.ID)
		if errors.Is(err, enroll.ErrBadRecord) {
			// As enroll's Unenroll does: move it aside so it is not read
			// again; the link goes with the next orphan sweep (the next
			// poststop's detach of a removed cgroup, or a reconcile).
			to, qerr := recs.Quarantine(st.ID)
			res.Outcome, res.Reason, res.Err = enroll.Failed, enroll.ReasonRecordUnreadable, errors.Join(err, qerr)
			log.Error("unreadable record moved aside", "moved_to", to, "err", res.Err)
			return res, nil
		}
		if err != nil {
			res.Outcome, res.Reason, res.Err = enroll.Failed, enroll.ReasonStateFailed, err
			return res, nil
		}
		if !ok {
			// Runtimes run poststop for containers that were never
			// enrolled (a refused one, a hooks.d match without a valid
			// value): they need no policy.
			res.Outcome = enroll.Skipped
			return res, nil
		}
		res.Priority = rec.Priority
		if rec.Mode != "" {
			cfg.Mode, recorded = rec.Mode, true
		}
	}
	t0 := time.Now()
	pol, err := h.Open(ctx, cfg, recorded)
	ph.open = time.Since(t0)
	defer func(t time.Time) { ph.apply = time.Since(t) }(time.Now())
	if err != nil {
		res.Outcome, res.Reason = enroll.Failed, ReasonPolicyOpen
		res.Err = fmt.Errorf("agentcg-hook: open policy (mode %s): %w", cfg.Mode, err)
		if ctx.Err() != nil {
			res.Reason = enroll.ReasonContextCanceled
		}
		if stage == CreateRuntime && cfg.FailMode == enroll.FailClosed {
			return res, res.Err
		}
		return res, nil
	}
	defer pol.Close()
	e, err := enroll.New(cfg, pol, log)
	if err != nil {
		res.Outcome, res.Reason, res.Err = enroll.Failed, ReasonConfig, err
		if stage == CreateRuntime && cfg.FailMode == enroll.FailClosed {
			return res, err
		}
		return res, nil
	}
	switch stage {
	case CreateRuntime:
		// Annotations never authorise high (enroll reads only the
		// priority key from them); the hook door's identity for high is
		// the container's resolved cgroup (high.cgroup_parents).
		c := enroll.Container{ID: st.ID, Door: enroll.DoorHook, Pid: st.Pid, Annotations: st.Annotations, CgroupsPath: bundleCgroupsPath(st.Bundle)}
		// Enroll logs the outcome and errs only under fail_mode closed.
		return e.Enroll(ctx, c)
	case Poststop:
		res, err := e.Unenroll(ctx, st.ID)
		if err != nil && res.Err == nil {
			res.Err = err
		}
		return res, nil
	}
	return res, fmt.Errorf("unknown stage %q", stage)
}

// bundleCgroupsPath reads linux.cgroupsPath from the bundle's config.json;
// the enroller tries it first and /proc/<pid>/cgroup only as fallback, and
// checks it against the cgroup root like any other candidate.
func bundleCgroupsPath(bundle string) string {
	if bundle == "" {
		return ""
	}
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return ""
	}
	var spec struct {
		Linux *struct {
			CgroupsPath string `json:"cgroupsPath"`
		} `json:"linux"`
	}
	if json.Unmarshal(b, &spec) != nil || spec.Linux == nil {
		return ""
	}
	return spec.Linux.CgroupsPath
}

// ErrUsage is returned for a bad command line.
var ErrUsage = errors.New("usage: agentcg-hook [--config FILE] [--timeout DURATION] createRuntime|poststop < state.json")
