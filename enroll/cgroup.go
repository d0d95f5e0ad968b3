package enroll

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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

// Resolve returns the cgroup directory of a container from, in order: the
// 0:: line of /proc/<pid>/cgroup, the systemd "slice:prefix:name" form of
// cgroupsPath, and the cgroupfs form of cgroupsPath. The first candidate
// that exists is checked against the root; a candidate outside the root is
// refused rather than skipped, since it means someone tried to point us
// elsewhere.
func (r Resolver) Resolve(pid int, cgroupsPath string) (string, error) {
	var tried []string
	if pid > 0 {
		p, err := r.fromProc(pid)
		if err == nil {
			return r.Within(p)
		}
		tried = append(tried, err.Error())
	}
	if cgroupsPath != "" {
		p, err := FromCgroupsPath(r.Root, cgroupsPath)
		if err == nil {
			if st, serr := os.Stat(p); serr == nil && st.IsDir() {
				return r.Within(p)
			} else if serr != nil {
				err = serr
			} else {
				err = fmt.Errorf("%s is not a directory", p)
			}
		}
		tried = append(tried, fmt.Sprintf("cgroupsPath %q: %v", cgroupsPath, err))
	}
	if len(tried) == 0 {
		tried = append(tried, "no pid and no cgroupsPath")
	}
	return "", fmt.Errorf("%w: %s", ErrCgroupUnresolved, strings.Join(tried, "; "))
}

// fromProc reads the unified-hierarchy line of /proc/<pid>/cgroup.
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
			return filepath.Join(r.Root, rest), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read %s: %w", file, err)
	}
	return "", fmt.Errorf("%s: no 0:: line (cgroup v1 only?)", file)
}

// FromCgroupsPath turns an OCI linux.cgroupsPath into a directory under root.
// "slice:prefix:name" is the systemd driver's form; anything else is a
// cgroupfs path relative to root.
func FromCgroupsPath(root, cgroupsPath string) (string, error) {
	if !strings.HasPrefix(cgroupsPath, "/") && strings.Count(cgroupsPath, ":") == 2 {
		parts := strings.SplitN(cgroupsPath, ":", 3)
		slice, prefix, name := parts[0], parts[1], parts[2]
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
		return filepath.Join(root, dir, unit), nil
	}
	return filepath.Join(root, cgroupsPath), nil
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

// Within resolves symlinks and ".." in dir and returns the real path if it
// lies strictly under the (also resolved) root; ErrOutsideRoot otherwise.
func (r Resolver) Within(dir string) (string, error) {
	// Lexical check first, so a ".." escape is named as such even when the
	// target does not exist.
	if err := under(filepath.Clean(r.Root), filepath.Clean(dir)); err != nil {
		return "", err
	}
	root, err := filepath.EvalSymlinks(r.Root)
	if err != nil {
		return "", fmt.Errorf("cgroup root %s: %w", r.Root, err)
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrCgroupUnresolved, dir, err)
	}
	if err := under(root, real); err != nil {
		return "", fmt.Errorf("%s: %w", dir, err)
	}
	return real, nil
}

func under(root, p string) error {
	rel, err := filepath.Rel(root, p)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return fmt.Errorf("%w: %s is not under %s", ErrOutsideRoot, p, root)
	}
	if rel == "." {
		// The root is shared by every container; never attach there.
		return fmt.Errorf("%w: %s is the root itself", ErrOutsideRoot, p)
	}
	return nil
}
