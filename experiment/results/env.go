package results

// Env describes where an experiment ran (env.json).
type Env struct {
	KernelRelease   string            `json:"kernel_release"`
	Probe           string            `json:"probe"` // "ok" or the probe error
	PolicyMode      string            `json:"policy_mode"`
	Runtime         string            `json:"runtime"`
	RuntimeVersions map[string]string `json:"runtime_versions"`
	GitCommit       string            `json:"git_commit"`
	AgentcgVersion  string            `json:"agentcg_version"`
	Where           string            `json:"where"` // vm or host
	Accel           string            `json:"accel"` // kvm, tcg or none (host)
	CPUs            int               `json:"cpus"`
	MemTotalBytes   int64             `json:"mem_total_bytes"`
	StartedUnix     float64           `json:"started_unix"`
	Profile         string            `json:"profile"`
}
