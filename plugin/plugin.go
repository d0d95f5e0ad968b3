// Package plugin owns the NRI front door: one handler type whose methods
// turn containerd's container events into enrollments through package
// enroll. StartContainer attaches (the cgroup exists and no user code has
// run), Stop/RemoveContainer detach, Synchronize reconciles.
//
// NRI serialises events and drops a plugin that overruns its request
// timeout, so no handler waits without a bound: the work for each container
// runs on that container's own queue (events of one container keep their
// order, different containers never wait for each other), Stop and Remove
// only queue the detach, StartContainer waits for its attach at most until
// shortly before the request's deadline, and Synchronize plans in one pass
// and queues the rest.
package plugin

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentcg/agentcg/enroll"
	"github.com/agentcg/agentcg/policy"
	"github.com/containerd/nri/pkg/api"
)

// Options configure a Plugin; zero fields take defaults.
type Options struct {
	Log     *slog.Logger
	Metrics *Metrics // nil: a fresh NewMetrics
	// WorkTimeout bounds one queued enroll or unenroll (default 60 s). It
	// is the longest a slow attach may hold up its own container's later
	// events; other containers are never held up.
	WorkTimeout time.Duration
	// Status, if set, is told whenever the connection state changes.
	Status *StatusFile
	// StartWait, if set, caps how long StartContainer waits for its attach
	// below what the request's deadline allows (tests use it to keep a
	// wide gap to the runtime's timeout).
	StartWait time.Duration
}

// DefaultWorkTimeout is Options.WorkTimeout's default.
const DefaultWorkTimeout = 60 * time.Second

// Plugin handles NRI events. Create it with New and hand it to stub.New.
type Plugin struct {
	e      *enroll.Enroller
	log    *slog.Logger
	m      *Metrics
	q      queues
	work   time.Duration
	status *StatusFile
	// startWait caps StartContainer's wait (Options.StartWait).
	startWait time.Duration

	mu        sync.Mutex
	connected bool
	since     time.Time
	// configures counts Configure calls (Run's watchdog on registration);
	// attempts numbers Run's connection attempts.
	configures, attempts atomic.Uint64
}

// New returns the handler over an enroller.
func New(e *enroll.Enroller, o Options) *Plugin {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(e.Policy(), BuildInfo{})
	}
	if o.WorkTimeout <= 0 {
		o.WorkTimeout = DefaultWorkTimeout
	}
	p := &Plugin{e: e, log: o.Log, m: o.Metrics, work: o.WorkTimeout, status: o.Status, startWait: o.StartWait, since: time.Now()}
	p.m.setQueue(p.q.pending)
	return p
}

// Configure is called once per registration. The runtime-provided config
// is not used: agentcg reads its own file before loading the policy.
func (p *Plugin) Configure(_ context.Context, config, runtime, version string) (api.EventMask, error) {
	p.configures.Add(1)
	p.log.Info("registered with runtime", "runtime", runtime, "version", version, "runtime_config_bytes", len(config))
	if p.status != nil {
		p.status.Runtime(runtime, version)
	}
	return 0, nil // subscribe to every event we have a handler for
}

// Synchronize reconciles at each (re)connection, in O(N): one Plan (one
// listing of the records and of the links), then the stale records' detach,
// the orphan sweep and the missing attaches are queued, and the runtime
// gets its answer. Only records of the NRI door are considered: Docker
// containers (the hook's) are never listed by NRI and never touched here.
func (p *Plugin) Synchronize(ctx context.Context, pods []*api.PodSandbox, ctrs []*api.Container) ([]*api.ContainerUpdate, error) {
	byID := make(map[string]*api.PodSandbox, len(pods))
	for _, pod := range pods {
		byID[pod.GetId()] = pod
	}
	var running []enroll.Container
	starting := map[string]bool{}
	for _, c := range ctrs {
		switch c.GetState() {
		case api.ContainerState_CONTAINER_RUNNING, api.ContainerState_CONTAINER_PAUSED:
			running = append(running, containerOf(byID[c.GetPodSandboxId()], c))
		case api.ContainerState_CONTAINER_CREATED:
			// Its StartContainer may have attached it already (containerd
			// marks it running only after the task starts): not stale.
			starting[c.GetId()] = true
		}
	}
	plan, err := p.e.Plan(ctx, enroll.DoorNRI, running)
	if err != nil {
		// Not fatal: failing Synchronize would disconnect the plugin.
		p.log.Warn("reconcile plan incomplete", "err", err)
	}
	p.m.recordErrors.Add(float64(len(plan.Unreadable)))
	// Stale detaches, then the orphan sweep, on one queue of their own:
	// in that order the sweep finds only links that no record explains.
	stale := slices.DeleteFunc(plan.Stale, func(r enroll.Record) bool { return starting[r.ID] })
	p.q.submit(reconcileQueue, func() {
		ctx, cancel := context.WithTimeout(context.Background(), p.work)
		defer cancel()
		for _, r := range stale {
			res, _ := p.e.Unenroll(ctx, r.ID)
			p.m.observe(res, 0)
		}
		orphans, err := p.e.RemoveOrphans(ctx)
		p.m.detaches.Add(float64(len(orphans)))
		if err != nil {
			p.log.Warn("orphan sweep incomplete", "err", err)
		}
		p.log.Info("reconciled", "stale_detached", len(stale), "orphans_removed", len(orphans))
	})
	closed := p.e.Config().FailMode == enroll.FailClosed
	for _, c := range plan.Attach {
		p.q.submit(c.ID, func() {
			_, err := p.enroll(c, time.Now())
			if err != nil && closed {
				p.log.Error("container runs without policy although fail_mode is closed: it started while the plugin was not connected, and a running container cannot be refused (containerd before 2.2 has no required plugins)", "container", c.ID, "err", err)
			}
		})
	}
	p.setConnected(true)
	p.log.Info("synchronized", "containers", len(ctrs), "running", len(running), "kept", plan.Kept, "attach_queued", len(plan.Attach),
		"stale_records", len(stale), "foreign_records", plan.Foreign, "unreadable_records", len(plan.Unreadable))
	return nil, nil
}

