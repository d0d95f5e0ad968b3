package plugin_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentcg/agentcg/enroll"
	"github.com/agentcg/agentcg/policy"
	"github.com/containerd/nri/pkg/adaptation"
	"github.com/containerd/nri/pkg/api"
)

func lowCtr(id string) *api.Container {
	return &api.Container{Id: id, Name: id, PodSandboxId: "pod-dev", State: api.ContainerState_CONTAINER_RUNNING,
		Annotations: map[string]string{"agentcg.priority": "low"}, Linux: &api.LinuxContainer{CgroupsPath: "/k/" + id}}
}

// waitFor polls cond; the deadline only guards against a hang, it asserts
// no timing.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("gave up waiting for %s", what)
}

// A blocked attach while 10 Stop/Remove events arrive: every event is
// answered (NRI would drop a plugin that overran), the other containers
// detach while the attach is still blocked, and once it is released the
// blocked container ends detached too, with no record and no link left.
func TestBlockedAttachWhileStopsArrive(t *testing.T) {
	adaptation.SetPluginRequestTimeout(30 * time.Second)
	t.Cleanup(func() { adaptation.SetPluginRequestTimeout(adaptation.DefaultPluginRequestTimeout) })
	e := start(t, setup{startWait: 200 * time.Millisecond})
	ctx := context.Background()
	var ids []string
	for i := range 10 {
		ids = append(ids, fmt.Sprintf("c%d", i))
	}
	for _, id := range append([]string{"blocked"}, ids...) {
		if _, err := e.tr.Cgroup("k/" + id); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids {
		if err := e.rt.StartContainer(ctx, &api.StartContainerRequest{Pod: pod("dev"), Container: lowCtr(id)}); err != nil {
			t.Fatal(err)
		}
	}
	e.settle(t)
	if n := len(e.pol.Links()); n != 10 {
		t.Fatalf("%d links before the block, want 10", n)
	}
	entered := e.pol.Entered()
	block := make(chan struct{})
	e.pol.SetBlock(block)
	// fail_mode open: the start is answered within the budget.
	if err := e.rt.StartContainer(ctx, &api.StartContainerRequest{Pod: pod("dev"), Container: lowCtr("blocked")}); err != nil {
		t.Fatal(err)
	}
	if dir := <-entered; !strings.HasSuffix(dir, "/k/blocked") {
		t.Fatalf("attach entered for %s", dir)
	}
	for _, id := range ids {
		if _, err := e.rt.StopContainer(ctx, &api.StopContainerRequest{Pod: pod("dev"), Container: lowCtr(id)}); err != nil {
			t.Fatalf("stop %s: %v", id, err)
		}
		if err := e.rt.RemoveContainer(ctx, &api.RemoveContainerRequest{Pod: pod("dev"), Container: lowCtr(id)}); err != nil {
			t.Fatalf("remove %s: %v", id, err)
		}
	}
	// The blocked container is stopped and removed too, behind its attach.
	if err := e.rt.RemoveContainer(ctx, &api.RemoveContainerRequest{Pod: pod("dev"), Container: lowCtr("blocked")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the 10 detaches behind a blocked attach", func() bool { return len(e.pol.Links()) == 0 })
	if c, _ := e.plugin.Connected(); !c {
		t.Fatalf("plugin disconnected:\n%s", e.log)
	}
	close(block)
	e.settle(t)
	if links := e.pol.Links(); len(links) != 0 {
		t.Fatalf("links left: %v", links)
	}
	if recs, bad, _ := e.plugin.Enroller().Records().List(); len(recs)+len(bad) != 0 {
		t.Fatalf("records left: %+v %+v", recs, bad)
	}
	// Still registered: a new container is attached.
	if _, err := e.tr.Cgroup("k/after"); err != nil {
		t.Fatal(err)
	}
	if err := e.rt.StartContainer(ctx, &api.StartContainerRequest{Pod: pod("dev"), Container: lowCtr("after")}); err != nil {
		t.Fatal(err)
	}
	e.settle(t)
	if n := len(e.pol.Links()); n != 1 {
		t.Fatalf("after the block: %d links, want 1\n%s", n, e.log)
	}
}

// agentcg.priority/container.<name> beats agentcg.priority/pod and the
// plain key, the NRI way: an agent pod's sidecar stays low.
func TestPerContainerPriority(t *testing.T) {
	e := start(t, setup{})
	ctx := context.Background()
	p := &api.PodSandbox{Id: "pod-prod", Name: "agent-pod", Namespace: "prod", Annotations: map[string]string{
		"agentcg.priority/container.agent": "high",
		"agentcg.priority":                 "low",
	}}
	want := map[string]policy.Priority{"agent": policy.High, "sidecar": policy.Low}
	for name := range want {
		d, err := e.tr.Cgroup("k/" + name)
		if err != nil {
			t.Fatal(err)
		}
		_ = d
		ctr := &api.Container{Id: "id-" + name, Name: name, PodSandboxId: p.Id, Linux: &api.LinuxContainer{CgroupsPath: "/k/" + name}}
		if err := e.rt.StartContainer(ctx, &api.StartContainerRequest{Pod: p, Container: ctr}); err != nil {
			t.Fatal(err)
		}
	}
	e.settle(t)
	for dir, l := range e.pol.Links() {
		name := filepath.Base(dir)
		if l.Priority != want[name] {
			t.Errorf("%s got %s, want %s", name, l.Priority, want[name])
		}
		delete(want, name)
	}
	if len(want) != 0 {
		t.Fatalf("not attached: %v\n%s", want, e.log)
	}
}

// Forgeries on the NRI path: a container label copied from the image's
// LABEL, and the namespace written as an annotation or pod label, never
// grant high.
func TestForgeriesNRI(t *testing.T) {
	trusted := func(c *enroll.Config) {
		c.High.PodLabels = map[string]string{"agentcg.io/tier": "gold"}
		c.High.TrustPodLabels = true
	}
	tests := []struct {
		name string
		cfg  func(*enroll.Config)
		pod  *api.PodSandbox
		ctr  func(*api.Container)
	}{
		{"image LABEL in container labels", nil,
			&api.PodSandbox{Id: "p", Namespace: "tenant"},
			func(c *api.Container) { c.Labels = map[string]string{"agentcg.io/tier": "gold"} }},
		{"image LABEL in container labels, pod labels trusted", trusted,
			&api.PodSandbox{Id: "p", Namespace: "tenant"},
			func(c *api.Container) { c.Labels = map[string]string{"agentcg.io/tier": "gold"} }},
		{"namespace pod annotation", nil,
			&api.PodSandbox{Id: "p", Namespace: "tenant", Annotations: map[string]string{"io.kubernetes.pod.namespace": "prod"}}, nil},
		{"namespace container annotation", nil,
			&api.PodSandbox{Id: "p", Namespace: "tenant"},
			func(c *api.Container) { c.Annotations["io.kubernetes.pod.namespace"] = "prod" }},
		{"namespace container label", nil,
			&api.PodSandbox{Id: "p", Namespace: "tenant"},
			func(c *api.Container) { c.Labels = map[string]string{"io.kubernetes.pod.namespace": "prod"} }},
		{"namespace pod label", nil,
			&api.PodSandbox{Id: "p", Namespace: "tenant", Labels: map[string]string{"io.kubernetes.pod.namespace": "prod"}}, nil},
		{"pod label without trust", nil,
			&api.PodSandbox{Id: "p", Namespace: "tenant", Labels: map[string]string{"agentcg.io/tier": "gold"}}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.cfg == nil {
				tc.cfg = func(*enroll.Config) {}
			}
			e := start(t, setup{cfg: tc.cfg})
			if _, err := e.tr.Cgroup("k/x"); err != nil {
				t.Fatal(err)
			}
			ctr := &api.Container{Id: "x", Name: "x", PodSandboxId: "p", Annotations: map[string]string{"agentcg.priority": "high"},
				Linux: &api.LinuxContainer{CgroupsPath: "/k/x"}}
			if tc.ctr != nil {
				tc.ctr(ctr)
			}
			if err := e.rt.StartContainer(context.Background(), &api.StartContainerRequest{Pod: tc.pod, Container: ctr}); err != nil {
				t.Fatal(err)
			}
			e.settle(t)
			if links := e.pol.Links(); len(links) != 0 {
				t.Fatalf("forgery granted %v\n%s", links, e.log)
			}
			if got := metric(t, e.metrics.Registry, "agentcg_rejections_total", map[string]string{"reason": "not_allowed"}); got != 1 {
				t.Fatalf("not_allowed rejections = %v", got)
			}
		})
	}
	// The same pod label passes once trusted: the test above is not
	// vacuous.
	e := start(t, setup{cfg: trusted})
	if _, err := e.tr.Cgroup("k/x"); err != nil {
		t.Fatal(err)
	}
	ctr := &api.Container{Id: "x", Name: "x", PodSandboxId: "p", Annotations: map[string]string{"agentcg.priority": "high"}, Linux: &api.LinuxContainer{CgroupsPath: "/k/x"}}
	p := &api.PodSandbox{Id: "p", Namespace: "tenant", Labels: map[string]string{"agentcg.io/tier": "gold"}}
	if err := e.rt.StartContainer(context.Background(), &api.StartContainerRequest{Pod: p, Container: ctr}); err != nil {
		t.Fatal(err)
	}
	e.settle(t)
	if links := e.pol.Links(); len(links) != 1 {
		t.Fatalf("trusted pod label: links %v\n%s", links, e.log)
	}
}

// Synchronize never touches the hook's records (Docker containers, which
// NRI does not list), and a corrupt record does not stop the stale ones
// from detaching.
func TestSynchronizeLeavesHookRecordsAndSkipsCorrupt(t *testing.T) {
	var dockerDir string
	e := start(t, setup{
		before: func(e *env) {
			en, err := enroll.New(e.plugin.Enroller().Config(), e.pol, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				id   string
				door enroll.Door
			}{{"docker1", enroll.DoorHook}, {"gone1", enroll.DoorNRI}, {"gone2", enroll.DoorNRI}} {
				d, err := e.tr.Cgroup("k/" + c.id)
				if err != nil {
					t.Fatal(err)
				}
				if c.id == "docker1" {
					dockerDir, _ = filepath.EvalSymlinks(d)
				}
				if _, err := en.Enroll(context.Background(), enroll.Container{ID: c.id, Door: c.door, CgroupsPath: "/k/" + c.id,
					Annotations: map[string]string{"agentcg.priority": "low"}}); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(en.Records().Dir, "bad.json"), []byte("{not json"), 0o644); err != nil {
				t.Fatal(err)
			}
		},
	})
	e.settle(t)
	links := e.pol.Links()
	if _, ok := links[dockerDir]; !ok || len(links) != 1 {
		t.Fatalf("links after sync: %v, want only the hook's %s\n%s", links, dockerDir, e.log)
	}
	recs, bad, _ := e.plugin.Enroller().Records().List()
	if len(recs) != 1 || recs[0].Door != enroll.DoorHook || len(bad) != 1 {
		t.Fatalf("records %+v, bad %+v", recs, bad)
	}
	if got := metric(t, e.metrics.Registry, "agentcg_record_errors_total", nil); got != 1 {
		t.Fatalf("record errors = %v", got)
	}
	if !strings.Contains(e.log.String(), "foreign_records=1") || !strings.Contains(e.log.String(), "stale_detached=2") {
		t.Fatalf("log:\n%s", e.log)
	}
}
