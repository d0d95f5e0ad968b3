// Package hook owns the OCI hook front door: it turns the runtime-spec state
// a runtime writes on the hook's stdin into an enrollment (createRuntime) or
// an unenrollment (poststop), within a hard timeout.
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
	"github.com/agentcg/agentcg/policy"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Stage is the hook point the binary was invoked for.
type Stage string

const (
	CreateRuntime Stage = "createRuntime" // attach (and pin: the hook exits)
	Poststop      Stage = "poststop"      // unpin
)

// DefaultTimeout bounds a hook invocation unless configured otherwise.
const DefaultTimeout = 5 * time.Second

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

// OpenFunc opens the policy named by cfg.Mode. recorded is true at
// poststop, where cfg.Mode is the mode an earlier attach recorded, so the
// kernel feature probe can be skipped.
type OpenFunc func(ctx context.Context, cfg enroll.Config, recorded bool) (policy.Policy, error)

// Hook runs one hook invocation.
type Hook struct {
	Config  enroll.Config
	Open    OpenFunc
	Timeout time.Duration // 0 means DefaultTimeout
	Log     *slog.Logger
}

// Run reads the state from stdin and performs stage. It returns within the
// timeout whatever the policy does. The error is non-nil only when the
// runtime should fail the container: a failed createRuntime under
// fail_mode closed. Everything else is logged and reported as success.
func (h Hook) Run(ctx context.Context, stage Stage, stdin io.Reader) error {
	log := h.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = time.Duration(h.Config.HookTimeout)
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	closed := h.Config.FailMode == enroll.FailClosed && stage == CreateRuntime
	fail := func(err error) error {
		if closed {
			log.Error("hook failed (fail_mode closed)", "stage", string(stage), "err", err)
			return err
		}
		log.Warn("hook failed; container continues without policy (fail_mode open)", "stage", string(stage), "err", err)
		return nil
	}

	var st specs.State
	if err := json.NewDecoder(stdin).Decode(&st); err != nil {
		return fail(fmt.Errorf("agentcg-hook: read OCI state from stdin: %w", err))
	}
	log = log.With("stage", string(stage))

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	done := make(chan error, 1)
	// The work runs in its own goroutine so that a policy stuck in a
	// syscall cannot hold the runtime past the timeout: we return, and the
	// process exits under it.
	go func(log *slog.Logger) { done <- h.do(ctx, stage, st, log) }(log)
	log = log.With("container", st.ID)
	select {
	case err := <-done:
		if err != nil {
			return fail(err)
		}
		return nil
	case <-ctx.Done():
		return fail(fmt.Errorf("agentcg-hook: %s for container %s: gave up after %s: %w", stage, st.ID, timeout, ctx.Err()))
	}
}

func (h Hook) do(ctx context.Context, stage Stage, st specs.State, log *slog.Logger) error {
	if stage == CreateRuntime {
		if _, ok := st.Annotations[h.Config.AnnotationKey]; !ok {
			// Most containers carry no annotation: don't load the policy.
			log.Debug("no priority annotation")
			return nil
		}
	}
	cfg, recorded := h.Config, false
	if stage == Poststop {
		rec, ok, err := (enroll.Records{Dir: cfg.StateDir}).Get(st.ID)
		if err != nil {
			return err
		}
		if !ok {
			// The wrapper adds poststop to every container; most were
			// never enrolled, and need no policy.
			log.Debug("nothing enrolled", "container", st.ID)
			return nil
		}
		if rec.Mode != "" {
			cfg.Mode, recorded = rec.Mode, true
		}
	}
	pol, err := h.Open(ctx, cfg, recorded)
	if err != nil {
		return fmt.Errorf("agentcg-hook: open policy (mode %s): %w", cfg.Mode, err)
	}
	defer pol.Close()
	e, err := enroll.New(cfg, pol, log)
	if err != nil {
		return err
	}
	switch stage {
	case CreateRuntime:
		c := enroll.Container{ID: st.ID, Door: enroll.DoorHook, Pid: st.Pid, Annotations: st.Annotations, CgroupsPath: bundleCgroupsPath(st.Bundle)}
		// Enroll logs the outcome and errs only under fail_mode closed.
		_, err := e.Enroll(ctx, c)
		return err
	case Poststop:
		_, err := e.Unenroll(ctx, st.ID)
		return err
	}
	return fmt.Errorf("unknown stage %q", stage)
}

// bundleCgroupsPath reads linux.cgroupsPath from the bundle's config.json;
// the enroller only uses it when /proc/<pid>/cgroup is unreadable, and
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