// reconcileQueue is the queue key of the stale detaches and the orphan
// sweep ("\x00" is never in a container id).
const reconcileQueue = "\x00reconcile"

// requestMargin is kept free of the runtime's per-request budget so that
// StartContainer answers before the runtime gives up on the plugin (a
// timed-out plugin is disconnected): a tenth of the budget, at least
// minMargin.
func requestMargin(budget time.Duration) time.Duration { return max(minMargin, budget/10) }

const minMargin = 250 * time.Millisecond

// defaultBudget applies when the request carries no deadline.
const defaultBudget = 2 * time.Second

// StartContainer attaches the container's priority. Its error, returned
// only under fail_mode closed, makes containerd fail the start. If the
// attach outlives the request's budget (a slow or blocked attach), the
// plugin answers anyway, by the fail mode, and the attach completes on the
// container's queue, where a later Stop or Remove waits for it, so nothing
// leaks; under closed a detach is queued right behind it.
func (p *Plugin) StartContainer(ctx context.Context, pod *api.PodSandbox, ctr *api.Container) error {
	start := time.Now()
	c := containerOf(pod, ctr)
	done := make(chan error, 1)
	p.q.submit(c.ID, func() {
		_, err := p.enroll(c, start)
		done <- err
	})
	budget := defaultBudget
	if dl, ok := ctx.Deadline(); ok {
		budget = time.Until(dl)
	}
	wait := max(budget-requestMargin(budget), 0)
	if p.startWait > 0 {
		wait = min(wait, p.startWait)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case err := <-done:
		return err
	case <-timer.C:
		p.m.rejections.WithLabelValues(string(enroll.ReasonContextCanceled)).Inc()
		if p.e.Config().FailMode == enroll.FailClosed {
			// The attach goes on; the detach queued behind it takes it off
			// again, so a refused container holds no link (and no place
			// under the high cap) until it is removed.
			p.unenroll(c.ID)
			p.log.Error("attach did not finish within the NRI request budget; refusing the start (fail_mode closed)", "container", c.ID, "budget", budget)
			return fmt.Errorf("agentcg: container %s: attach did not finish within %s", c.ID, budget)
		}
		p.log.Warn("attach did not finish within the NRI request budget; the container starts and the attach completes in the background (fail_mode open)", "container", c.ID, "budget", budget)
		return nil
	}
}

// enroll runs one enrollment on the caller's (queue) goroutine, bounded
// by the work timeout, and counts it.
func (p *Plugin) enroll(c enroll.Container, start time.Time) (enroll.Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), p.work)
	defer cancel()
	res, err := p.e.Enroll(ctx, c)
	took := time.Since(start)
	p.m.observe(res, took)
	if res.Outcome == enroll.Attached {
		p.log.Info("attach latency", "container", c.ID, "cgroup", res.CgroupDir, "priority", string(res.Priority), "latency_ms", float64(took.Microseconds())/1000)
	}
	return res, err
}

// StopContainer queues the detach and returns at once; RemoveContainer
// repeats it harmlessly.
func (p *Plugin) StopContainer(_ context.Context, _ *api.PodSandbox, ctr *api.Container) ([]*api.ContainerUpdate, error) {
	p.unenroll(ctr.GetId())
	return nil, nil
}

// RemoveContainer queues the detach and returns at once.
func (p *Plugin) RemoveContainer(_ context.Context, _ *api.PodSandbox, ctr *api.Container) error {
	p.unenroll(ctr.GetId())
	return nil
}

