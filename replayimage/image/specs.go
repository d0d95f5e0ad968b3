package image

// Pause is the spec of the CRI sandbox ("pause") image the VM guest imports
// as docker.io/agentcg/pause:1: the static pause binary at /pause.
func Pause(binary string) (Spec, error) {
	bin, err := StaticBinary(binary, "/pause")
	if err != nil {
		return Spec{}, err
	}
	return Spec{
		Title:       "agentcg-pause",
		Description: "CRI sandbox process: holds the pod's namespaces and reaps orphans",
		Files:       []File{bin},
		Entrypoint:  []string{"/pause"},
	}, nil
}

// NRIConfigDir is where the agentcg-nri image expects its config
// (config.yaml, mounted from a ConfigMap by the Helm chart).
const NRIConfigDir = "/etc/agentcg"

// NRI is the spec of the agentcg-nri image: the static plugin at
// /agentcg-nri and an empty /etc/agentcg for the config mount. It runs as
// root: loading struct_ops and pinning links needs CAP_BPF and
// CAP_PERFMON, and Kubernetes gives a non-root process no capabilities
// after exec (no ambient capabilities). The chart runs it privileged, for
// the host's cgroup namespace (deploy/helm/agentcg/README.md).
func NRI(binary, version string) (Spec, error) {
	bin, err := StaticBinary(binary, "/agentcg-nri")
	if err != nil {
		return Spec{}, err
	}
	return Spec{
		Title:       "agentcg-nri",
		Description: "agentcg NRI plugin: memcg BPF priority policy for annotated containers",
		Version:     version,
		Files:       []File{bin, {Path: NRIConfigDir, Dir: true, Mode: 0o755}, {Path: "/tmp", Dir: true, Mode: 0o1777}},
		Entrypoint:  []string{"/agentcg-nri"},
		Cmd:         []string{"--config", NRIConfigDir + "/config.yaml"},
	}, nil
}
