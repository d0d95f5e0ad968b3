package policy

import (
	"testing"
	"time"
)

func TestGrowthSignal(t *testing.T) {
	const mb = 1_000_000
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	type sample struct {
		ms     int
		usage  uint64
		active bool
	}
	cases := []struct {
		name    string
		window  time.Duration
		min     uint64
		samples []sample
	}{
		{"window 0 is always active", 0, 8 * mb, []sample{{0, 10 * mb, true}, {5000, 10 * mb, true}}},
		{"first sample is not growth", 2 * time.Second, 8 * mb, []sample{{0, 100 * mb, false}}},
		{"growth above the minimum", 2 * time.Second, 8 * mb, []sample{{0, 100 * mb, false}, {500, 109 * mb, true}, {2400, 109 * mb, true}, {2600, 109 * mb, false}}},
		{"growth below the minimum is not activity", 2 * time.Second, 8 * mb, []sample{{0, 100 * mb, false}, {500, 104 * mb, false}, {1000, 107 * mb, false}}},
		{"slow growth across windows is not activity", 2 * time.Second, 8 * mb, []sample{{0, 100 * mb, false}, {1900, 105 * mb, false}, {2100, 106 * mb, false}, {3000, 110 * mb, false}}},
		{"growth counts from the window's minimum", 2 * time.Second, 8 * mb, []sample{{0, 100 * mb, false}, {300, 60 * mb, false}, {600, 69 * mb, true}}},
		{"free and re-touch is not growth", 2 * time.Second, 8 * mb, []sample{{0, 100 * mb, false}, {200, 100 * mb, false}, {400, 100 * mb, false}}},
		{"min 0 counts any rise", 2 * time.Second, 0, []sample{{0, 100, false}, {100, 101, true}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := GrowthSignal{Window: c.window, MinGrowth: c.min}
			for i, s := range c.samples {
				if got := g.Observe(at(s.ms), s.usage); got != s.active {
					t.Fatalf("sample %d (t=%d ms, usage %d): active %v, want %v", i, s.ms, s.usage, got, s.active)
				}
			}
		})
	}
}
