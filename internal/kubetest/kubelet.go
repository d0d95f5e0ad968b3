package kubetest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// ReadOnlyURL is the kubelet's read-only API in the VM's systemd profile
// (readOnlyPort in scripts/vm/guest/systemd/kubelet.yaml).
const ReadOnlyURL = "http://127.0.0.1:10255"

// NodeName is the kubelet's node name in the VM; static pods are named
// <manifest name>-<node name>.
const NodeName = "agentcg-vm"

// Pod is the part of a v1.Pod the tests read from the kubelet's /pods.
type Pod struct {
	Metadata struct {
		Name        string            `json:"name"`
		Namespace   string            `json:"namespace"`
		UID         string            `json:"uid"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	Status struct {
		Phase             string            `json:"phase"`
		Reason            string            `json:"reason"`
		Message           string            `json:"message"`
		ContainerStatuses []ContainerStatus `json:"containerStatuses"`
	} `json:"status"`
}

// ContainerStatus is one entry of a pod's status.containerStatuses.
type ContainerStatus struct {
	Name        string `json:"name"`
	ContainerID string `json:"containerID"` // containerd://<id>
	Ready       bool   `json:"ready"`
	State       map[string]struct {
		Reason   string `json:"reason"`
		Message  string `json:"message"`
		ExitCode int    `json:"exitCode"`
	} `json:"state"`
}

// ID returns the runtime's container id (without the containerd:// scheme).
func (c ContainerStatus) ID() string {
	_, id, _ := strings.Cut(c.ContainerID, "://")
	return id
}

// Running reports whether every listed container is running (and, when the
// pod says so, ready).
func (p Pod) Running() bool {
	if p.Status.Phase != "Running" || len(p.Status.ContainerStatuses) == 0 {
		return false
	}
	for _, c := range p.Status.ContainerStatuses {
		if _, ok := c.State["running"]; !ok || c.ID() == "" {
			return false
		}
	}
	return true
}

// Container returns the status of the named container.
func (p Pod) Container(name string) (ContainerStatus, bool) {
	for _, c := range p.Status.ContainerStatuses {
		if c.Name == name {
			return c, true
		}
	}
	return ContainerStatus{}, false
}

// Pods lists the pods the kubelet runs, from its read-only API at base.
func Pods(ctx context.Context, base string) ([]Pod, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/pods", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("kubelet pods: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("kubelet pods: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("kubelet pods: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return DecodePods(body)
}

// DecodePods decodes a v1.PodList.
func DecodePods(body []byte) ([]Pod, error) {
	var list struct {
		Kind  string `json:"kind"`
		Items []Pod  `json:"items"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, fmt.Errorf("decode pod list: %w", err)
	}
	if list.Kind != "PodList" {
		return nil, fmt.Errorf("decode pod list: kind %q, want PodList", list.Kind)
	}
	return list.Items, nil
}

// FindPod returns the pod with that namespace and name.
func FindPod(pods []Pod, namespace, name string) (Pod, bool) {
	for _, p := range pods {
		if p.Metadata.Namespace == namespace && p.Metadata.Name == name {
			return p, true
		}
	}
	return Pod{}, false
}
