package bpf

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// linkCreateCgroupAttr mirrors union bpf_attr.link_create for a struct_ops
// link bound to a cgroup (uapi: link_create.cgroup.relative_fd at offset 16).
// cilium/ebpf cannot pass the cgroup fd, hence the raw call.
type linkCreateCgroupAttr struct {
	mapFd            uint32 // struct_ops puts the map fd where prog_fd goes
	targetFd         uint32
	attachType       uint32
	flags            uint32
	relativeFd       uint32 // cgroup directory fd
	_                uint32
	expectedRevision uint64
	_                [32]byte
}

// attachToCgroup creates a struct_ops link of ops to the cgroup open as dir
// (path is for messages only).
func attachToCgroup(ops *ebpf.Map, dir *os.File, path string) (link.Link, error) {
	attr := linkCreateCgroupAttr{
		mapFd:      uint32(ops.FD()),
		attachType: unix.BPF_STRUCT_OPS,
		relativeFd: uint32(dir.Fd()),
	}
	fd, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_LINK_CREATE, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(ops)
	runtime.KeepAlive(dir)
	if errno != 0 {
		return nil, fmt.Errorf("BPF_LINK_CREATE %s to cgroup %s: %w", ops, path, errno)
	}
	l, err := link.NewFromFD(int(fd))
	if err != nil {
		unix.Close(int(fd))
		return nil, fmt.Errorf("wrap link of cgroup %s: %w", path, err)
	}
	return l, nil
}

// LinkIDs lists the ids of every BPF link in the system (BPF_LINK_GET_NEXT_ID);
// tests use it to check that nothing leaks.
func LinkIDs() ([]uint32, error) {
	var ids []uint32
	attr := struct{ start, next, openFlags uint32 }{}
	for {
		_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_LINK_GET_NEXT_ID, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
		if errno == unix.ENOENT {
			return ids, nil
		}
		if errno != 0 {
			return nil, fmt.Errorf("BPF_LINK_GET_NEXT_ID after %d: %w", attr.start, errno)
		}
		ids = append(ids, attr.next)
		attr.start = attr.next
	}
}

// cgroupDirID returns the cgroup id of an open cgroup v2 directory: its
// inode number (the kernfs node id the kernel reports as cgroup id).
func cgroupDirID(dir *os.File) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(dir.Fd()), &st); err != nil {
		return 0, fmt.Errorf("fstat: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return 0, errors.New("not a directory")
	}
	var fs unix.Statfs_t
	if err := unix.Fstatfs(int(dir.Fd()), &fs); err != nil {
		return 0, fmt.Errorf("fstatfs: %w", err)
	}
	if fs.Type != unix.CGROUP2_SUPER_MAGIC {
		return 0, fmt.Errorf("not on cgroup2 (filesystem magic %#x)", fs.Type)
	}
	return st.Ino, nil
}
