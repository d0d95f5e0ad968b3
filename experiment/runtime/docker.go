package runtime

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// DockerRuntimeName is the daemon.json runtime that wraps runc with the agentcg hook.
const DockerRuntimeName = "agentcg"

// Docker drives dockerd through the Engine API.
type Docker struct{ c *client.Client }

// NewDocker connects to DOCKER_HOST or the default socket.
func NewDocker(ctx context.Context) (*Docker, error) {
	c, err := client.New(client.FromEnv)
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	if _, err := c.Ping(ctx, client.PingOptions{}); err != nil {
		c.Close()
		return nil, fmt.Errorf("docker ping: %w", err)
	}
	return &Docker{c}, nil
}

func (d *Docker) Name() string { return "docker" }
func (d *Docker) Close() error { return d.c.Close() }

func (d *Docker) Versions(ctx context.Context) (map[string]string, error) {
	v, err := d.c.ServerVersion(ctx, client.ServerVersionOptions{})
	if err != nil {
		return nil, fmt.Errorf("docker version: %w", err)
	}
	out := map[string]string{"docker": v.Version, "docker_api": v.APIVersion}
	for _, c := range v.Components {
		out[c.Name] = c.Version
	}
	return out, nil
}

func (d *Docker) Create(ctx context.Context, s Spec) (string, error) {
	// Only annotated containers need the wrapper (and its hook); the other
	// arms then also run where daemon.json has no agentcg runtime.
	rt := ""
	if len(s.Annotations) > 0 {
		rt = DockerRuntimeName
	}
	var binds []string
	for _, b := range s.Binds {
		v := b.Host + ":" + b.Container
		if b.ReadOnly {
			v += ":ro"
		}
		binds = append(binds, v)
	}
	r, err := d.c.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: s.Name,
		Config: &container.Config{
			Image:  s.Image,
			Cmd:    s.Args,
			Labels: map[string]string{Label: "1"},
		},
		HostConfig: &container.HostConfig{
			Runtime:     rt,
			Annotations: s.Annotations,
			Resources:   container.Resources{CgroupParent: s.CgroupParent},
			Binds:       binds,
			NetworkMode: "none",
		},
	})
	if err != nil {
		return "", fmt.Errorf("docker create %s: %w", s.Name, err)
	}
	return r.ID, nil
}

func (d *Docker) Start(ctx context.Context, id string) error {
	if _, err := d.c.ContainerStart(ctx, id, client.ContainerStartOptions{}); err != nil {
		return fmt.Errorf("docker start %s: %w", id, err)
	}
	return nil
}

func (d *Docker) Wait(ctx context.Context, id string) (Exit, error) {
	w := d.c.ContainerWait(ctx, id, client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
	select {
	case <-w.Result:
	case err := <-w.Error:
		return Exit{}, fmt.Errorf("docker wait %s: %w", id, err)
	case <-ctx.Done():
		return Exit{}, ctx.Err()
	}
	in, err := d.c.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return Exit{}, fmt.Errorf("docker inspect %s: %w", id, err)
	}
	st := in.Container.State
	if st == nil {
		return Exit{}, errors.New("docker inspect " + id + ": no state")
	}
	e := Exit{Code: st.ExitCode, OOMKilled: st.OOMKilled, Reason: st.Error}
	e.StartedAt, _ = time.Parse(time.RFC3339Nano, st.StartedAt)
	e.FinishedAt, _ = time.Parse(time.RFC3339Nano, st.FinishedAt)
	return e, nil
}

func (d *Docker) Stop(ctx context.Context, id string, grace time.Duration) error {
	secs := int(grace.Seconds())
	if _, err := d.c.ContainerStop(ctx, id, client.ContainerStopOptions{Timeout: &secs}); err != nil {
		return fmt.Errorf("docker stop %s: %w", id, err)
	}
	return nil
}

func (d *Docker) Remove(ctx context.Context, id string) error {
	if _, err := d.c.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true}); err != nil {
		return fmt.Errorf("docker rm %s: %w", id, err)
	}
	return nil
}

func (d *Docker) RemoveAll(ctx context.Context) (int, error) {
	l, err := d.c.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: client.Filters{}.Add("label", Label)})
	if err != nil {
		return 0, fmt.Errorf("docker ps: %w", err)
	}
	var errs []error
	for _, c := range l.Items {
		errs = append(errs, d.Remove(ctx, c.ID))
	}
	return len(l.Items), errors.Join(errs...)
}
