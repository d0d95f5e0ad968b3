//go:build vmtest

package hook_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentcg/agentcg/bpf"
	"github.com/agentcg/agentcg/hook/hookstats"
	"github.com/agentcg/agentcg/internal/vmtest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// envInt reads a positive integer from the environment.
func envInt(key string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(key)); err == nil && v > 0 {
		return v
	}
	return def
}

// criPod is one CRI pod sandbox the churn creates its CRI containers in,
// driven over gRPC (crictl's start-up dominates under emulation).
type criPod struct {
	rt  cri.RuntimeServiceClient
	id  string
	cfg *cri.PodSandboxConfig
}

func newCRIPod(t *testing.T, name, parent string) *criPod {
	conn, err := grpc.NewClient("unix:///run/containerd/containerd.sock", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	p := &criPod{rt: cri.NewRuntimeServiceClient(conn), cfg: &cri.PodSandboxConfig{
		Metadata:     &cri.PodSandboxMetadata{Name: name, Namespace: "agentcg-soak", Uid: name + "-uid"},
		LogDirectory: "/tmp/agentcg-hook-pods/" + name,
		Linux: &cri.LinuxPodSandboxConfig{CgroupParent: parent, SecurityContext: &cri.LinuxSandboxSecurityContext{
			NamespaceOptions: &cri.NamespaceOption{Network: cri.NamespaceMode_NODE}}},
	}}
	r, err := p.rt.RunPodSandbox(context.Background(), &cri.RunPodSandboxRequest{Config: p.cfg})
	if err != nil {
		t.Fatal(err)
	}
	p.id = r.GetPodSandboxId()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		p.rt.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: p.id})
		p.rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: p.id})
	})
	return p
}

// start creates and starts one annotated container.
func (p *criPod) start(ctx context.Context, name, prio string) (string, error) {
	cr, err := p.rt.CreateContainer(ctx, &cri.CreateContainerRequest{
		PodSandboxId: p.id,
		Config: &cri.ContainerConfig{
			Metadata:    &cri.ContainerMetadata{Name: name},
			Image:       &cri.ImageSpec{Image: vmtest.PauseImage},
			Annotations: map[string]string{"agentcg.priority": prio},
			LogPath:     name + ".log",
		},
		SandboxConfig: p.cfg,
	})
	if err != nil {
		return "", fmt.Errorf("CRI create %s: %w", name, err)
	}
	id := cr.GetContainerId()
	if _, err := p.rt.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: id}); err != nil {
		return id, fmt.Errorf("CRI start %s: %w", name, err)
	}
	return id, nil
}

// remove stops and removes a container.
func (p *criPod) remove(ctx context.Context, id string) error {
	if _, err := p.rt.StopContainer(ctx, &cri.StopContainerRequest{ContainerId: id}); err != nil {
		return fmt.Errorf("CRI stop %s: %w", id, err)
	}
	if _, err := p.rt.RemoveContainer(ctx, &cri.RemoveContainerRequest{ContainerId: id}); err != nil {
		return fmt.Errorf("CRI remove %s: %w", id, err)
	}
	return nil
}

