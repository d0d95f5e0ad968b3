package doctor

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/agentcg/agentcg/bpf"
	"github.com/agentcg/agentcg/internal/configure"
	"github.com/spf13/cobra"
)

// ErrFailed makes `agentcg doctor` exit 1 when a check failed.
var ErrFailed = errors.New("some checks failed")

// Command is `agentcg doctor`.
func Command() *cobra.Command {
	env := Env{Probe: bpf.Probe, ContainerdOptions: configure.DefaultContainerdOptions()}
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "doctor [--json] [--config FILE]",
		Short: "Check this node for agentcg: kernel, bpffs, privileges, cgroups, runtime config, plugin, hook",
		Long: `Check this node the way an operator would before trusting agentcg on it.

Checks: the agentcg config, the kernel feature (memcg_bpf_ops), bpffs under
the pin dir, this process's privileges, cgroup v2 with the memory
controller, the cgroup drivers of containerd, Docker and the kubelet,
containerd's config (as agentcg configure --check), Docker's agentcg
runtime, a running agentcg-nri (and its /readyz when metrics_addr is set),
whether fail_mode closed also holds while the plugin is down (containerd
>= 2.2 requiring it), the hook binaries, and the state dir. Each failed check says what to
change. Exit 1 if any check failed; warnings do not fail.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rs := Run(cmd.Context(), env)
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(rs); err != nil {
					return err
				}
			} else {
				Print(cmd.OutOrStdout(), rs)
			}
			if Failed(rs) {
				return ErrFailed
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the results as JSON")
	cmd.Flags().StringVar(&env.ConfigPath, "config", "", "agentcg config (default /etc/agentcg/config.yaml if present)")
	cmd.Flags().StringVar(&env.Root, "root", "/", "read the node's files under this root (for inspecting a mounted image)")
	return cmd
}

// Print writes one line per check, and the fix under each warning or failure.
func Print(w io.Writer, rs []Result) {
	for _, r := range rs {
		fmt.Fprintf(w, "%-6s %-18s %s\n", "["+string(r.Status)+"]", r.Name, r.Detail)
		if r.Fix != "" {
			fmt.Fprintf(w, "       %-18s fix: %s\n", "", r.Fix)
		}
	}
	n := map[Status]int{}
	for _, r := range rs {
		n[r.Status]++
	}
	fmt.Fprintf(w, "%d ok, %d warn, %d fail, %d skip\n", n[OK], n[Warn], n[Fail], n[Skip])
}
