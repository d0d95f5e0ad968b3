package results

import (
	"strings"
	"testing"
)

func overlapRun(highEnd, lowStart, lowEnd float64, lowKilled bool) RunData {
	rd := RunData{Run: Run{Arm: "NoLimit", StartUnix: 100, ContentionStartS: 10, ContentionEndS: 14}}
	rd.Sessions = []Session{
		{Name: "high", Role: RoleHigh, ActiveStart: 100, ActiveEnd: highEnd, Replay: &Replay{PeakLatenessS: 2}},
		{Name: "low1", Role: RoleLow, ActiveStart: lowStart, ActiveEnd: lowEnd, OOMKilled: lowKilled},
	}
	return rd
}

func highKilled(rd RunData) RunData {
	rd.Sessions[0].OOMKilled = true
	return rd
}

// The overlap is checked against HIGH's contention window (planned,
// stretched by HIGH's lateness, cut where HIGH ended), not its lifetime;
// a killed LOW never excludes a run.
func TestCheckOverlap(t *testing.T) {
	tests := []struct {
		name     string
		rd       RunData
		excluded bool
		want     float64
	}{
		{"LOW covers the window", overlapRun(140, 100, 140, false), false, 6},
		{"LOW left before the window ended", overlapRun(140, 100, 112, false), true, 2},
		{"LOW present for HIGH's whole life but not the stretched window", overlapRun(140, 100, 114, false), true, 4},
		{"LOW killed before the window is an outcome", overlapRun(140, 100, 105, true), false, 0},
		{"HIGH killed inside the window cuts it", overlapRun(111, 100, 112, false), false, 1},
		{"HIGH killed before the window is an outcome, never excluded", highKilled(overlapRun(100.5, 100, 140, false)), false, 0.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rd := tt.rd
			CheckOverlap(&rd)
			if rd.Run.Excluded != tt.excluded || rd.Sessions[1].OverlapHighS != tt.want {
				t.Fatalf("excluded %v (%s), overlap %v; want %v, %v", rd.Run.Excluded, rd.Run.ExcludeReason, rd.Sessions[1].OverlapHighS, tt.excluded, tt.want)
			}
			if rd.Run.Excluded && !strings.Contains(rd.Run.ExcludeReason, "contention window") {
				t.Fatalf("reason %q", rd.Run.ExcludeReason)
			}
		})
	}
}