// TestVMChurnMixed is issue 10's churn: create/remove cycles alternating
// Docker (runc wrapper and hook) and CRI (NRI plugin) on one node config,
// high and low, two cycles at a time. Every AGENTCG_SOAK_RESTART_EVERY
// cycles the plugin is killed (SIGKILL) and started again, with one CRI
// and one Docker container running across the restart; the CRI one is
// removed while the plugin is down, so only its Synchronize can clean up
// after it. Afterwards no pin, no BPF link and no record may be left. The
// VM tier runs AGENTCG_SOAK_CYCLES=100 (the default); `make soak` runs 1000.
func TestVMChurnMixed(t *testing.T) {
	cycles := envInt("AGENTCG_SOAK_CYCLES", 100)
	restartEvery := envInt("AGENTCG_SOAK_RESTART_EVERY", min(100, max(1, cycles/4)))
	e := newDockerEnv(t, "soak", "fail_mode: open\nhigh:\n  allow_all: true\n")
	before, err := bpf.LinkIDs()
	if err != nil {
		t.Fatal(err)
	}
	e.startNRI()
	pod := newCRIPod(t, "soak", "/agentcg-hook-soak")
	ctx := context.Background()
	fail := func(err error) {
		t.Helper()
		t.Fatalf("%v\nhook log:\n%s\nplugin log:\n%s", err, tail(e.log(), 20), tail(e.nriLogText(), 20))
	}

	cycle := func(i int) error {
		prio := []string{"high", "low"}[(i/2)%2]
		if i%2 == 1 {
			id, err := pod.start(ctx, fmt.Sprintf("soak%04d", i), prio)
			if id != "" {
				err = joinErr(err, pod.remove(ctx, id))
			}
			return err
		}
		id, err := e.start(ctx, map[string]string{"agentcg.priority": prio})
		if id != "" {
			err = joinErr(err, e.remove(ctx, id))
		}
		return err
	}
	start := time.Now()
	restarts := 0
	for done := 0; done < cycles; {
		block := min(restartEvery, cycles-done)
		var next atomic.Int64
		errs := make(chan error, 2)
		var wg sync.WaitGroup
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := next.Add(1) - 1; i < int64(block); i = next.Add(1) - 1 {
					if err := cycle(done + int(i)); err != nil {
						errs <- fmt.Errorf("cycle %d: %w", done+int(i), err)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			fail(err)
		}
		done += block
		if done%100 == 0 || done == cycles {
			t.Logf("%d cycles in %s", done, time.Since(start).Round(time.Second))
		}
		if done == cycles {
			break
		}
		criID, err := pod.start(ctx, fmt.Sprintf("across%d", restarts), "low")
		if err != nil {
			fail(err)
		}
		dockerID, err := e.start(ctx, map[string]string{"agentcg.priority": "high"})
		if err != nil {
			fail(err)
		}
		e.killNRI()
		if err := pod.remove(ctx, criID); err != nil { // no RemoveContainer reaches a dead plugin
			fail(err)
		}
		e.startNRI()
		if err := e.remove(ctx, dockerID); err != nil {
			fail(err)
		}
		restarts++
	}
	elapsed := time.Since(start)
	// The last RemoveContainer may still be detaching in the background.
	e.waitPins(0, 60*time.Second)
	deadline := time.Now().Add(60 * time.Second)
	for e.records() != 0 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if n := e.records(); n != 0 {
		t.Fatalf("%d container records left after %d cycles", n, cycles)
	}
	after, err := bpf.LinkIDs()
	if err != nil {
		t.Fatal(err)
	}
	var leaked []uint32
	for _, id := range after {
		if !slices.Contains(before, id) {
			leaked = append(leaked, id)
		}
	}
	// The HIGH activity tracepoint is unpinned with the last HIGH link.
	if len(leaked) != 0 {
		t.Fatalf("%d BPF links leaked after %d cycles: %v", len(leaked), cycles, leaked)
	}
	c := e.counts()
	docker := (cycles+1)/2 + restarts
	t.Logf("SOAK %d create/remove cycles (%d Docker, %d CRI) + %d across %d plugin restarts (SIGKILL), in %s: 0 pins, 0 leaked links, 0 records; hook: %d attached, %d detached, %d without policy %v",
		cycles, (cycles+1)/2, cycles/2, 2*restarts, restarts, elapsed.Round(time.Second),
		c.Total("createRuntime", "attached"), c.Total("poststop", "detached"), hookstats.Sum(c.WithoutPolicy), c.WithoutPolicy)
	os.WriteFile(filepath.Join(vmtest.ResultsDir(t), "soak.txt"), []byte(fmt.Sprintf("cycles %d\ndocker_containers %d\nrestarts %d\nseconds %.1f\nhook_attached %d\nhook_without_policy %d\n",
		cycles, docker, restarts, elapsed.Seconds(), c.Total("createRuntime", "attached"), hookstats.Sum(c.WithoutPolicy))), 0o644)
}

func joinErr(a, b error) error {
	if a == nil {
		return b
	}
	if b == nil {
		return a
	}
	return fmt.Errorf("%w; %w", a, b)
}
