package enroll

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"

	"github.com/agentcg/agentcg/internal/dirlock"
	"github.com/agentcg/agentcg/policy"
)

// Container is what a front door (NRI event, OCI state) knows about a container.
type Container struct {
	ID          string
	Pid         int    // init pid; 0 when unknown
	CgroupsPath string // OCI linux.cgroupsPath; "" when unknown
	// Annotations are searched for the priority key; Labels and Namespace
	// only authorise "high".
	Annotations map[string]string
	Labels      map[string]string
	Namespace   string // Kubernetes namespace; "" derives it from labels/annotations
}

// Outcome is what an enrollment did.
type Outcome string

const (
	Attached Outcome = "attached" // the policy is on the cgroup
	Skipped  Outcome = "skipped"  // no annotation: nothing to do
	Rejected Outcome = "rejected" // refused by validation, authorisation or safety
	Failed   Outcome = "failed"   // allowed, but the policy could not be applied
	Detached Outcome = "detached" // Unenroll removed an attachment
)

// Reason is the metric label and log field explaining a rejection or failure.
type Reason string

const (
	ReasonNone            Reason = ""
	ReasonInvalidValue    Reason = "invalid_value"
	ReasonNotAllowed      Reason = "not_allowed"
	ReasonHighCap         Reason = "high_cap"
	ReasonCgroupNotFound  Reason = "cgroup_unresolved"
	ReasonCgroupOutside   Reason = "cgroup_outside_root"
	ReasonAttachFailed    Reason = "attach_failed"
	ReasonStateFailed     Reason = "state_failed"
	ReasonInvalidID       Reason = "invalid_id"
	ReasonContextCanceled Reason = "timeout"
)

// Result describes one Enroll or Unenroll.
type Result struct {
	ID        string
	Priority  policy.Priority
	CgroupDir string
	Outcome   Outcome
	Reason    Reason
	Link      policy.Link
	Err       error // why it was rejected or failed
}

// Enroller applies priorities to containers through a policy.
type Enroller struct {
	cfg      Config
	pol      policy.Policy
	log      *slog.Logger
	resolver Resolver
	records  Records
	// mu serialises enrollments with each other (the high cap) and with
	// unenrollments: a Stop that overtakes a slow Attach must wait for it,
	// or the attach would pin after the detach and leak.
	mu sync.Mutex
}

// New returns an Enroller for cfg (defaults filled) over pol.
func New(cfg Config, pol policy.Policy, log *slog.Logger) (*Enroller, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Enroller{
		cfg:      cfg,
		pol:      pol,
		log:      log,
		resolver: Resolver{Root: cfg.CgroupRoot, ProcRoot: cfg.ProcRoot},
		records:  Records{Dir: cfg.StateDir},
	}, nil
}

// Config returns the effective configuration.
func (e *Enroller) Config() Config { return e.cfg }

// Policy returns the policy the enroller drives.
func (e *Enroller) Policy() policy.Policy { return e.pol }

// Records returns the store of enrolled containers.
func (e *Enroller) Records() Records { return e.records }

// Enroll reads c's priority annotation and, if it is valid and allowed,
// attaches the policy to c's cgroup and records the attachment. The error is
// non-nil only when the container must not run: a rejection or failure under
// fail_mode closed. Under fail_mode open the Result still says what happened.
func (e *Enroller) Enroll(ctx context.Context, c Container) (Result, error) {
	res := e.enroll(ctx, c)
	log := e.log.With("container", c.ID, "cgroup", res.CgroupDir, "priority", string(res.Priority))
	switch res.Outcome {
	case Attached:
		log.Info("attached", "mode", string(res.Link.Mode), "pin", res.Link.PinPath)
		return res, nil
	case Skipped:
		log.Debug("no priority annotation", "key", e.cfg.AnnotationKey)
		return res, nil
	}
	if e.cfg.FailMode == FailClosed {
		log.Error("refusing container (fail_mode closed)", "outcome", string(res.Outcome), "reason", string(res.Reason), "err", res.Err)
		return res, fmt.Errorf("agentcg: container %s: %w", c.ID, res.Err)
	}
	log.Warn("container runs without policy (fail_mode open)", "outcome", string(res.Outcome), "reason", string(res.Reason), "err", res.Err)
	return res, nil
}

