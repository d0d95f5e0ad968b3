package enroll

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/agentcg/agentcg/internal/dirlock"
	"github.com/agentcg/agentcg/policy"
)

// Container is what a front door (NRI event, OCI state) knows about a container.
type Container struct {
	ID   string
	Door Door   // which front door is enrolling it (required)
	Name string // container name in its pod, for KEY/container.<name>; "" if unknown
	Pid  int    // init pid; 0 when unknown
	// CgroupsPath is the OCI linux.cgroupsPath as the runtime set it; "" when unknown.
	CgroupsPath string
	// Annotations are untrusted: they are searched for the priority key
	// (EffectiveAnnotation) and never authorise high.
	Annotations map[string]string
	// Namespace is the Kubernetes namespace as the kubelet reported it to
	// the runtime (NRI's pod.GetNamespace()). Only the NRI door sets it; it
	// is never derived from an annotation or a label.
	Namespace string
	// PodLabels are the pod-sandbox labels (NRI door). They authorise high
	// only with high.trust_pod_labels. Container labels are never read.
	PodLabels map[string]string
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
	ReasonNone             Reason = ""
	ReasonInvalidValue     Reason = "invalid_value"
	ReasonNotAllowed       Reason = "not_allowed"
	ReasonHighCap          Reason = "high_cap"
	ReasonCgroupNotFound   Reason = "cgroup_unresolved"
	ReasonCgroupOutside    Reason = "cgroup_outside_root"
	ReasonAttachFailed     Reason = "attach_failed"
	ReasonDetachFailed     Reason = "detach_failed"
	ReasonStateFailed      Reason = "state_failed"
	ReasonRecordUnreadable Reason = "record_unreadable"
	ReasonInvalidID        Reason = "invalid_id"
	ReasonContextCanceled  Reason = "timeout"
)

// Result describes one Enroll or Unenroll.
type Result struct {
	ID        string
	Door      Door
	Key       string // the annotation key that matched
	Priority  policy.Priority
	CgroupDir string
	Outcome   Outcome
	Reason    Reason
	Link      policy.Link
	Err       error // why it was rejected or failed
}

// Opener opens the policy of a mode other than the enroller's own, so that
// a record is detached through the mode that attached it.
type Opener func(ctx context.Context, m policy.Mode) (policy.Policy, error)

// Option configures an Enroller.
type Option func(*Enroller)

// WithOpener sets how policies of other modes are opened for detach. Without
// it, a record of another mode fails to detach with an error that says so.
func WithOpener(o Opener) Option { return func(e *Enroller) { e.opener = o } }

// AttachHook runs right before each attach, with the record written; an
// error fails the attach. It exists for fault injection (a blocked attach)
// in tests of the front doors.
type AttachHook func(ctx context.Context, id, cgroupDir string) error

// WithAttachHook sets a hook that runs before each attach.
func WithAttachHook(h AttachHook) Option { return func(e *Enroller) { e.attachHook = h } }

// Enroller applies priorities to containers through a policy. It holds no
// lock across a kernel call: enrollments of one container are serialised
// with each other (so a Stop that overtakes a slow attach waits for it and
// nothing leaks), different containers never wait for each other, and the
// node-wide state lock is held only around the high-cap count and the
// record write.
type Enroller struct {
	cfg      Config
	pol      policy.Policy
	log      *slog.Logger
	resolver Resolver
	records  Records
	ids      keyedMutex
	opener   Opener
	// attachHook is a test seam (WithAttachHook).
	attachHook AttachHook

	mu     sync.Mutex // guards others
	others map[policy.Mode]policy.Policy
}

// New returns an Enroller for cfg (defaults filled) over pol.
func New(cfg Config, pol policy.Policy, log *slog.Logger, opts ...Option) (*Enroller, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Enroller{
		cfg:      cfg,
		pol:      pol,
		log:      log,
		resolver: Resolver{Root: cfg.CgroupRoot, ProcRoot: cfg.ProcRoot},
		records:  Records{Dir: cfg.StateDir},
		others:   map[policy.Mode]policy.Policy{},
	}
	for _, o := range opts {
		o(e)
	}
	return e, nil
}

