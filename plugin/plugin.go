// Package plugin owns the NRI front door: one handler type whose methods
// turn containerd's container events into enrollments through package
// enroll. StartContainer attaches (the cgroup exists and no user code has
// run), Stop/RemoveContainer detach, Synchronize reconciles.
package plugin

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"time"

	"github.com/agentcg/agentcg/enroll"
	"github.com/agentcg/agentcg/policy"
	"github.com/containerd/nri/pkg/api"
)

// Plugin handles NRI events. Create it with New and hand it to stub.New.
type Plugin struct {
	e   *enroll.Enroller
	log *slog.Logger
	m   *Metrics
}

// New returns the handler over an enroller. m may be nil.
func New(e *enroll.Enroller, log *slog.Logger, m *Metrics) *Plugin {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if m == nil {
		m = NewMetrics(e.Policy())
	}
	return &Plugin{e: e, log: log, m: m}
}

// Configure is called once on registration. The runtime-provided config
// is not used: agentcg reads its own file before loading the policy.
func (p *Plugin) Configure(_ context.Context, config, runtime, version string) (api.EventMask, error) {
	p.log.Info("registered with runtime", "runtime", runtime, "version", version, "runtime_config_bytes", len(config))
	return 0, nil // subscribe to every event we have a handler for
}

// Synchronize reconciles at (re)connection: running containers get their
// attachment, records of vanished containers and orphan links are removed.
func (p *Plugin) Synchronize(ctx context.Context, pods []*api.PodSandbox, ctrs []*api.Container) ([]*api.ContainerUpdate, error) {
	byID := make(map[string]*api.PodSandbox, len(pods))
	for _, pod := range pods {
		byID[pod.GetId()] = pod
	}
	var running []enroll.Container
	for _, c := range ctrs {
		switch c.GetState() {
		case api.ContainerState_CONTAINER_RUNNING, api.ContainerState_CONTAINER_PAUSED:
			running = append(running, containerOf(byID[c.GetPodSandboxId()], c))
		}
	}
	rep, err := p.e.Reconcile(ctx, enroll.DoorNRI, running)
	for _, r := range rep.Enrolled {
		p.m.observe(r, 0)
	}
	for _, r := range rep.Stale {
		p.m.observe(r, 0)
	}
	for range rep.Orphans {
		p.m.detaches.Inc()
	}
	attached := 0
	for _, r := range rep.Enrolled {
		if r.Outcome == enroll.Attached {
			attached++
		}
	}
	p.log.Info("synchronized", "containers", len(ctrs), "running", len(running), "attached", attached, "stale_records", len(rep.Stale), "orphans_removed", len(rep.Orphans))
	if err != nil {
		// Not fatal: failing Synchronize would disconnect the plugin.
		p.log.Warn("reconcile incomplete", "err", err)
	}
	return nil, nil
}

// requestMargin is kept free of the runtime's per-request budget so that
// StartContainer answers before the runtime gives up on the plugin (a
// timed-out plugin is disconnected).
const requestMargin = 250 * time.Millisecond

// defaultBudget applies when the request carries no deadline.
const defaultBudget = 2 * time.Second

// StartContainer attaches the container's priority. Its error, returned
// only under fail_mode closed, makes containerd fail the start. If the
// attach outlives the request's budget (a first BPF load on a slow machine),
// the plugin answers anyway, by the fail mode, and the attach completes in
// the background; Unenroll waits for it, so nothing leaks.
func (p *Plugin) StartContainer(ctx context.Context, pod *api.PodSandbox, ctr *api.Container) error {
	start := time.Now()
	c := containerOf(pod, ctr)
	done := make(chan error, 1)
	go func() {
		res, err := p.e.Enroll(context.WithoutCancel(ctx), c)
		took := time.Since(start)
		p.m.observe(res, took)
		if res.Outcome == enroll.Attached {
			p.log.Info("attach latency", "container", c.ID, "cgroup", res.CgroupDir, "priority", string(res.Priority), "latency_ms", float64(took.Microseconds())/1000)
		}
		done <- err
	}()
	budget := defaultBudget
	if dl, ok := ctx.Deadline(); ok {
		budget = time.Until(dl)
	}
	timer := time.NewTimer(max(budget-requestMargin, 0))
	defer timer.Stop()
	select {
	case err := <-done:
		return err
	case <-timer.C:
		p.m.rejections.WithLabelValues(string(enroll.ReasonContextCanceled)).Inc()
		if p.e.Config().FailMode == enroll.FailClosed {
			p.log.Error("attach did not finish within the NRI request budget; refusing the start (fail_mode closed)", "container", c.ID, "budget", budget)
			return fmt.Errorf("agentcg: container %s: attach did not finish within %s", c.ID, budget)
		}
		p.log.Warn("attach did not finish within the NRI request budget; the container starts and the attach completes in the background (fail_mode open)", "container", c.ID, "budget", budget)
		return nil
	}
}

// StopContainer detaches early; RemoveContainer repeats it harmlessly.
func (p *Plugin) StopContainer(ctx context.Context, _ *api.PodSandbox, ctr *api.Container) ([]*api.ContainerUpdate, error) {
	p.unenroll(ctx, ctr.GetId())
	return nil, nil
}

// RemoveContainer detaches and forgets the container.
func (p *Plugin) RemoveContainer(ctx context.Context, _ *api.PodSandbox, ctr *api.Container) error {
	p.unenroll(ctx, ctr.GetId())
	return nil
}

// Shutdown is called when the runtime shuts the plugin down.
func (p *Plugin) Shutdown(context.Context) {
	p.log.Info("runtime shut the plugin down")
}

// unenroll never fails the runtime's stop or remove; errors are logged by
// the enroller and counted.
func (p *Plugin) unenroll(ctx context.Context, id string) {
	res, _ := p.e.Unenroll(ctx, id)
	p.m.observe(res, 0)
}

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
// says plainly when auto mode fell back to native because the kernel lacks
// the feature (probeErr explains why).
func AnnounceMode(log *slog.Logger, requested policy.Mode, pol policy.Policy, probeErr error) {
	if requested == policy.ModeAuto && pol.Mode() == policy.ModeNative {
		log.Warn("kernel lacks memcg_bpf_ops: using the native fallback (memory.low for high, memory.high for low)", "probe", probeErr)
		return
	}
	log.Info("policy loaded", "mode", string(pol.Mode()), "requested", string(requested))
}

// Enroller returns the enroller the plugin drives.
func (p *Plugin) Enroller() *enroll.Enroller { return p.e }
