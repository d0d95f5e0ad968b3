package replay

import (
	"context"
	"fmt"
	"os"
	"time"
)

// RateOptions is one first-touch measurement: make Bytes resident the way
// a replay would, then read every page again Rereads times.
type RateOptions struct {
	Bytes       int64
	RandomShare float64 // as Options.RandomShare
	FilePath    string  // measure page-cache reads of this file instead of anonymous memory
	Rereads     int
	// Hold keeps the memory this long after the rereads (tests reclaim
	// against a session that holds its memory).
	Hold time.Duration
}

// RateResult is what MeasureRate saw. Under a memory.max below Bytes, the
// fill includes reclaim (swap-out or eviction) and the rereads fault the
// pages back in: their cost per GB is the regime's.
type RateResult struct {
	Bytes           int64     `json:"bytes"`
	Populate        string    `json:"populate"`
	FillS           float64   `json:"fill_s"`
	FillBytesPerS   float64   `json:"fill_bytes_per_s"`
	RereadS         []float64 `json:"reread_s,omitempty"`
	RereadBytesPerS float64   `json:"reread_bytes_per_s,omitempty"` // of the last reread
}

// MeasureRate times the fill and the rereads.
func MeasureRate(ctx context.Context, o RateOptions) (RateResult, error) {
	r := RateResult{Bytes: o.Bytes}
	if o.Bytes <= 0 {
		return r, fmt.Errorf("bytes %d: must be positive", o.Bytes)
	}
	ps := os.Getpagesize()
	pages := int((o.Bytes + int64(ps) - 1) / int64(ps))
	var (
		resize func(int) error
		reread func()
	)
	if o.FilePath != "" {
		f, err := OpenFileArena(o.FilePath, o.Bytes)
		if err != nil {
			return r, err
		}
		defer f.Close()
		r.Populate = "file"
		resize = func(n int) error { return f.Resize(ctx, n) }
		reread = func() { f.Retouch(0, pages) }
	} else {
		a, err := NewArena(o.Bytes, false)
		if err != nil {
			return r, err
		}
		defer a.Close()
		if o.RandomShare > 0 {
			c, err := NewContent(o.RandomShare, ps, 1)
			if err != nil {
				return r, err
			}
			a.SetContent(c)
		}
		r.Populate = a.Populate()
		resize = func(n int) error { return a.Resize(ctx, n) }
		reread = func() { a.Retouch(0, pages) }
	}
	t0 := time.Now()
	if err := resize(pages); err != nil {
		return r, err
	}
	r.FillS = time.Since(t0).Seconds()
	r.FillBytesPerS = float64(o.Bytes) / r.FillS
	for range o.Rereads {
		t0 := time.Now()
		reread()
		d := time.Since(t0).Seconds()
		r.RereadS = append(r.RereadS, d)
		r.RereadBytesPerS = float64(o.Bytes) / d
	}
	if o.Hold > 0 {
		if err := sleepUntil(ctx, time.Now().Add(o.Hold)); err != nil {
			return r, err
		}
	}
	return r, ctx.Err()
}
