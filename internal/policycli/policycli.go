// Package policycli owns the policy subcommands of bin/agentcg: probe,
// attach, detach and status. Each command is a thin layer over policy/mode.
package policycli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/agentcg/agentcg/bpf"
	"github.com/agentcg/agentcg/hook/hookstats"
	"github.com/agentcg/agentcg/policy"
	"github.com/agentcg/agentcg/policy/mode"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// Commands returns the policy subcommands.
func Commands() []*cobra.Command {
	return []*cobra.Command{probeCmd(), attachCmd(), detachCmd(), statusCmd()}
}

// ProbeResult is what `probe --json` prints.
type ProbeResult struct {
	Feature       string `json:"feature"`
	Available     bool   `json:"available"`
	Error         string `json:"error,omitempty"`
	KernelRelease string `json:"kernel_release"`
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

func probeCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "probe",
		Short: "Report whether the kernel can run the BPF policy (memcg_bpf_ops); exit 1 if not",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			err := bpf.Probe()
			r := ProbeResult{Feature: bpf.Feature, Available: err == nil, KernelRelease: kernelRelease()}
			if err != nil {
				r.Error = err.Error()
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if e := enc.Encode(r); e != nil {
					return e
				}
			} else {
				state := "available"
				if err != nil {
					state = "missing"
				}
				fmt.Fprintf(out, "%s: %s\nkernel: %s\n", bpf.Feature, state, r.KernelRelease)
			}
			return err
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

// policyFlags are the knobs shared by attach (and by the modes it opens).
type policyFlags struct {
	mode string
	cfg  policy.Config
}

func (f *policyFlags) register(c *cobra.Command) {
	d := policy.DefaultConfig()
	fl := c.Flags()
	fl.StringVar(&f.mode, "mode", string(policy.ModeAuto), "bpf, native or auto (bpf when the kernel has memcg_bpf_ops)")
	fl.StringVar(&f.cfg.PinDir, "pin-dir", d.PinDir, "bpffs folder for pinned links")
	fl.Uint32Var(&f.cfg.GatePct, "gate-pct", d.GatePct, "delay LOW only while the limited parent's usage is at least this % of its limit (0: always)")
	fl.Uint32Var(&f.cfg.DelayBaseMs, "delay-base-ms", d.DelayBaseMs, "LOW delay at the gate")
	fl.Uint32Var(&f.cfg.DelayMaxMs, "delay-max-ms", d.DelayMaxMs, "LOW delay at 100% parent usage (max 2000)")
	fl.Uint32Var(&f.cfg.HighActiveWindowMs, "high-window-ms", d.HighActiveWindowMs, "HIGH counts as active this long after it grew by --high-growth-bytes within one such window (0: always active)")
	fl.Uint64Var(&f.cfg.HighGrowthBytes, "high-growth-bytes", d.HighGrowthBytes, "growth of a HIGH cgroup's usage within --high-window-ms that makes it active")
	fl.Int64Var(&f.cfg.NativeLowBytes, "native-low-bytes", d.NativeLowBytes, "native mode: memory.low for HIGH")
	fl.Int64Var(&f.cfg.NativeHighBytes, "native-high-bytes", d.NativeHighBytes, "native mode: memory.high for LOW")
}

func (f *policyFlags) open(ctx context.Context) (policy.Policy, error) {
	m, err := policy.ParseMode(f.mode)
	if err != nil {
		return nil, err
	}
	return mode.Open(ctx, mode.Options{Mode: m, Config: f.cfg})
}

func printLinks(w io.Writer, links []policy.Link) {
	for _, l := range links {
		fmt.Fprintf(w, "%s\t%s\tcgroup %d\t%s", l.Mode, l.Priority, l.CgroupID, l.CgroupPath)
		if l.PinPath != "" {
			fmt.Fprintf(w, "\tpin %s", l.PinPath)
		}
		fmt.Fprintln(w)
	}
}

func attachCmd() *cobra.Command {
	var f policyFlags
	var high, low []string
	c := &cobra.Command{
		Use:   "attach --high DIR... --low DIR...",
		Short: "Apply priorities to cgroup directories; links stay pinned after exit",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(high)+len(low) == 0 {
				return errors.New("nothing to attach: give --high and/or --low cgroup directories")
			}
			ctx := cmd.Context()
			p, err := f.open(ctx)
			if err != nil {
				return err
			}
			defer p.Close()
			var links []policy.Link
			var errs []error
			for _, a := range []struct {
				prio policy.Priority
				dirs []string
			}{{policy.High, high}, {policy.Low, low}} {
				for _, d := range a.dirs {
					l, err := p.Attach(ctx, d, a.prio)
					if err != nil {
						errs = append(errs, err)
						continue
					}
					links = append(links, l)
				}
			}
			printLinks(cmd.OutOrStdout(), links)
			return errors.Join(errs...)
		},
	}
	f.register(c)
	c.Flags().StringArrayVar(&high, "high", nil, "cgroup directory to give HIGH priority (repeatable)")
	c.Flags().StringArrayVar(&low, "low", nil, "cgroup directory to give LOW priority (repeatable)")
	return c
}