func (e *Enroller) enroll(ctx context.Context, c Container) Result {
	res := Result{ID: c.ID}
	reject := func(o Outcome, r Reason, err error) Result {
		res.Outcome, res.Reason, res.Err = o, r, err
		return res
	}
	if _, err := e.records.path(c.ID); err != nil {
		return reject(Rejected, ReasonInvalidID, err)
	}
	val, ok := c.Annotations[e.cfg.AnnotationKey]
	if !ok {
		res.Outcome = Skipped
		return res
	}
	prio, err := policy.ParsePriority(val)
	if err != nil {
		return reject(Rejected, ReasonInvalidValue, fmt.Errorf("annotation %s: %w", e.cfg.AnnotationKey, err))
	}
	res.Priority = prio
	if prio == policy.High {
		if err := e.authoriseHigh(c); err != nil {
			return reject(Rejected, ReasonNotAllowed, err)
		}
	}
	dir, err := e.resolver.Resolve(c.Pid, c.CgroupsPath)
	if err != nil {
		if errors.Is(err, ErrOutsideRoot) {
			return reject(Rejected, ReasonCgroupOutside, err)
		}
		return reject(Failed, ReasonCgroupNotFound, err)
	}
	res.CgroupDir = dir
	if err := ctx.Err(); err != nil {
		return reject(Failed, ReasonContextCanceled, err)
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	if prio == policy.High && e.cfg.High.MaxConcurrent > 0 {
		unlock, err := e.lockState()
		if err != nil {
			return reject(Failed, ReasonStateFailed, err)
		}
		defer unlock()
		n, err := e.countHigh(c.ID)
		if err != nil {
			return reject(Failed, ReasonStateFailed, err)
		}
		if n >= e.cfg.High.MaxConcurrent {
			return reject(Rejected, ReasonHighCap, fmt.Errorf("%d high containers already enrolled (high.max_concurrent %d)", n, e.cfg.High.MaxConcurrent))
		}
	}
	// Record first: if we die after the attach, Unenroll and reconcile can
	// still find the cgroup.
	rec := Record{ID: c.ID, CgroupDir: dir, Priority: prio, Mode: e.pol.Mode()}
	if err := e.records.Put(rec); err != nil {
		return reject(Failed, ReasonStateFailed, err)
	}
	link, err := e.pol.Attach(ctx, dir, prio)
	if err != nil {
		if derr := e.records.Delete(c.ID); derr != nil {
			e.log.Warn("dropping record after failed attach", "container", c.ID, "err", derr)
		}
		if ctx.Err() != nil {
			return reject(Failed, ReasonContextCanceled, fmt.Errorf("attach %s to %s: %w", prio, dir, err))
		}
		return reject(Failed, ReasonAttachFailed, fmt.Errorf("attach %s to %s: %w", prio, dir, err))
	}
	res.Outcome, res.Link = Attached, link
	return res
}

// authoriseHigh checks the allowlist for a container claiming high.
func (e *Enroller) authoriseHigh(c Container) error {
	a := e.cfg.High
	if a.AllowAll {
		return nil
	}
	ns := NamespaceOf(c)
	if ns != "" && slices.Contains(a.Namespaces, ns) {
		return nil
	}
	for k, v := range a.Labels {
		if got, ok := c.Labels[k]; ok && got == v {
			return nil
		}
	}
	return fmt.Errorf("priority high not allowed for namespace %q (allowed namespaces %v, labels %v)", ns, a.Namespaces, a.Labels)
}

// NamespaceOf returns c's Kubernetes namespace: the explicit field, else the
// io.kubernetes.pod.namespace label, else that annotation.
func NamespaceOf(c Container) string {
	if c.Namespace != "" {
		return c.Namespace
	}
	if ns := c.Labels[NamespaceKey]; ns != "" {
		return ns
	}
	return c.Annotations[NamespaceKey]
}

func (e *Enroller) countHigh(except string) (int, error) {
	recs, err := e.records.List()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range recs {
		if r.Priority == policy.High && r.ID != except {
			n++
		}
	}
	return n, nil
}

// lockState takes an exclusive flock on the state dir so that concurrent
// hook processes agree on the high count.
func (e *Enroller) lockState() (func(), error) { return dirlock.Lock(e.cfg.StateDir) }

// Unenroll detaches whatever Enroll attached for id, using the record so
// that it works after the cgroup is gone. Unknown ids are not an error.
func (e *Enroller) Unenroll(ctx context.Context, id string) (Result, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	res := Result{ID: id, Outcome: Skipped}
	rec, ok, err := e.records.Get(id)
	if err != nil {
		res.Outcome, res.Reason, res.Err = Failed, ReasonStateFailed, err
		e.log.Error("detach", "container", id, "err", err)
		return res, err
	}
	if !ok {
		e.log.Debug("nothing enrolled", "container", id)
		return res, nil
	}
	res.CgroupDir, res.Priority = rec.CgroupDir, rec.Priority
	if err := e.pol.Detach(ctx, rec.CgroupDir); err != nil {
		res.Outcome, res.Reason, res.Err = Failed, ReasonAttachFailed, err
		e.log.Error("detach", "container", id, "cgroup", rec.CgroupDir, "err", err)
		return res, fmt.Errorf("detach container %s from %s: %w", id, rec.CgroupDir, err)
	}
	if err := e.records.Delete(id); err != nil {
		res.Outcome, res.Reason, res.Err = Failed, ReasonStateFailed, err
		return res, err
	}
	res.Outcome = Detached
	e.log.Info("detached", "container", id, "cgroup", rec.CgroupDir, "priority", string(rec.Priority))
	return res, nil
}

// reconciler is implemented by policies (the BPF one) that can remove
// their own orphans, including pins they hold no record of.
type reconciler interface {
	Reconcile(ctx context.Context) ([]policy.Link, error)
}

// ReconcileReport summarises a Reconcile.
type ReconcileReport struct {
	Enrolled []Result // one per running container
	Stale    []Result // records of containers no longer running, unenrolled
	Orphans  []string // cgroup dirs of links whose cgroup is gone, detached
}

// Reconcile makes the policy match the running containers: it enrolls each
// of them (attaching is idempotent), unenrolls records of containers that are
// gone, and detaches links whose cgroup no longer exists. Errors are
// collected; Reconcile does as much as it can.
func (e *Enroller) Reconcile(ctx context.Context, running []Container) (ReconcileReport, error) {
	var rep ReconcileReport
	var errs []error
	live := map[string]bool{}
	for _, c := range running {
		live[c.ID] = true
		res, err := e.Enroll(ctx, c)
		rep.Enrolled = append(rep.Enrolled, res)
		errs = append(errs, err)
	}
	recs, err := e.records.List()
	errs = append(errs, err)
	for _, r := range recs {
		if live[r.ID] {
			continue
		}
		res, err := e.Unenroll(ctx, r.ID)
		rep.Stale = append(rep.Stale, res)
		errs = append(errs, err)
	}
	// Orphans: links whose cgroup is gone. A policy that can reconcile
	// itself also finds pins it has no record of.
	if r, ok := e.pol.(reconciler); ok {
		removed, err := r.Reconcile(ctx)
		errs = append(errs, err)
		for _, l := range removed {
			e.log.Info("removed orphan link", "cgroup", l.CgroupPath, "cgroup_id", l.CgroupID, "pin", l.PinPath)
			rep.Orphans = append(rep.Orphans, l.CgroupPath)
		}
		return rep, errors.Join(errs...)
	}
	links, err := e.pol.List(ctx)
	errs = append(errs, err)
	for _, l := range links {
		if !l.Orphan {
			if _, err := os.Stat(l.CgroupPath); err == nil {
				continue
			}
		}
		if l.CgroupPath == "" {
			e.log.Warn("orphan link without a cgroup path; the policy cannot detach it by path", "cgroup_id", l.CgroupID, "pin", l.PinPath)
			continue
		}
		if err := e.pol.Detach(ctx, l.CgroupPath); err != nil {
			errs = append(errs, fmt.Errorf("detach orphan %s: %w", l.CgroupPath, err))
			continue
		}
		e.log.Info("removed orphan link", "cgroup", l.CgroupPath, "cgroup_id", l.CgroupID, "pin", l.PinPath)
		rep.Orphans = append(rep.Orphans, l.CgroupPath)
	}
	return rep, errors.Join(errs...)
}
