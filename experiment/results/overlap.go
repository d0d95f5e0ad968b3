package results

import "fmt"

// MinOverlapS is the least overlap of a LOW session with HIGH that makes a
// run a contention run; below it LOW effectively ran alone.
const MinOverlapS = 1.0

// CheckOverlap fills each LOW session's overlap with HIGH and marks the run
// excluded when some LOW never overlapped HIGH. Solo runs are never excluded.
func CheckOverlap(rd *RunData) {
	if rd.Run.Arm == ArmSolo {
		return
	}
	highs := rd.ByRole(RoleHigh)
	if len(highs) != 1 {
		rd.Run.Excluded = true
		rd.Run.ExcludeReason = fmt.Sprintf("%d HIGH sessions, want 1", len(highs))
		return
	}
	h := highs[0]
	for _, l := range rd.ByRole(RoleLow) {
		lo := max(h.ActiveStart, l.ActiveStart)
		hi := min(h.ActiveEnd, l.ActiveEnd)
		l.OverlapHighS = max(0, hi-lo)
		if l.OverlapHighS < MinOverlapS && !rd.Run.Excluded {
			rd.Run.Excluded = true
			rd.Run.ExcludeReason = fmt.Sprintf("%s overlapped HIGH for %.2f s (< %.0f s)", l.Name, l.OverlapHighS, MinOverlapS)
		}
	}
}
