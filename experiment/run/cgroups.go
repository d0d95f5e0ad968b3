package run

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/agentcg/agentcg/cgroup"
	"github.com/agentcg/agentcg/experiment/results"
)

// Tree is the cgroup layout of one run: the shared parent with memory.max
// and memory.swap.max, and one session cgroup per container below it. The
// runtime creates the container's own cgroup inside the session cgroup, so
// the session cgroup outlives the container and keeps its hierarchical
// memory.events and memory.peak for reading after the exit.
type Tree struct {
	Root   string // cgroup mount, /sys/fs/cgroup (a temp dir in tests)
	Parent string // relative, e.g. agentcg-exp
}

// ParentDir is the parent's absolute path.
func (t Tree) ParentDir() string { return filepath.Join(t.Root, t.Parent) }

// SessionDir is a session cgroup's absolute path.
func (t Tree) SessionDir(name string) string { return filepath.Join(t.Root, t.Parent, name) }

// RuntimeParent is the cgroupfs-form parent a runtime gets for a session.
func (t Tree) RuntimeParent(name string) string { return "/" + filepath.Join(t.Parent, name) }

// Create makes the parent (memory.max = limit, memory.swap.max = swapMax;
// -1 is max) and the session cgroups, with the memory controller, and the
// cpu controller where the machine delegates it, enabled below the parent.
func (t Tree) Create(limit, swapMax int64, sessions []string) error {
	p := t.ParentDir()
	if err := os.Mkdir(p, 0o755); err != nil {
		return fmt.Errorf("create parent cgroup: %w", err)
	}
	if err := enable(filepath.Dir(p), "memory", true); err != nil {
		return err
	}
	for _, kv := range [][2]string{{"memory.max", cgroup.FormatBytes(limit)}, {"memory.swap.max", cgroup.FormatBytes(swapMax)}} {
		if err := cgroup.Write(p, kv[0], kv[1]); err != nil {
			return err
		}
	}
	// cpu.stat's usage exists without the controller; cpu.pressure always.
	_ = enable(filepath.Dir(p), "cpu", false)
	for _, d := range append([]string{p}, sessionDirs(t, sessions)...) {
		if d != p {
			if err := os.Mkdir(d, 0o755); err != nil {
				return fmt.Errorf("create session cgroup: %w", err)
			}
		}
		if err := enable(d, "memory", true); err != nil {
			return err
		}
		_ = enable(d, "cpu", false)
	}
	return nil
}

func sessionDirs(t Tree, names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = t.SessionDir(n)
	}
	return out
}

// enable adds a controller to subtree_control unless it is there already;
// when !must, a controller the parent does not offer is skipped.
func enable(dir, ctl string, must bool) error {
	cur, err := cgroup.Read(dir, "cgroup.subtree_control")
	if err != nil {
		return err
	}
	if slices.Contains(strings.Fields(cur), ctl) {
		return nil
	}
	if !must {
		avail, err := cgroup.Read(dir, "cgroup.controllers")
		if err != nil || !slices.Contains(strings.Fields(avail), ctl) {
			return nil
		}
	}
	return cgroup.Write(dir, "cgroup.subtree_control", "+"+ctl)
}

// Remove deletes the parent and everything below it, deepest first. Every
// process must be gone (containers removed) for rmdir to succeed.
func (t Tree) Remove() error {
	p := t.ParentDir()
	var dirs []string
	err := filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("walk %s: %w", p, err)
	}
	var errs []error
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("rmdir %s: %w", dirs[i], err))
		}
	}
	return errors.Join(errs...)
}

// Exists reports whether the parent cgroup is present.
func (t Tree) Exists() bool {
	_, err := os.Stat(t.ParentDir())
	return err == nil
}

// FindLeaf returns the child cgroup of a session whose name contains the
// container id (cgroupfs drivers name it after the id).
func (t Tree) FindLeaf(session, id string) (string, error) {
	d := t.SessionDir(session)
	ents, err := os.ReadDir(d)
	if err != nil {
		return "", fmt.Errorf("find cgroup of %s: %w", id, err)
	}
	for _, e := range ents {
		if e.IsDir() && strings.Contains(e.Name(), id) {
			return filepath.Join(d, e.Name()), nil
		}
	}
	return "", fmt.Errorf("no cgroup for container %s under %s", id, d)
}

