package replay

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// growChunk bounds one populate call so that cancellation is noticed while
// the kernel throttles a large grow.
const growChunk = 16 << 20

// growChunks raises *pages to target one growChunk at a time, calling fill
// on each byte range. It stops between chunks when ctx ends, so *pages
// always tells how far it got.
func growChunks(ctx context.Context, pages *int, target, pageSize int, what string, fill func(from, to int) error) error {
	chunk := growChunk / pageSize
	for *pages < target {
		if err := ctx.Err(); err != nil {
			return err
		}
		end := min(*pages+chunk, target)
		if err := fill(*pages*pageSize, end*pageSize); err != nil {
			return fmt.Errorf("%s [%d,%d): %w", what, *pages, end, err)
		}
		*pages = end
	}
	return nil
}

// Populate methods.
const (
	PopulateMadvise = "madvise_populate_write"
	PopulateTouch   = "touch"
	PopulateContent = "content"
)

// Arena is one anonymous mapping whose first Pages() pages are resident and
// the rest are not. Resident pages are charged to the caller's memcg.
type Arena struct {
	mem      []byte
	pageSize int
	pages    int // resident prefix, in pages
	touch    bool
	fill     *Content // nil: pages are populated zero-filled
	sum      byte     // XOR of retouch reads
}

// NewArena reserves maxBytes (rounded up to pages) without touching it.
// forceTouch skips MADV_POPULATE_WRITE and writes one byte per page instead.
func NewArena(maxBytes int64, forceTouch bool) (*Arena, error) {
	ps := os.Getpagesize()
	size := int((maxBytes + int64(ps) - 1) / int64(ps) * int64(ps))
	size = max(size, ps)
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("mmap %d bytes: %w", size, err)
	}
	// Transparent huge pages would fault 2 MiB at a time and overshoot the
	// target; EINVAL only means the kernel has no THP.
	if err := unix.Madvise(mem, unix.MADV_NOHUGEPAGE); err != nil && !errors.Is(err, unix.EINVAL) {
		_ = unix.Munmap(mem)
		return nil, fmt.Errorf("madvise(MADV_NOHUGEPAGE): %w", err)
	}
	return &Arena{mem: mem, pageSize: ps, touch: forceTouch}, nil
}

// PageSize is the arena's page size in bytes.
func (a *Arena) PageSize() int { return a.pageSize }

// Pages is the number of resident pages.
func (a *Arena) Pages() int { return a.pages }

// MaxPages is the arena's capacity in pages.
func (a *Arena) MaxPages() int { return len(a.mem) / a.pageSize }

// SetContent makes every page that grows from now on carry c's content
// (written by the CPU) instead of being populated zero-filled. Zero pages
// cost a compressed swap device nothing, which would fake a swap regime.
func (a *Arena) SetContent(c *Content) { a.fill = c }

// Populate says how pages are made resident.
func (a *Arena) Populate() string {
	if a.fill != nil {
		return PopulateContent
	}
	if a.touch {
		return PopulateTouch
	}
	return PopulateMadvise
}

// Resize makes exactly the first pages pages resident: growing populates
// them, shrinking drops them with MADV_DONTNEED so the memcg uncharges at
// once. On cancellation it stops between chunks; Pages() tells how far it got.
func (a *Arena) Resize(ctx context.Context, pages int) error {
	if pages < 0 || pages > a.MaxPages() {
		return fmt.Errorf("resize to %d pages: arena holds %d", pages, a.MaxPages())
	}
	if pages < a.pages {
		if err := unix.Madvise(a.mem[pages*a.pageSize:a.pages*a.pageSize], unix.MADV_DONTNEED); err != nil {
			return fmt.Errorf("madvise(MADV_DONTNEED) pages [%d,%d): %w", pages, a.pages, err)
		}
		a.pages = pages
		return nil
	}
	return growChunks(ctx, &a.pages, pages, a.pageSize, "populate pages", a.grow)
}

func (a *Arena) grow(from, to int) error {
	if a.fill != nil {
		a.fill.Write(a.mem[from:to], from/a.pageSize, a.pageSize)
		return nil
	}
	for !a.touch {
		err := unix.Madvise(a.mem[from:to], unix.MADV_POPULATE_WRITE)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EINTR), errors.Is(err, unix.EAGAIN):
			// A signal (Go preemption) interrupted it; pages done so far stay.
		case errors.Is(err, unix.EINVAL):
			a.touch = true // kernel older than 5.14: fall back to touching
		default:
			return fmt.Errorf("madvise(MADV_POPULATE_WRITE): %w", err)
		}
	}
	touchPages(a.mem[from:to], a.pageSize)
	return nil
}

// touchPages writes one byte per page so each page faults in as private anonymous memory.
func touchPages(b []byte, pageSize int) {
	for off := 0; off < len(b); off += pageSize {
		b[off] = 1
	}
}

// Retouch reads one byte of each of n resident pages starting at page
// from (wrapping inside the resident prefix) and returns the page after the
// last one read. A page that was swapped out faults back in here.
func (a *Arena) Retouch(from, n int) int {
	if a.pages == 0 {
		return 0
	}
	next, x := retouch(a.mem, a.pageSize, a.pages, from, n)
	a.sum ^= x
	return next
}

// Close unmaps the arena.
func (a *Arena) Close() error {
	if a.mem == nil {
		return nil
	}
	err := unix.Munmap(a.mem)
	a.mem, a.pages = nil, 0
	return err
}
