// Package cgroup owns reading and writing cgroup v2 interface files and
// identifying cgroups. It knows nothing about containers or policies.
package cgroup

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Root is the cgroup v2 mount point.
const Root = "/sys/fs/cgroup"

// ID returns the cgroup id of dir: the inode number of the directory, which
// is what the kernel reports as cgroup_id (kernfs node id).
func ID(dir string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return 0, fmt.Errorf("cgroup id of %s: %w", dir, err)
	}
	return st.Ino, nil
}

// Read returns the trimmed content of an interface file such as memory.max.
func Read(dir, file string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", filepath.Join(dir, file), err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Write writes value to an interface file.
func Write(dir, file, value string) error {
	p := filepath.Join(dir, file)
	if err := os.WriteFile(p, []byte(value), 0); err != nil {
		return fmt.Errorf("write %q to %s: %w", value, p, err)
	}
	return nil
}

// Max is the value of an unlimited memory.max / memory.high.
const Max = int64(-1)

// ReadBytes reads a single-value file (memory.current, memory.max, ...);
// "max" is returned as Max.
func ReadBytes(dir, file string) (int64, error) {
	s, err := Read(dir, file)
	if err != nil {
		return 0, err
	}
	return ParseBytes(s)
}

// ParseBytes parses a memory file value, "max" meaning Max.
func ParseBytes(s string) (int64, error) {
	if s == "max" {
		return Max, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse cgroup value %q: %w", s, err)
	}
	return v, nil
}

// FormatBytes is the inverse of ParseBytes.
func FormatBytes(v int64) string {
	if v < 0 {
		return "max"
	}
	return strconv.FormatInt(v, 10)
}

// ReadKeyed parses a flat keyed file such as memory.events or memory.stat.
func ReadKeyed(dir, file string) (map[string]int64, error) {
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Join(dir, file), err)
	}
	out := map[string]int64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("parse %s line %q: %w", filepath.Join(dir, file), sc.Text(), err)
		}
		out[k] = n
	}
	return out, nil
}