// Pressure is one PSI reading.
type Pressure struct {
	SomeAvg10, FullAvg10 float64
	SomeTotal, FullTotal int64
}

// ReadPressure parses memory.pressure ("some avg10=… total=…" and "full …").
func ReadPressure(dir string) (Pressure, error) { return ReadPSI(dir, "memory.pressure") }

// ReadPSI parses a PSI file (memory.pressure, cpu.pressure).
func ReadPSI(dir, file string) (Pressure, error) {
	var p Pressure
	s, err := cgroup.Read(dir, file)
	if err != nil {
		return p, err
	}
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		var avg float64
		var total int64
		for _, kv := range f[1:] {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "avg10":
				avg, _ = strconv.ParseFloat(v, 64)
			case "total":
				total, _ = strconv.ParseInt(v, 10, 64)
			}
		}
		switch f[0] {
		case "some":
			p.SomeAvg10, p.SomeTotal = avg, total
		case "full":
			p.FullAvg10, p.FullTotal = avg, total
		}
	}
	return p, nil
}

// eventKeys are the memory.events fields a session reports.
var eventKeys = []string{"low", "high", "max", "oom", "oom_kill", "oom_group_kill"}

// eventDelta subtracts two memory.events readings over eventKeys.
func eventDelta(before, after map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for _, k := range eventKeys {
		out[k] = after[k] - before[k]
	}
	return out
}

// cpuKeys are the cpu.stat fields a run keeps.
var cpuKeys = []string{"usage_usec", "user_usec", "system_usec", "nr_throttled", "throttled_usec"}

// ReadCgroup reads the end-of-run record of a cgroup that was created
// empty for the run, so every counter is the run's. Files the kernel lacks
// are listed in ReadErrors rather than failing the run.
func ReadCgroup(dir string) results.Cgroup {
	c := results.Cgroup{Events: map[string]int64{}, Stat: map[string]int64{}, CPUStat: map[string]int64{},
		MemoryLow: 0, MemoryHigh: cgroup.Max, MemoryMax: cgroup.Max, SwapMax: cgroup.Max}
	fail := func(err error) {
		if err != nil {
			c.ReadErrors = append(c.ReadErrors, err.Error())
		}
	}
	ev, err := cgroup.ReadKeyed(dir, "memory.events")
	fail(err)
	c.Events = eventDelta(nil, ev)
	st, err := cgroup.ReadKeyed(dir, "memory.stat")
	fail(err)
	for _, k := range results.StatKeys {
		if v, ok := st[k]; ok {
			c.Stat[k] = v
		}
	}
	cs, err := cgroup.ReadKeyed(dir, "cpu.stat")
	fail(err)
	for _, k := range cpuKeys {
		if v, ok := cs[k]; ok {
			c.CPUStat[k] = v
		}
	}
	mp, err := ReadPSI(dir, "memory.pressure")
	fail(err)
	c.Memory = results.Pressure{SomeUs: mp.SomeTotal, FullUs: mp.FullTotal}
	cp, err := ReadPSI(dir, "cpu.pressure")
	fail(err)
	c.CPU = results.Pressure{SomeUs: cp.SomeTotal, FullUs: cp.FullTotal}
	for _, f := range []struct {
		name string
		v    *int64
	}{{"memory.peak", &c.PeakBytes}, {"memory.swap.peak", &c.SwapPeak}, {"memory.low", &c.MemoryLow},
		{"memory.high", &c.MemoryHigh}, {"memory.max", &c.MemoryMax}, {"memory.swap.max", &c.SwapMax}} {
		v, err := cgroup.ReadBytes(dir, f.name)
		fail(err)
		if err == nil {
			*f.v = v
		}
	}
	return c
}

// NearestLimited returns the closest ancestor of dir (dir excluded) below
// root whose memory.max is set, and that limit; "" when none is.
func NearestLimited(root, dir string) (string, int64) {
	for d := filepath.Dir(dir); strings.HasPrefix(d, root) && d != root; d = filepath.Dir(d) {
		if v, err := cgroup.ReadBytes(d, "memory.max"); err == nil && v >= 0 {
			return d, v
		}
	}
	return "", cgroup.Max
}
