package enroll

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/agentcg/agentcg/cgroup"
)

// ErrCgroupUnresolved means no source named an existing cgroup directory.
var ErrCgroupUnresolved = errors.New("cgroup not resolvable")

// ErrOutsideRoot means the cgroup directory escapes the configured root.
var ErrOutsideRoot = errors.New("cgroup outside the configured root")

// Resolver finds a container's cgroup directory under a cgroup v2 root.
type Resolver struct {
	Root     string // cgroup v2 mount, e.g. /sys/fs/cgroup
	ProcRoot string // procfs mount, e.g. /proc (a fake tree in tests)
}

// Resolve returns the path of the container's cgroup directory; see Open.
func (r Resolver) Resolve(pid int, cgroupsPath string) (string, error) {
	f, p, err := r.Open(pid, cgroupsPath)
	if err != nil {
		return "", err
	}
	f.Close()
	return p, nil
}

// Open finds and opens a container's cgroup directory. The candidates, in
// order: linux.cgroupsPath in the systemd "slice:prefix:name" form or the
// cgroupfs form, then the 0:: line of /proc/<pid>/cgroup. cgroupsPath comes
// first because it names the cgroup whatever pid namespace we run in; a pid
// from the runtime means another process, or none, inside a pod without
// hostPID (the DaemonSet), so it is only the fallback. The first
// candidate that exists is opened beneath the root (no "..", no symlink, no
// other mount: cgroup.OpenBeneath); a candidate outside the root is refused
// rather than skipped, since it means someone tried to point us elsewhere.
// The caller must use the returned directory, not the path, for anything
// that matters (the path is for records and logs).
func (r Resolver) Open(pid int, cgroupsPath string) (*os.File, string, error) {
	root, err := filepath.EvalSymlinks(r.Root)
	if err != nil {
		return nil, "", fmt.Errorf("%w: cgroup root %s: %w", ErrCgroupUnresolved, r.Root, err)
	}
	var tried []string
	try := func(what, rel string) (*os.File, string, error, bool) {
		f, err := cgroup.OpenBeneath(root, rel)
		if err == nil {
			return f, filepath.Join(root, rel), nil, true
		}
		if errors.Is(err, cgroup.ErrEscape) {
			return nil, "", fmt.Errorf("%w: %s: %w", ErrOutsideRoot, what, err), true
		}
		tried = append(tried, fmt.Sprintf("%s: %v", what, err))
		return nil, "", nil, false
	}
	if cgroupsPath != "" {
		rel, err := RelFromCgroupsPath(cgroupsPath)
		switch {
		case errors.Is(err, ErrOutsideRoot):
			return nil, "", fmt.Errorf("cgroupsPath %q: %w", cgroupsPath, err)
		case err != nil:
			tried = append(tried, fmt.Sprintf("cgroupsPath %q: %v", cgroupsPath, err))
		default:
			if f, p, err, done := try(fmt.Sprintf("cgroupsPath %q", cgroupsPath), rel); done {
				return f, p, err
			}
		}
	}
	if pid > 0 {
		rel, err := r.fromProc(pid)
		if err == nil {
			if f, p, err, done := try(fmt.Sprintf("pid %d", pid), rel); done {
				return f, p, err
			}
		} else {
			tried = append(tried, err.Error())
		}
	}
	if len(tried) == 0 {
		tried = append(tried, "no pid and no cgroupsPath")
	}
	return nil, "", fmt.Errorf("%w: %s", ErrCgroupUnresolved, strings.Join(tried, "; "))
}