// Close releases the policies opened for other modes (not the enroller's own).
func (e *Enroller) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var errs []error
	for m, p := range e.others {
		errs = append(errs, p.Close())
		delete(e.others, m)
	}
	return errors.Join(errs...)
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
	log := e.log.With("container", c.ID, "door", string(c.Door), "cgroup", res.CgroupDir, "priority", string(res.Priority))
	switch res.Outcome {
	case Attached:
		log.Info("attached", "mode", string(res.Link.Mode), "pin", res.Link.PinPath, "key", res.Key)
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
	res := Result{ID: c.ID, Door: c.Door}
	reject := func(o Outcome, r Reason, err error) Result {
		res.Outcome, res.Reason, res.Err = o, r, err
		return res
	}
	if _, err := e.records.path(c.ID); err != nil {
		return reject(Rejected, ReasonInvalidID, err)
	}
	if _, err := ParseDoor(string(c.Door)); err != nil {
		return reject(Rejected, ReasonInvalidID, fmt.Errorf("container %s: %w", c.ID, err))
	}
	val, key, ok := EffectiveAnnotation(c.Annotations, e.cfg.AnnotationKey, c.Name)
	if !ok {
		res.Outcome = Skipped
		return res
	}
	res.Key = key
	prio, err := ParseAnnotation(key, val)
	if err != nil {
		return reject(Rejected, ReasonInvalidValue, err)
	}
	res.Priority = prio

	unlock, err := e.ids.lock(ctx, c.ID)
	if err != nil {
		return reject(Failed, ReasonContextCanceled, fmt.Errorf("waiting for earlier work on container %s: %w", c.ID, err))
	}
	defer unlock()

	dirf, dir, err := e.resolver.Open(c.Pid, c.CgroupsPath)
	if err != nil {
		if errors.Is(err, ErrOutsideRoot) {
			return reject(Rejected, ReasonCgroupOutside, err)
		}
		return reject(Failed, ReasonCgroupNotFound, err)
	}
	defer dirf.Close()
	res.CgroupDir = dir
	if prio == policy.High {
		if err := e.authoriseHigh(c, dir); err != nil {
			return reject(Rejected, ReasonNotAllowed, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return reject(Failed, ReasonContextCanceled, err)
	}

	prev, hadPrev, err := e.records.Get(c.ID)
	if errors.Is(err, ErrBadRecord) {
		// Overwritten below by a good one; the old link, if any, is
		// replaced by the attach.
		e.log.Warn("replacing an unreadable record", "container", c.ID, "err", err)
	} else if err != nil {
		return reject(Failed, ReasonStateFailed, err)
	}
	if hadPrev && prev.Mode != "" && prev.Mode != e.pol.Mode() {
		// The mode changed since this container was attached: take the old
		// attachment off through its own mechanism first.
		if err := e.detachRecord(ctx, prev); err != nil {
			e.log.Warn("detaching the previous attachment before re-attaching", "container", c.ID, "mode", string(prev.Mode), "err", err)
		}
	}
	// Record first: if we die after the attach, Unenroll and reconcile can
	// still find the cgroup.
	rec := Record{ID: c.ID, Door: c.Door, CgroupDir: dir, Priority: prio, Mode: e.pol.Mode()}
	if r, err := e.putRecord(ctx, rec); err != nil {
		if r == ReasonHighCap {
			return reject(Rejected, r, err)
		}
		return reject(Failed, r, err)
	}
	var link policy.Link
	var aerr error
	if e.attachHook != nil {
		aerr = e.attachHook(ctx, c.ID, dir)
	}
	if aerr == nil {
		link, aerr = e.attach(ctx, dirf, dir, prio)
	}
	if aerr != nil {
		if !hadPrev {
			if derr := e.records.Delete(c.ID); derr != nil {
				e.log.Warn("dropping record after failed attach", "container", c.ID, "err", derr)
			}
		} else if perr := e.records.Put(prev); perr != nil {
			e.log.Warn("restoring the previous record after failed attach", "container", c.ID, "err", perr)
		}
		if ctx.Err() != nil {
			return reject(Failed, ReasonContextCanceled, fmt.Errorf("attach %s to %s: %w", prio, dir, aerr))
		}
		return reject(Failed, ReasonAttachFailed, fmt.Errorf("attach %s to %s: %w", prio, dir, aerr))
	}
	res.Outcome, res.Link = Attached, link
	return res
}

// attach hands the opened directory to the policy when it can take one
// (policy.DirAttacher), else the path.
func (e *Enroller) attach(ctx context.Context, dirf *os.File, dir string, prio policy.Priority) (policy.Link, error) {
	if da, ok := e.pol.(policy.DirAttacher); ok {
		return da.AttachDir(ctx, dirf, dir, prio)
	}
	return e.pol.Attach(ctx, dir, prio)
}

// putRecord writes rec; for high under a cap it first counts the enrolled
// high containers, holding the state lock (bounded by ctx) only for the
// count and the write, so that concurrent hook processes and the plugin
// agree on the count.
func (e *Enroller) putRecord(ctx context.Context, rec Record) (Reason, error) {
	limit := e.cfg.High.Cap()
	if rec.Priority != policy.High || limit == 0 {
		if err := e.records.Put(rec); err != nil {
			return ReasonStateFailed, err
		}
		return ReasonNone, nil
	}
	unlock, err := dirlock.LockContext(ctx, e.cfg.StateDir)
	if err != nil {
		if errors.Is(err, dirlock.ErrTimeout) {
			return ReasonContextCanceled, err
		}
		return ReasonStateFailed, err
	}
	defer unlock()
	recs, bad, err := e.records.List()
	if err != nil {
		return ReasonStateFailed, err
	}
	e.logBad(bad)
	n := 0
	for _, r := range recs {
		if r.Priority != policy.High || r.ID == rec.ID {
			continue
		}
		// A record whose cgroup is gone belongs to no running container:
		// its detach never ran (a poststop hook that timed out, a plugin
		// that was down at RemoveContainer). The hook door has no
		// reconcile, so counting it would lock high out of the node.
		if _, err := os.Stat(r.CgroupDir); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		n++
	}
	if n >= limit {
		return ReasonHighCap, fmt.Errorf("%d high containers already enrolled on this node (high.max_concurrent %d)", n, limit)
	}
	if err := e.records.Put(rec); err != nil {
		return ReasonStateFailed, err
	}
	return ReasonNone, nil
}

// authoriseHigh checks, for a container claiming high, the sources its
// front door can vouch for (see HighAllow).
func (e *Enroller) authoriseHigh(c Container, dir string) error {
	a := e.cfg.High
	if a.AllowAll {
		return nil
	}
	switch c.Door {
	case DoorNRI:
		if c.Namespace != "" && slices.Contains(a.Namespaces, c.Namespace) {
			return nil
		}
		if a.TrustPodLabels && len(a.PodLabels) > 0 {
			for k, v := range a.PodLabels {
				if got, ok := c.PodLabels[k]; ok && got == v {
					return nil
				}
			}
			return fmt.Errorf("priority high not allowed for pod namespace %q (high.namespaces %v, high.pod_labels %v)", c.Namespace, a.Namespaces, a.PodLabels)
		}
		return fmt.Errorf("priority high not allowed for pod namespace %q (high.namespaces %v)", c.Namespace, a.Namespaces)
	case DoorHook:
		root, err := filepath.EvalSymlinks(e.cfg.CgroupRoot)
		if err != nil {
			return fmt.Errorf("cgroup root %s: %w", e.cfg.CgroupRoot, err)
		}
		rel, err := filepath.Rel(root, dir)
		if err == nil {
			for _, p := range a.CgroupParents {
				if under(rel, p) || under(rel, sliceDir(p)) {
					return nil
				}
			}
		}
		return fmt.Errorf("priority high not allowed for cgroup %s: not under any of high.cgroup_parents %v (relative to %s)", dir, a.CgroupParents, root)
	}
	return fmt.Errorf("priority high not allowed: unknown door %q", c.Door)
}

// Unenroll detaches whatever Enroll attached for id, through the mode that
// attached it, using the record so that it works after the cgroup is gone.
// Unknown ids are not an error. An unreadable record is moved aside
// (Records.Quarantine) and reported with ReasonRecordUnreadable; the link
// it described, if any, is removed by the next orphan sweep once its cgroup
// is gone.
func (e *Enroller) Unenroll(ctx context.Context, id string) (Result, error) {
	res := Result{ID: id, Outcome: Skipped}
	unlock, err := e.ids.lock(ctx, id)
	if err != nil {
		res.Outcome, res.Reason, res.Err = Failed, ReasonContextCanceled, err
		return res, fmt.Errorf("detach container %s: waiting for earlier work: %w", id, err)
	}
	defer unlock()
	rec, ok, err := e.records.Get(id)
	if errors.Is(err, ErrBadRecord) {
		res.Outcome, res.Reason, res.Err = Failed, ReasonRecordUnreadable, err
		to, qerr := e.records.Quarantine(id)
		e.log.Error("unreadable record; moved aside, its link (if any) goes with the next orphan sweep", "container", id, "err", err, "moved_to", to, "move_err", qerr)
		return res, err
	}
	if err != nil {
		res.Outcome, res.Reason, res.Err = Failed, ReasonStateFailed, err
		e.log.Error("detach", "container", id, "err", err)
		return res, err
	}
	if !ok {
		e.log.Debug("nothing enrolled", "container", id)
		return res, nil
	}
	res.Door, res.CgroupDir, res.Priority = rec.Door, rec.CgroupDir, rec.Priority
	if err := e.detachRecord(ctx, rec); err != nil {
		res.Outcome, res.Reason, res.Err = Failed, ReasonDetachFailed, err
		e.log.Error("detach", "container", id, "cgroup", rec.CgroupDir, "mode", string(rec.Mode), "err", err)
		return res, fmt.Errorf("detach container %s from %s: %w", id, rec.CgroupDir, err)
	}
	if err := e.records.Delete(id); err != nil {
		res.Outcome, res.Reason, res.Err = Failed, ReasonStateFailed, err
		return res, err
	}
	res.Outcome = Detached
	e.log.Info("detached", "container", id, "door", string(rec.Door), "cgroup", rec.CgroupDir, "priority", string(rec.Priority), "mode", string(rec.Mode))
	return res, nil
}

// detachRecord detaches through the policy of the record's mode.
func (e *Enroller) detachRecord(ctx context.Context, rec Record) error {
	pol, err := e.policyFor(ctx, rec.Mode)
	if err != nil {
		return err
	}
	return pol.Detach(ctx, rec.CgroupDir)
}

// policyFor returns the policy of mode m: the enroller's own, or one opened
// (once) through the Opener. The open runs outside the lock, so a slow
// open never blocks other modes' users.
func (e *Enroller) policyFor(ctx context.Context, m policy.Mode) (policy.Policy, error) {
	if m == "" || m == e.pol.Mode() {
		return e.pol, nil
	}
	e.mu.Lock()
	p, ok := e.others[m]
	e.mu.Unlock()
	if ok {
		return p, nil
	}
	if e.opener == nil {
		return nil, fmt.Errorf("recorded mode %s differs from the running mode %s and no opener is set", m, e.pol.Mode())
	}
	p, err := e.opener(ctx, m)
	if err != nil {
		return nil, fmt.Errorf("open the %s policy for a record attached in that mode: %w", m, err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if old, ok := e.others[m]; ok {
		p.Close()
		return old, nil
	}
	e.others[m] = p
	return p, nil
}

func (e *Enroller) logBad(bad []BadRecord) {
	for _, b := range bad {
		e.log.Warn("skipping unreadable record", "container", b.ID, "path", b.Path, "err", b.Err)
	}
}

// keyedMutex serialises work per container id; different ids never wait
// for each other.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyedEntry
}

type keyedEntry struct {
	ch   chan struct{} // holds one token while locked
	refs int
}

func (k *keyedMutex) lock(ctx context.Context, id string) (func(), error) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyedEntry{}
	}
	ent := k.m[id]
	if ent == nil {
		ent = &keyedEntry{ch: make(chan struct{}, 1)}
		k.m[id] = ent
	}
	ent.refs++
	k.mu.Unlock()
	release := func() {
		k.mu.Lock()
		if ent.refs--; ent.refs == 0 {
			delete(k.m, id)
		}
		k.mu.Unlock()
	}
	select {
	case ent.ch <- struct{}{}:
		return func() { <-ent.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}
