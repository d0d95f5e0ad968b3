package enroll

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/agentcg/agentcg/policy"
)

// Plan is what a reconcile of one front door must do, worked out with one
// listing of the records and one of the policy's links: O(N) in the number
// of containers, with no kernel call but the listing.
type Plan struct {
	Door Door
	// Attach are running containers whose wanted attachment is missing
	// (no record of this door, another priority, or no live link).
	Attach []Container
	// Kept counts running containers already attached as wanted.
	Kept int
	// Stale are this door's records whose container is not running (or no
	// longer asks for a priority): to Unenroll.
	Stale []Record
	// Foreign counts records of the other door (or of none, written before
	// records named their door); a reconcile never touches them.
	Foreign int
	// Unreadable are record files that could not be decoded; skipped.
	Unreadable []BadRecord
}

// Plan compares the running containers of door with the records and the
// policy's links. It changes nothing.
func (e *Enroller) Plan(ctx context.Context, door Door, running []Container) (Plan, error) {
	plan := Plan{Door: door}
	if _, err := ParseDoor(string(door)); err != nil {
		return plan, err
	}
	recs, bad, err := e.records.List()
	if err != nil {
		return plan, err
	}
	plan.Unreadable = bad
	e.logBad(bad)
	live := map[string]bool{}
	var listErr error
	if links, err := e.pol.List(ctx); err != nil {
		listErr = fmt.Errorf("list links: %w", err)
	} else {
		for _, l := range links {
			if !l.Orphan {
				live[l.CgroupPath+"\x00"+string(l.Priority)] = true
			}
		}
	}
	mine := map[string]Record{}
	for _, r := range recs {
		if r.Door != door {
			plan.Foreign++
			continue
		}
		mine[r.ID] = r
	}
	wanted := map[string]bool{}
	for _, c := range running {
		val, key, ok := EffectiveAnnotation(c.Annotations, e.cfg.AnnotationKey, c.Name)
		if !ok {
			continue // not ours; a record of it, if any, is stale below
		}
		wanted[c.ID] = true
		r, has := mine[c.ID]
		prio, perr := ParseAnnotation(key, val)
		if has && perr == nil && r.Priority == prio && r.Mode == e.pol.Mode() && live[r.CgroupDir+"\x00"+string(prio)] {
			plan.Kept++
			continue
		}
		// Enroll re-validates, reports an invalid value, and replaces.
		plan.Attach = append(plan.Attach, c)
	}
	for id, r := range mine {
		if !wanted[id] {
			plan.Stale = append(plan.Stale, r)
		}
	}
	return plan, listErr
}

// reconciler is implemented by policies (the BPF one) that can remove
// their own orphans, including pins they hold no record of.
type reconciler interface {
	Reconcile(ctx context.Context) ([]policy.Link, error)
}

// RemoveOrphans detaches links whose cgroup no longer exists. A dead
// cgroup belongs to no running container of any door, so this is safe for
// both. It returns the cgroup directories it freed.
func (e *Enroller) RemoveOrphans(ctx context.Context) ([]string, error) {
	var out []string
	if r, ok := e.pol.(reconciler); ok {
		removed, err := r.Reconcile(ctx)
		for _, l := range removed {
			e.log.Info("removed orphan link", "cgroup", l.CgroupPath, "cgroup_id", l.CgroupID, "pin", l.PinPath)
			out = append(out, l.CgroupPath)
		}
		return out, err
	}
	links, err := e.pol.List(ctx)
	if err != nil {
		return nil, err
	}
	var errs []error
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
		out = append(out, l.CgroupPath)
	}
	return out, errors.Join(errs...)
}

// ReconcileReport summarises a Reconcile.
type ReconcileReport struct {
	Plan     Plan
	Enrolled []Result // one per container of Plan.Attach
	Stale    []Result // one per record of Plan.Stale
	Orphans  []string // cgroup dirs of links whose cgroup is gone, detached
}

// Reconcile makes door's part of the policy match the running containers
// of that door, synchronously: one Plan, then the stale records are
// unenrolled, orphan links removed, and missing attachments enrolled.
// Records of the other door are never touched. Errors are collected;
// Reconcile does as much as it can. (The NRI plugin runs the same steps
// but queues the per-container work instead of waiting for it.)
func (e *Enroller) Reconcile(ctx context.Context, door Door, running []Container) (ReconcileReport, error) {
	plan, err := e.Plan(ctx, door, running)
	rep := ReconcileReport{Plan: plan}
	errs := []error{err}
	if _, derr := ParseDoor(string(door)); derr != nil {
		return rep, derr
	}
	for _, r := range plan.Stale {
		res, err := e.Unenroll(ctx, r.ID)
		rep.Stale = append(rep.Stale, res)
		errs = append(errs, err)
	}
	orphans, err := e.RemoveOrphans(ctx)
	rep.Orphans = orphans
	errs = append(errs, err)
	for _, c := range plan.Attach {
		c.Door = door
		res, err := e.Enroll(ctx, c)
		rep.Enrolled = append(rep.Enrolled, res)
		errs = append(errs, err)
	}
	return rep, errors.Join(errs...)
}
