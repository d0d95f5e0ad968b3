// Package runtime owns starting the experiment's session containers on a
// real container runtime: Docker through the Engine API (the agentcg runc
// wrapper and hook see the annotation) or containerd through CRI (so NRI
// fires and the agentcg plugin sees it).
package runtime

import (
	"context"
	"fmt"
	"time"
)

// Label marks every container and pod the experiment creates, so cleanup
// finds leftovers of an interrupted run.
const Label = "agentcg.experiment"

// Bind is a host folder or file mounted into the container.
type Bind struct {
	Host, Container string
	ReadOnly        bool
}

// Spec describes one session container.
type Spec struct {
	Name        string // unique per run
	Image       string
	Args        []string // after the image's entrypoint
	Annotations map[string]string
	// CgroupParent in cgroupfs form ("/agentcg-exp/high"): the container's
	// cgroup is created right below it.
	CgroupParent string
	Binds        []Bind
	// LogDir, when set, receives the container's output as <Name>.log
	// (CRI; docker keeps its own logs).
	LogDir string
}

// Exit is how a container ended.
type Exit struct {
	Code       int
	OOMKilled  bool // as the runtime reports it
	Reason     string
	StartedAt  time.Time
	FinishedAt time.Time
}

// Runtime creates, waits for and removes containers.
type Runtime interface {
	Name() string
	Versions(ctx context.Context) (map[string]string, error)
	// Create creates a container (and its pod) without starting it.
	Create(ctx context.Context, s Spec) (string, error)
	// Start starts a created container; the agentcg plugin or hook
	// attaches the policy before the workload runs.
	Start(ctx context.Context, id string) error
	// Wait blocks until the container exits.
	Wait(ctx context.Context, id string) (Exit, error)
	// Stop sends SIGTERM and, after grace, SIGKILL.
	Stop(ctx context.Context, id string, grace time.Duration) error
	// Remove force-removes the container (and its pod).
	Remove(ctx context.Context, id string) error
	// RemoveAll removes every container and pod carrying Label and says how many.
	RemoveAll(ctx context.Context) (int, error)
	Close() error
}

// New opens the named runtime ("docker" or "containerd").
func New(ctx context.Context, name string) (Runtime, error) {
	switch name {
	case "docker":
		return NewDocker(ctx)
	case "containerd":
		return NewCRI(ctx, DefaultCRISocket)
	}
	return nil, fmt.Errorf("runtime %q: allowed values are docker, containerd", name)
}
