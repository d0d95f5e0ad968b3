// Package policy owns the vocabulary shared by every way agentcg enforces
// a priority on a cgroup: the priority values, the policy knobs, and the
// Policy interface that the BPF loader and the native fallback implement.
package policy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Priority is the class a container asks for with the agentcg.priority annotation.
type Priority string

const (
	High Priority = "high"
	Low  Priority = "low"
)

// Priorities lists the accepted values, in the order error messages show them.
var Priorities = []Priority{High, Low}

// ParsePriority accepts exactly "high" or "low" and names the allowed set otherwise.
func ParsePriority(s string) (Priority, error) {
	for _, p := range Priorities {
		if s == string(p) {
			return p, nil
		}
	}
	allowed := make([]string, len(Priorities))
	for i, p := range Priorities {
		allowed[i] = string(p)
	}
	return "", fmt.Errorf("invalid priority %q: allowed values are %s", s, strings.Join(allowed, ", "))
}

// Mode selects the enforcement mechanism.
type Mode string

const (
	ModeBPF    Mode = "bpf"    // memcg_bpf_ops struct_ops links (needs the patched kernel)
	ModeNative Mode = "native" // memory.low / memory.high files
	ModeAuto   Mode = "auto"   // bpf when the kernel has it, native otherwise
)

// ParseMode accepts bpf, native or auto.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeBPF, ModeNative, ModeAuto:
		return m, nil
	}
	return "", fmt.Errorf("invalid mode %q: allowed values are bpf, native, auto", s)
}

// Link describes one attachment of a priority to one cgroup.
type Link struct {
	CgroupID   uint64   `json:"cgroup_id"`   // inode number of the cgroup directory
	CgroupPath string   `json:"cgroup_path"` // absolute path under /sys/fs/cgroup
	Priority   Priority `json:"priority"`
	Mode       Mode     `json:"mode"`
	PinPath    string   `json:"pin_path,omitempty"` // bpffs pin (bpf mode only)
	Orphan     bool     `json:"orphan,omitempty"`   // the cgroup is gone; reconcile removes it
}

// Counters are the per-cgroup policy counters kept by the BPF program.
type Counters struct {
	DelayCalls    uint64 `json:"delay_calls"`     // get_high_delay_ms invocations
	DelayNonZero  uint64 `json:"delay_nonzero"`   // ... that returned a non-zero delay
	DelayTotalMs  uint64 `json:"delay_total_ms"`  // sum of returned delays
	BelowLowCalls uint64 `json:"below_low_calls"` // below_low invocations
	BelowLowTrue  uint64 `json:"below_low_true"`  // ... that protected the cgroup
	BelowMinTrue  uint64 `json:"below_min_true"`  // below_min returns of true
}

// Policy applies priorities to cgroups. Implementations must be safe for
// concurrent use: the NRI plugin calls them from several goroutines, and
// the hook and CLI from other processes. Attach and Detach of different
// cgroups must never wait on each other (design §6: one stuck kernel call
// holds up only its own cgroup), and an Attach must cost the same however
// many cgroups are attached (no sweep over the others).
type Policy interface {
	// Mode reports the mechanism in use (never ModeAuto).
	Mode() Mode
	// Attach applies p to the cgroup directory. Attaching again with the
	// same priority is a no-op; with another priority it replaces the old one.
	Attach(ctx context.Context, cgroupDir string, p Priority) (Link, error)
	// Detach removes whatever Attach applied to cgroupDir. A cgroup with
	// nothing attached is not an error.
	Detach(ctx context.Context, cgroupDir string) error
	// List returns every attachment this policy knows about, orphans included.
	List(ctx context.Context) ([]Link, error)
	// Stats returns counters per cgroup id (empty for the native policy).
	Stats(ctx context.Context) (map[uint64]Counters, error)
	// Close releases the process's resources. Pinned attachments stay.
	Close() error
}

// DirAttacher is implemented by policies that can attach to a cgroup
// directory the caller has already opened and checked. The policy then uses
// dir's file descriptor for both the cgroup id and the attach, never the
// path again, so a directory swapped after the caller's checks cannot be
// attached instead (path is for records and logs only).
type DirAttacher interface {
	AttachDir(ctx context.Context, dir *os.File, path string, p Priority) (Link, error)
}

// AttachPath is Attach for a DirAttacher: it opens dir once and attaches
// through that descriptor, so everything the attach reads or writes
// belongs to the directory opened here.
func AttachPath(ctx context.Context, a DirAttacher, dir string, p Priority) (Link, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return Link{}, err
	}
	f, err := os.Open(abs)
	if err != nil {
		return Link{}, fmt.Errorf("attach %s to %s: open cgroup: %w", p, abs, err)
	}
	defer f.Close()
	return a.AttachDir(ctx, f, abs, p)
}

// TotalsReader is implemented by policies that keep node-wide counters per
// priority. Unlike Stats, the totals never decrease while the policy's state
// lives (a container's exit does not take its counts away), so they can be
// exported as Prometheus counters.
type TotalsReader interface {
	Totals(ctx context.Context) (map[Priority]Counters, error)
}
