package kubetest

import (
	"fmt"
	"runtime"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// LinkOps returns the name of the struct_ops map that the pinned link at pin
// attaches (the bpf package's "high_ops" or "low_ops"), as the kernel
// reports it: the link's struct_ops.map_id, then that map's name. It asks the
// kernel rather than the plugin's records, so a test sees what is attached.
func LinkOps(pin string) (string, error) {
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		return "", fmt.Errorf("open pinned link %s: %w", pin, err)
	}
	defer l.Close()
	fl, ok := l.(interface{ FD() int })
	if !ok {
		return "", fmt.Errorf("pinned link %s: no fd (%T)", pin, l)
	}
	// struct bpf_link_info: type, id, prog_id, padding, then the union at
	// offset 16, whose struct_ops member starts with __u32 map_id.
	var info struct {
		typ, id, progID, _ uint32
		mapID              uint32
		_                  [60]byte
	}
	attr := struct {
		fd, infoLen uint32
		info        uint64
	}{uint32(fl.FD()), uint32(unsafe.Sizeof(info)), uint64(uintptr(unsafe.Pointer(&info)))}
	_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_OBJ_GET_INFO_BY_FD, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(&info)
	runtime.KeepAlive(l)
	if errno != 0 {
		return "", fmt.Errorf("link info of %s: %w", pin, errno)
	}
	if info.typ != unix.BPF_LINK_TYPE_STRUCT_OPS {
		return "", fmt.Errorf("pinned link %s is of type %d, not struct_ops", pin, info.typ)
	}
	m, err := ebpf.NewMapFromID(ebpf.MapID(info.mapID))
	if err != nil {
		return "", fmt.Errorf("map %d of link %s: %w", info.mapID, pin, err)
	}
	defer m.Close()
	mi, err := m.Info()
	if err != nil {
		return "", fmt.Errorf("map %d of link %s: %w", info.mapID, pin, err)
	}
	return mi.Name, nil
}
