package runtime

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// DefaultCRISocket is containerd's CRI endpoint.
const DefaultCRISocket = "unix:///run/containerd/containerd.sock"

// CRINamespace is the Kubernetes namespace the experiment's pods claim.
const CRINamespace = "agentcg-experiment"

// CRI drives containerd through the CRI API, one pod per session, so that
// NRI (and the agentcg plugin) sees every container as a kubelet would make it.
type CRI struct {
	conn *grpc.ClientConn
	rs   cri.RuntimeServiceClient

	mu   sync.Mutex
	pods map[string]string // container id → pod id
}

// NewCRI connects to the CRI socket and checks that it answers.
func NewCRI(ctx context.Context, endpoint string) (*CRI, error) {
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("cri %s: %w", endpoint, err)
	}
	c := &CRI{conn: conn, rs: cri.NewRuntimeServiceClient(conn), pods: map[string]string{}}
	if _, err := c.rs.Version(ctx, &cri.VersionRequest{}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("cri version on %s: %w", endpoint, err)
	}
	return c, nil
}

func (c *CRI) Name() string { return "containerd" }
func (c *CRI) Close() error { return c.conn.Close() }

func (c *CRI) Versions(ctx context.Context) (map[string]string, error) {
	v, err := c.rs.Version(ctx, &cri.VersionRequest{})
	if err != nil {
		return nil, fmt.Errorf("cri version: %w", err)
	}
	return map[string]string{v.RuntimeName: v.RuntimeVersion, "cri_api": v.RuntimeApiVersion}, nil
}

func (c *CRI) Create(ctx context.Context, s Spec) (string, error) {
	labels := map[string]string{Label: "1"}
	podCfg := &cri.PodSandboxConfig{
		Metadata:     &cri.PodSandboxMetadata{Name: s.Name, Uid: s.Name, Namespace: CRINamespace},
		Labels:       labels,
		Annotations:  s.Annotations,
		LogDirectory: s.LogDir,
		Linux: &cri.LinuxPodSandboxConfig{CgroupParent: s.CgroupParent,
			// Host networking: no CNI setup per pod (under TCG it took
			// longer than the container itself); the replay needs no network.
			SecurityContext: &cri.LinuxSandboxSecurityContext{NamespaceOptions: &cri.NamespaceOption{Network: cri.NamespaceMode_NODE}}},
	}
	pod, err := c.rs.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: podCfg})
	if err != nil {
		return "", fmt.Errorf("cri runp %s: %w", s.Name, err)
	}
	var mounts []*cri.Mount
	for _, b := range s.Binds {
		mounts = append(mounts, &cri.Mount{HostPath: b.Host, ContainerPath: b.Container, Readonly: b.ReadOnly})
	}
	ctr, err := c.rs.CreateContainer(ctx, &cri.CreateContainerRequest{
		PodSandboxId: pod.PodSandboxId,
		Config: &cri.ContainerConfig{
			Metadata:    &cri.ContainerMetadata{Name: s.Name},
			Image:       &cri.ImageSpec{Image: s.Image},
			Args:        s.Args,
			Labels:      labels,
			Annotations: s.Annotations,
			Mounts:      mounts,
			LogPath:     logPath(s),
		},
		SandboxConfig: podCfg,
	})
	if err != nil {
		c.removePod(context.WithoutCancel(ctx), pod.PodSandboxId)
		return "", fmt.Errorf("cri create %s: %w", s.Name, err)
	}
	c.mu.Lock()
	c.pods[ctr.ContainerId] = pod.PodSandboxId
	c.mu.Unlock()
	return ctr.ContainerId, nil
}

func (c *CRI) Start(ctx context.Context, id string) error {
	if _, err := c.rs.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: id}); err != nil {
		return fmt.Errorf("cri start %s: %w", id, err)
	}
	return nil
}

func (c *CRI) Wait(ctx context.Context, id string) (Exit, error) {
	// Every status call is work for containerd, on the same (emulated)
	// CPUs as the sessions; half a second of exit latency costs nothing.
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		st, err := c.rs.ContainerStatus(ctx, &cri.ContainerStatusRequest{ContainerId: id})
		if err != nil {
			return Exit{}, fmt.Errorf("cri status %s: %w", id, err)
		}
		if s := st.Status; s != nil && s.State == cri.ContainerState_CONTAINER_EXITED {
			return Exit{
				Code:       int(s.ExitCode),
				OOMKilled:  s.Reason == "OOMKilled",
				Reason:     s.Reason,
				StartedAt:  time.Unix(0, s.StartedAt),
				FinishedAt: time.Unix(0, s.FinishedAt),
			}, nil
		}
		select {
		case <-ctx.Done():
			return Exit{}, ctx.Err()
		case <-t.C:
		}
	}
}

func (c *CRI) Stop(ctx context.Context, id string, grace time.Duration) error {
	if _, err := c.rs.StopContainer(ctx, &cri.StopContainerRequest{ContainerId: id, Timeout: int64(grace.Seconds())}); err != nil {
		return fmt.Errorf("cri stop %s: %w", id, err)
	}
	return nil
}

func (c *CRI) Remove(ctx context.Context, id string) error {
	c.mu.Lock()
	pod, ok := c.pods[id]
	delete(c.pods, id)
	c.mu.Unlock()
	_, err := c.rs.RemoveContainer(ctx, &cri.RemoveContainerRequest{ContainerId: id})
	if err != nil {
		err = fmt.Errorf("cri rm %s: %w", id, err)
	}
	if ok {
		err = errors.Join(err, c.removePod(ctx, pod))
	}
	return err
}

func (c *CRI) removePod(ctx context.Context, pod string) error {
	if _, err := c.rs.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: pod}); err != nil {
		return fmt.Errorf("cri stopp %s: %w", pod, err)
	}
	if _, err := c.rs.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
		return fmt.Errorf("cri rmp %s: %w", pod, err)
	}
	return nil
}

// RemoveAll removes every labelled pod; removing a pod removes its containers.
func (c *CRI) RemoveAll(ctx context.Context) (int, error) {
	l, err := c.rs.ListPodSandbox(ctx, &cri.ListPodSandboxRequest{Filter: &cri.PodSandboxFilter{LabelSelector: map[string]string{Label: "1"}}})
	if err != nil {
		return 0, fmt.Errorf("cri pods: %w", err)
	}
	var errs []error
	for _, p := range l.Items {
		errs = append(errs, c.removePod(ctx, p.Id))
	}
	c.mu.Lock()
	clear(c.pods)
	c.mu.Unlock()
	return len(l.Items), errors.Join(errs...)
}

func logPath(s Spec) string {
	if s.LogDir == "" {
		return ""
	}
	return s.Name + ".log"
}
