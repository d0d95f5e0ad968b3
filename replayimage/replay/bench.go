package replay

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// RawTouch is the baseline the replay is measured against: mmap n bytes,
// write one byte per page, unmap. Huge pages are off, as in the arena, so
// both fault the same 4 KiB pages. It returns the time to map and touch.
func RawTouch(n int64) (time.Duration, error) {
	ps := os.Getpagesize()
	size := int((n + int64(ps) - 1) / int64(ps) * int64(ps))
	t0 := time.Now()
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return 0, fmt.Errorf("mmap %d bytes: %w", size, err)
	}
	defer unix.Munmap(mem)
	_ = unix.Madvise(mem, unix.MADV_NOHUGEPAGE)
	touchPages(mem, ps)
	return time.Since(t0), nil
}
