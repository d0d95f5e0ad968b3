package replay

import (
	"fmt"
	"math/rand/v2"
)

// Content is what a page holds when the replay writes it: the first
// RandomBytes bytes pseudo-random, the rest left zero. A compressed swap
// device (zram) stores such a page in about RandomBytes bytes, so
// RandomShare = RandomBytes/page size sets the compressibility: 0.33 is
// about 3:1, in the range zram reports for general anonymous memory.
// Zero-filled pages would be stored for free and fake the swap regime.
type Content struct {
	RandomShare float64
	randomBytes int
	pool        []byte
}

// contentPool is the random source the pages copy from, at page-dependent
// offsets so that no two neighbouring pages are equal.
const contentPool = 1 << 20

// NewContent prepares the random pool; share is in (0, 1].
func NewContent(share float64, pageSize int, seed uint64) (*Content, error) {
	if !(share > 0 && share <= 1) {
		return nil, fmt.Errorf("random share %v: must be in (0, 1]", share)
	}
	c := &Content{RandomShare: share, randomBytes: max(1, int(share*float64(pageSize)+0.5))}
	r := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	c.pool = make([]byte, contentPool+c.randomBytes)
	for i := 0; i+8 <= len(c.pool); i += 8 {
		v := r.Uint64()
		for j := range 8 {
			c.pool[i+j] = byte(v >> (8 * j))
		}
	}
	return c, nil
}

// RandomBytes is how many bytes of each page are random.
func (c *Content) RandomBytes() int { return c.randomBytes }

// Write fills the pages of b (page-aligned, firstPage its index in the
// arena) with their content; the write faults each page in.
func (c *Content) Write(b []byte, firstPage, pageSize int) {
	for off, p := 0, firstPage; off < len(b); off, p = off+pageSize, p+1 {
		src := (p * 4099 * 64) % contentPool
		copy(b[off:off+c.randomBytes], c.pool[src:src+c.randomBytes])
	}
}

// retouch reads one byte of n pages of mem's first pages pages, from page
// from on, wrapping. It returns where the next call should start and the
// XOR of what it read, which the caller keeps so the reads are not
// optimised away.
func retouch(mem []byte, pageSize, pages, from, n int) (next int, x byte) {
	p := from % pages
	for range n {
		x ^= mem[p*pageSize]
		if p++; p == pages {
			p = 0
		}
	}
	return p, x
}