// fromProc reads the unified-hierarchy line of /proc/<pid>/cgroup and
// returns it relative to the root. A path that starts with "/.." was
// written for another cgroup namespace (ours is not the host's) and cannot
// be used from here; it is inconclusive, not an escape.
func (r Resolver) fromProc(pid int) (string, error) {
	file := filepath.Join(r.ProcRoot, strconv.Itoa(pid), "cgroup")
	f, err := os.Open(file)
	if err != nil {
		return "", fmt.Errorf("pid %d: %w", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			if rest == "/.." || strings.HasPrefix(rest, "/../") {
				return "", fmt.Errorf("%s: %q is outside this process's cgroup namespace", file, rest)
			}
			return strings.TrimPrefix(rest, "/"), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read %s: %w", file, err)
	}
	return "", fmt.Errorf("%s: no 0:: line (cgroup v1 only?)", file)
}

// FromCgroupsPath turns an OCI linux.cgroupsPath into a directory under
// root; see RelFromCgroupsPath.
func FromCgroupsPath(root, cgroupsPath string) (string, error) {
	rel, err := RelFromCgroupsPath(cgroupsPath)
	if err != nil {
		return "", err
	}
	return filepath.Join(root, rel), nil
}

// RelFromCgroupsPath turns an OCI linux.cgroupsPath into a path relative to
// the cgroup root. "slice:prefix:name" is the systemd driver's form; any
// other value is a cgroupfs path. No part of either form may hold a ".."
// component, and no part of the systemd form may hold a "/" (systemd unit
// names cannot); ErrOutsideRoot says so.
func RelFromCgroupsPath(cgroupsPath string) (string, error) {
	if !strings.HasPrefix(cgroupsPath, "/") && strings.Count(cgroupsPath, ":") == 2 {
		parts := strings.SplitN(cgroupsPath, ":", 3)
		slice, prefix, name := parts[0], parts[1], parts[2]
		for _, part := range []struct{ what, v string }{{"slice", slice}, {"prefix", prefix}, {"name", name}} {
			if strings.Contains(part.v, "/") || strings.Contains(part.v, "..") || part.v == "." {
				return "", fmt.Errorf("%w: systemd cgroupsPath %q: %s %q may not hold \"/\" or \"..\"", ErrOutsideRoot, cgroupsPath, part.what, part.v)
			}
		}
		if name == "" {
			return "", fmt.Errorf("systemd cgroupsPath %q: empty name", cgroupsPath)
		}
		if slice == "" {
			slice = "system.slice"
		}
		dir, err := expandSlice(slice)
		if err != nil {
			return "", err
		}
		unit := name
		if !strings.HasSuffix(name, ".slice") {
			unit = prefix + "-" + name + ".scope"
			if prefix == "" {
				unit = name + ".scope"
			}
		}
		return strings.TrimPrefix(filepath.Join(dir, unit), "/"), nil
	}
	rel := strings.Trim(cgroupsPath, "/")
	for _, c := range strings.Split(rel, "/") {
		if c == ".." {
			return "", fmt.Errorf("%w: cgroupsPath %q has a \"..\" component", ErrOutsideRoot, cgroupsPath)
		}
	}
	rel = filepath.Clean("/" + rel)[1:]
	if rel == "" {
		return "", fmt.Errorf("%w: cgroupsPath %q is the root itself", ErrOutsideRoot, cgroupsPath)
	}
	return rel, nil
}

// expandSlice turns a-b-c.slice into /a.slice/a-b.slice/a-b-c.slice, the
// way systemd nests slices.
func expandSlice(slice string) (string, error) {
	const suffix = ".slice"
	name, ok := strings.CutSuffix(slice, suffix)
	if !ok || strings.Contains(slice, "/") || name == "" {
		return "", fmt.Errorf("invalid slice name %q", slice)
	}
	if name == "-" {
		return "/", nil
	}
	var out strings.Builder
	prefix := ""
	for _, comp := range strings.Split(name, "-") {
		if comp == "" {
			return "", fmt.Errorf("invalid slice name %q", slice)
		}
		out.WriteString("/" + prefix + comp + suffix)
		prefix += comp + "-"
	}
	return out.String(), nil
}

// sliceDir returns where systemd puts the slice unit named by parent
// (agents-high.slice: agents.slice/agents-high.slice), which is where
// Docker's systemd cgroup driver puts --cgroup-parent agents-high.slice;
// parent itself when it is not a slice name.
func sliceDir(parent string) string {
	if strings.Contains(parent, "/") || !strings.HasSuffix(parent, ".slice") {
		return parent
	}
	dir, err := expandSlice(parent)
	if err != nil {
		return parent
	}
	return strings.TrimPrefix(dir, "/")
}

// under reports whether rel (relative to the root) lies strictly beneath
// the relative parent.
func under(rel, parent string) bool {
	parent = strings.Trim(parent, "/")
	return strings.HasPrefix(rel, parent+"/")
}
