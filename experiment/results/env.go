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
	// HostLoadAvg is the host's /proc/loadavg when the experiment started
	// (VM mode passes it in): TCG timing depends on it.
	HostLoadAvg string `json:"host_loadavg,omitempty"`
	// GuestLoadAvg is this machine's at the start.
	LoadAvg     string       `json:"loadavg"`
	Calibration *Calibration `json:"calibration,omitempty"`
	Swap        *SwapDevice  `json:"swap,omitempty"`
	// Reclaim lists the regimes the experiment ran.
	Reclaim []string `json:"reclaim"`
}

// Calibration is how the memory scale was chosen (mem_scale 0).
type Calibration struct {
	Bytes           int64   `json:"bytes"`             // touched by each process of the measurement
	Processes       int     `json:"processes"`         // filling at once (one per session)
	RandomShare     float64 `json:"random_share"`      // page content, as the replays write it
	FillBytesPerS   float64 `json:"fill_bytes_per_s"`  // measured first-touch rate
	NeedBytesPerS   float64 `json:"need_bytes_per_s"`  // HIGH's fastest growth at scale 1 and the run's speed
	Safety          float64 `json:"safety"`            // share of the measured rate HIGH may need
	MemoryCapScale  float64 `json:"memory_cap_scale"`  // largest scale whose parent limit fits this machine's memory
	Scale           float64 `json:"scale"`             // chosen
	ParentLimitAuto bool    `json:"parent_limit_auto"` // the limit was then chosen from the plan
	Note            string  `json:"note"`
}

// SwapDevice is the swap the swap regime used.
type SwapDevice struct {
	Device    string `json:"device"` // /dev/zram0, or existing
	SizeBytes int64  `json:"size_bytes"`
	Algorithm string `json:"algorithm"`
	Created   bool   `json:"created"` // set up (and torn down) by the experiment
}
