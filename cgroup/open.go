package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrEscape means a path tried to leave the root: a ".." component, a
// symlink, or a mount crossed on the way down.
var ErrEscape = errors.New("path escapes the cgroup root")

// OpenBeneath opens the directory rel (relative to root, slash-separated)
// without leaving root: no "..", no symlink, no other mount. The returned
// directory is what later checks and the attach must use, so that a path
// swapped after the check cannot be attached instead.
func OpenBeneath(root, rel string) (*os.File, error) {
	if err := checkRel(rel); err != nil {
		return nil, err
	}
	rootf, err := os.Open(root)
	if err != nil {
		return nil, fmt.Errorf("cgroup root %s: %w", root, err)
	}
	defer rootf.Close()
	full := filepath.Join(root, rel)
	fd, err := unix.Openat2(int(rootf.Fd()), rel, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
		// Kernels before 5.6 (or a seccomp filter): walk it by hand.
		return openWalk(rootf, rel, full)
	}
	if err != nil {
		return nil, openErr(full, err)
	}
	return os.NewFile(uintptr(fd), full), nil
}

// openWalk opens rel one component at a time with O_NOFOLLOW and checks
// that every step stays on root's filesystem.
func openWalk(rootf *os.File, rel, full string) (*os.File, error) {
	var rst unix.Stat_t
	if err := unix.Fstat(int(rootf.Fd()), &rst); err != nil {
		return nil, fmt.Errorf("stat %s: %w", rootf.Name(), err)
	}
	dirfd := int(rootf.Fd())
	owned := -1
	defer func() {
		if owned >= 0 {
			unix.Close(owned)
		}
	}()
	for _, comp := range strings.Split(rel, "/") {
		fd, err := unix.Openat(dirfd, comp, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, openErr(full, err)
		}
		if owned >= 0 {
			unix.Close(owned)
		}
		owned, dirfd = fd, fd
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return nil, fmt.Errorf("stat %s: %w", full, err)
		}
		if st.Dev != rst.Dev {
			return nil, fmt.Errorf("%w: %s crosses a mount", ErrEscape, full)
		}
	}
	f := os.NewFile(uintptr(owned), full)
	owned = -1
	return f, nil
}

func openErr(full string, err error) error {
	switch {
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.EXDEV), errors.Is(err, unix.ENOTDIR) && isSymlink(full):
		return fmt.Errorf("%w: %s (a symlink or another mount on the way)", ErrEscape, full)
	}
	return fmt.Errorf("open cgroup %s: %w", full, err)
}

func isSymlink(p string) bool {
	st, err := os.Lstat(p)
	return err == nil && st.Mode()&os.ModeSymlink != 0
}

// checkRel rejects the root itself, absolute paths and any "", "." or ".."
// component, before the kernel sees the path.
func checkRel(rel string) error {
	if rel == "" || rel == "." {
		return fmt.Errorf("%w: the root itself is shared by every container", ErrEscape)
	}
	if strings.HasPrefix(rel, "/") {
		return fmt.Errorf("%w: %q is absolute", ErrEscape, rel)
	}
	for _, c := range strings.Split(rel, "/") {
		if c == "" || c == "." || c == ".." {
			return fmt.Errorf("%w: %q has a %q component", ErrEscape, rel, c)
		}
	}
	return nil
}

// FileID returns the cgroup id of an open cgroup directory (its inode
// number), without looking the path up again.
func FileID(f *os.File) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, fmt.Errorf("cgroup id of %s: %w", f.Name(), err)
	}
	return st.Ino, nil
}