// Shutdown is called when the runtime shuts the plugin down.
func (p *Plugin) Shutdown(context.Context) {
	p.log.Info("runtime shut the plugin down")
	p.setConnected(false)
}

// unenroll queues a detach behind the container's earlier work. It never
// fails the runtime's stop or remove; errors are logged by the enroller
// and counted.
func (p *Plugin) unenroll(id string) {
	p.q.submit(id, func() {
		ctx, cancel := context.WithTimeout(context.Background(), p.work)
		defer cancel()
		res, _ := p.e.Unenroll(ctx, id)
		p.m.observe(res, 0)
	})
}

// Disconnected tells the plugin that the runtime connection is gone
// (stub.WithOnClose).
func (p *Plugin) Disconnected() { p.setConnected(false) }

func (p *Plugin) setConnected(c bool) {
	p.mu.Lock()
	changed := p.connected != c
	if changed {
		p.connected, p.since = c, time.Now()
	}
	since := p.since
	p.mu.Unlock()
	p.m.setConnected(c)
	if changed && p.status != nil {
		p.status.Connected(c, since)
	}
}

// Connected reports whether the plugin is registered and synchronized with
// the runtime, and since when that holds (readiness).
func (p *Plugin) Connected() (bool, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.connected, p.since
}

// Wait blocks until all queued work is done or ctx ends (shutdown, tests).
func (p *Plugin) Wait(ctx context.Context) error { return p.q.wait(ctx) }

// Pending is the number of queued or running operations.
func (p *Plugin) Pending() int { return p.q.pending() }

// containerOf maps an NRI container to the enroller's view. Pod annotations
// apply to every container of the pod, and the container's own win (the
// priority key itself is looked up NRI's way: KEY/container.<name>, then
// KEY/pod, then KEY). The namespace is the one the kubelet gave the runtime;
// pod-sandbox labels are passed for high.trust_pod_labels. Container labels
// are never passed: containerd copies the image's LABELs into them.
func containerOf(pod *api.PodSandbox, ctr *api.Container) enroll.Container {
	ann := maps.Clone(pod.GetAnnotations())
	if ann == nil {
		ann = map[string]string{}
	}
	maps.Copy(ann, ctr.GetAnnotations())
	return enroll.Container{
		ID:          ctr.GetId(),
		Door:        enroll.DoorNRI,
		Name:        ctr.GetName(),
		Pid:         int(ctr.GetPid()),
		CgroupsPath: ctr.GetLinux().GetCgroupsPath(),
		Annotations: ann,
		Namespace:   pod.GetNamespace(),
		PodLabels:   maps.Clone(pod.GetLabels()),
	}
}

// AnnounceMode logs, once at start, which mechanism the policy uses, and
// says plainly when auto mode fell back to native and why (probeErr).
func AnnounceMode(log *slog.Logger, requested policy.Mode, pol policy.Policy, probeErr error) {
	if requested == policy.ModeAuto && pol.Mode() == policy.ModeNative {
		log.Warn("BPF policy unavailable: using the native fallback (memory.low for high, memory.high for low)", "why", probeErr)
		return
	}
	log.Info("policy loaded", "mode", string(pol.Mode()), "requested", string(requested))
}

// Enroller returns the enroller the plugin drives.
func (p *Plugin) Enroller() *enroll.Enroller { return p.e }

// queues runs work per key (container id) in submission order, one
// goroutine per busy key; idle keys cost nothing.
type queues struct {
	mu   sync.Mutex
	m    map[string]*queue
	n    int           // queued or running jobs
	idle chan struct{} // closed when n drops to 0; nil while n is 0
}

type queue struct{ jobs []func() }

func (q *queues) submit(key string, job func()) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.m == nil {
		q.m = map[string]*queue{}
	}
	if q.n == 0 {
		q.idle = make(chan struct{})
	}
	q.n++
	if w, ok := q.m[key]; ok {
		w.jobs = append(w.jobs, job)
		return
	}
	w := &queue{jobs: []func(){job}}
	q.m[key] = w
	go q.run(key, w)
}

func (q *queues) run(key string, w *queue) {
	for {
		q.mu.Lock()
		if len(w.jobs) == 0 {
			delete(q.m, key)
			q.mu.Unlock()
			return
		}
		job := w.jobs[0]
		w.jobs = w.jobs[1:]
		q.mu.Unlock()
		job()
		q.mu.Lock()
		if q.n--; q.n == 0 {
			close(q.idle)
			q.idle = nil
		}
		q.mu.Unlock()
	}
}

func (q *queues) pending() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

func (q *queues) wait(ctx context.Context) error {
	q.mu.Lock()
	idle := q.idle
	q.mu.Unlock()
	if idle == nil {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%d operations still queued: %w", q.pending(), ctx.Err())
	}
}