// openAll opens every policy whose records may exist: native always, bpf
// when the kernel has it.

func openAll(ctx context.Context, pinDir string) ([]policy.Policy, error) {
	cfg := policy.Config{PinDir: pinDir}
	var ps []policy.Policy
	for _, m := range []policy.Mode{policy.ModeBPF, policy.ModeNative} {
		p, err := mode.Open(ctx, mode.Options{Mode: m, Config: cfg})
		if bpf.IsMissingFeature(err) {
			continue
		}
		if err != nil {
			closeAll(ps)
			return nil, err
		}
		ps = append(ps, p)
	}
	return ps, nil
}

func closeAll(ps []policy.Policy) {
	for _, p := range ps {
		p.Close()
	}
}

type detacherAll interface {
	DetachAll(ctx context.Context) error
}

type reconciler interface {
	Reconcile(ctx context.Context) ([]policy.Link, error)
}

func detachCmd() *cobra.Command {
	var all bool
	var pinDir string
	c := &cobra.Command{
		Use:   "detach [DIR...|--all]",
		Short: "Remove priorities from cgroups (works after the cgroup is gone); --all removes everything",
		RunE: func(cmd *cobra.Command, args []string) error {
			if all == (len(args) > 0) {
				return errors.New("give cgroup directories or --all, not both or neither")
			}
			ctx := cmd.Context()
			ps, err := openAll(ctx, pinDir)
			if err != nil {
				return err
			}
			defer closeAll(ps)
			var errs []error
			for _, p := range ps {
				if all {
					if d, ok := p.(detacherAll); ok {
						errs = append(errs, d.DetachAll(ctx))
						continue
					}
					links, err := p.List(ctx)
					errs = append(errs, err)
					for _, l := range links {
						errs = append(errs, p.Detach(ctx, l.CgroupPath))
					}
					continue
				}
				for _, d := range args {
					errs = append(errs, p.Detach(ctx, d))
				}
			}
			return errors.Join(errs...)
		},
	}
	c.Flags().BoolVar(&all, "all", false, "detach every attachment and remove every pin agentcg made under the pin dir")
	c.Flags().StringVar(&pinDir, "pin-dir", policy.DefaultPinDir, "bpffs folder for pinned links")
	return c
}

// Status is what `status --json` prints.
type Status struct {
	KernelRelease  string        `json:"kernel_release"`
	BPFAvailable   bool          `json:"bpf_available"`
	Links          []LinkStatus  `json:"links"`
	RemovedOrphans []policy.Link `json:"removed_orphans"`
	// Totals are the node-wide counters per priority (bpf mode): they never
	// drop when a container goes, unlike the per-link counters.
	Totals map[policy.Priority]policy.Counters `json:"totals,omitempty"`
	Hook   *HookStatus                         `json:"hook,omitempty"` // absent when the hook never ran
}

// HookStatus is the OCI hook's outcome counters (hook/hookstats).
type HookStatus struct {
	Path          string            `json:"path"`
	Runs          []hookstats.Run   `json:"runs"`
	WithoutPolicy map[string]uint64 `json:"without_policy"` // fail-open containers, by reason
	Refused       map[string]uint64 `json:"refused"`
	Error         string            `json:"error,omitempty"`
}

