package replay

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// FileArena maps a file read-only and keeps exactly its first Pages()
// pages in the page cache and mapped: clean file memory, charged to the
// reader's memcg and reclaimable without swap (the file reclaim regime).
type FileArena struct {
	f        *os.File
	mem      []byte
	pageSize int
	pages    int
	read     bool // MADV_POPULATE_READ unsupported: read one byte per page
	sum      byte
}

// OpenFileArena maps the first maxBytes of path, which must be at least
// that large, and drops whatever of it is cached so that every page starts
// outside the page cache.
func OpenFileArena(path string, maxBytes int64) (*FileArena, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("file arena: %w", err)
	}
	ps := os.Getpagesize()
	size := int((maxBytes + int64(ps) - 1) / int64(ps) * int64(ps))
	size = max(size, ps)
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("file arena: %w", err)
	}
	if st.Size() < int64(size) {
		f.Close()
		return nil, fmt.Errorf("file arena %s: %d bytes, the replay needs %d", path, st.Size(), size)
	}
	fd := int(f.Fd())
	// No readahead: a page the replay did not ask for would overshoot the target.
	_ = unix.Fadvise(fd, 0, 0, unix.FADV_RANDOM)
	_ = unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED)
	mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("mmap %s (%d bytes): %w", path, size, err)
	}
	if err := unix.Madvise(mem, unix.MADV_RANDOM); err != nil {
		unix.Munmap(mem)
		f.Close()
		return nil, fmt.Errorf("madvise(MADV_RANDOM) %s: %w", path, err)
	}
	return &FileArena{f: f, mem: mem, pageSize: ps}, nil
}

// Pages is the number of resident pages.
func (a *FileArena) Pages() int { return a.pages }

// MaxPages is the mapping's size in pages.
func (a *FileArena) MaxPages() int { return len(a.mem) / a.pageSize }

// Resize makes exactly the first pages pages cached and mapped: growing
// reads them in, shrinking unmaps them and drops them from the page cache
// so the memcg is uncharged at once.
func (a *FileArena) Resize(ctx context.Context, pages int) error {
	if pages < 0 || pages > a.MaxPages() {
		return fmt.Errorf("resize file to %d pages: mapping holds %d", pages, a.MaxPages())
	}
	if pages < a.pages {
		from, to := pages*a.pageSize, a.pages*a.pageSize
		if err := unix.Madvise(a.mem[from:to], unix.MADV_DONTNEED); err != nil {
			return fmt.Errorf("madvise(MADV_DONTNEED) file pages [%d,%d): %w", pages, a.pages, err)
		}
		if err := unix.Fadvise(int(a.f.Fd()), int64(from), int64(to-from), unix.FADV_DONTNEED); err != nil {
			return fmt.Errorf("fadvise(DONTNEED) file pages [%d,%d): %w", pages, a.pages, err)
		}
		a.pages = pages
		return nil
	}
	return growChunks(ctx, &a.pages, pages, a.pageSize, "read file pages", a.populate)
}

func (a *FileArena) populate(from, to int) error {
	// Read exactly this range in large requests first; the fault path has
	// readahead off (MADV_RANDOM) and would read it one page at a time.
	_ = unix.Fadvise(int(a.f.Fd()), int64(from), int64(to-from), unix.FADV_WILLNEED)
	for !a.read {
		err := unix.Madvise(a.mem[from:to], unix.MADV_POPULATE_READ)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EINTR), errors.Is(err, unix.EAGAIN):
		case errors.Is(err, unix.EINVAL):
			a.read = true
		default:
			return fmt.Errorf("madvise(MADV_POPULATE_READ): %w", err)
		}
	}
	_, x := retouch(a.mem[from:to], a.pageSize, (to-from)/a.pageSize, 0, (to-from)/a.pageSize)
	a.sum ^= x
	return nil
}

// Retouch reads one byte of n resident pages from page from on (wrapping)
// and returns where to continue. An evicted page is read back here.
func (a *FileArena) Retouch(from, n int) int {
	if a.pages == 0 {
		return 0
	}
	next, x := retouch(a.mem, a.pageSize, a.pages, from, n)
	a.sum ^= x
	return next
}

// Close unmaps the file, drops its cached pages and closes it.
func (a *FileArena) Close() error {
	if a.mem == nil {
		return nil
	}
	err := unix.Munmap(a.mem)
	_ = unix.Fadvise(int(a.f.Fd()), 0, 0, unix.FADV_DONTNEED)
	a.mem, a.pages = nil, 0
	return errors.Join(err, a.f.Close())
}

// WriteContentFile creates path with size bytes of c's page content (or
// zeros when c is nil), synced to disk so its pages are clean, then drops
// them from the page cache. The file regime's replays map such files.
func WriteContentFile(path string, size int64, c *Content) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	ps := os.Getpagesize()
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		clear(buf)
		if c != nil {
			c.Write(buf, int(off/int64(ps)), ps)
		}
		n := min(int64(len(buf)), size-off)
		if _, err := f.Write(buf[:n]); err != nil {
			f.Close()
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	return f.Close()
}

// DropCache evicts a file's clean pages from the page cache.
func DropCache(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("fadvise(DONTNEED) %s: %w", path, err)
	}
	return nil
}