// hookStatus reads the hook's counter file; nil when there is none.
func hookStatus(path string) *HookStatus {
	if _, err := os.Stat(path); err != nil {
		return nil
	}
	c, err := hookstats.Read(path)
	hs := &HookStatus{Path: path, Runs: c.RunList(), WithoutPolicy: c.WithoutPolicy, Refused: c.Refused}
	if err != nil {
		hs.Error = err.Error()
	}
	return hs
}

// LinkStatus is one attachment with its counters (zero in native mode).
type LinkStatus struct {
	policy.Link
	Counters policy.Counters `json:"counters"`
}

func statusCmd() *cobra.Command {
	var asJSON bool
	var pinDir, hookMetrics string
	c := &cobra.Command{
		Use:   "status",
		Short: "List attachments with their counters; removes orphans (cgroups that are gone)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			ps, err := openAll(ctx, pinDir)
			if err != nil {
				return err
			}
			defer closeAll(ps)
			st := Status{KernelRelease: kernelRelease(), BPFAvailable: bpf.Probe() == nil, Links: []LinkStatus{}, RemovedOrphans: []policy.Link{}}
			for _, p := range ps {
				if r, ok := p.(reconciler); ok {
					removed, err := r.Reconcile(ctx)
					if err != nil {
						slog.Warn("reconcile", "mode", p.Mode(), "err", err)
					}
					st.RemovedOrphans = append(st.RemovedOrphans, removed...)
				}
				links, err := p.List(ctx)
				if err != nil {
					return err
				}
				ctrs, err := p.Stats(ctx)
				if err != nil {
					return err
				}
				for _, l := range links {
					st.Links = append(st.Links, LinkStatus{Link: l, Counters: ctrs[l.CgroupID]})
				}
				if tr, ok := p.(policy.TotalsReader); ok {
					if st.Totals, err = tr.Totals(ctx); err != nil {
						return err
					}
				}
			}
			sort.Slice(st.Links, func(i, j int) bool { return st.Links[i].CgroupID < st.Links[j].CgroupID })
			st.Hook = hookStatus(hookMetrics)
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			return printStatus(out, st)
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().StringVar(&pinDir, "pin-dir", policy.DefaultPinDir, "bpffs folder for pinned links")
	c.Flags().StringVar(&hookMetrics, "hook-metrics", hookstats.DefaultPath, "the OCI hook's counter file (hook_metrics in the config)")
	return c
}

func printStatus(w io.Writer, st Status) error {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "CGROUP_ID\tPRIORITY\tMODE\tDELAY_CALLS\tDELAYS\tDELAY_MS\tBELOW_LOW\tPROTECTED\tBELOW_MIN\tPATH")
	for _, l := range st.Links {
		c := l.Counters
		path := l.CgroupPath
		if l.Orphan {
			path += " (orphan)"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", l.CgroupID, l.Priority, l.Mode,
			c.DelayCalls, c.DelayNonZero, c.DelayTotalMs, c.BelowLowCalls, c.BelowLowTrue, c.BelowMinTrue, path)
	}
	for _, prio := range policy.Priorities {
		if c, ok := st.Totals[prio]; ok {
			fmt.Fprintf(tw, "total\t%s\tbpf\t%d\t%d\t%d\t%d\t%d\t%d\t(all cgroups since the maps were created)\n", prio,
				c.DelayCalls, c.DelayNonZero, c.DelayTotalMs, c.BelowLowCalls, c.BelowLowTrue, c.BelowMinTrue)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.RemovedOrphans) > 0 {
		var ps []string
		for _, l := range st.RemovedOrphans {
			ps = append(ps, fmt.Sprintf("%s (cgroup %d)", l.CgroupPath, l.CgroupID))
		}
		fmt.Fprintf(w, "removed orphans: %s\n", strings.Join(ps, ", "))
	}
	if h := st.Hook; h != nil {
		fmt.Fprintf(w, "hook (%s):", h.Path)
		for _, r := range h.Runs {
			fmt.Fprintf(w, " %s %s", r.Stage, r.Outcome)
			if r.Reason != "" {
				fmt.Fprintf(w, "/%s", r.Reason)
			}
			fmt.Fprintf(w, " %d;", r.Count)
		}
		fmt.Fprintf(w, " without policy %d, refused %d\n", hookstats.Sum(h.WithoutPolicy), hookstats.Sum(h.Refused))
		if h.Error != "" {
			fmt.Fprintf(w, "hook counters: %s\n", h.Error)
		}
	}
	return nil
}
