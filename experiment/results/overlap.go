package results

import "fmt"

// MinOverlapS is the least overlap of a LOW session with HIGH that makes a
// run a contention run when the plan has no contention window.
const MinOverlapS = 1.0

// MinCover is the share of HIGH's contention window a LOW session must be
// active in, unless it was killed (a kill is an outcome, not a reason to
// drop the run).
const MinCover = 0.9

// ContentionWindow is the run's planned contention window in Unix
// seconds, stretched by how late HIGH reached its peak, and cut where HIGH
// ended (a HIGH killed before it leaves nothing to contend with).
func (rd *RunData) ContentionWindow() (from, to float64) {
	r := rd.Run
	if r.ContentionEndS <= r.ContentionStartS {
		return 0, 0
	}
	from, to = r.StartUnix+r.ContentionStartS, r.StartUnix+r.ContentionEndS
	for _, h := range rd.ByRole(RoleHigh) {
		if h.Replay != nil {
			to += h.Replay.PeakLatenessS
		}
		if h.ActiveEnd > 0 {
			to = min(to, h.ActiveEnd)
		}
	}
	return from, max(from, to)
}

// Killed reports whether the session was killed (OOM or another signal).
func (s *Session) Killed() bool { return s.OOMKilled || s.Signal == 9 }

// CheckOverlap fills each LOW session's overlap with HIGH's contention
// window and marks the run excluded when a LOW that was not killed was
// absent from it: then the arms did not face the designed contention.
// Solo runs are never excluded, and neither is a run whose HIGH was killed:
// its death is the outcome, and dropping it would bias survival.
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
	exclude := func(reason string) {
		if !rd.Run.Excluded && !h.Killed() {
			rd.Run.Excluded, rd.Run.ExcludeReason = true, reason
		}
	}
	from, to := rd.ContentionWindow()
	for _, l := range rd.ByRole(RoleLow) {
		if to > from {
			l.OverlapHighS = max(0, min(to, l.ActiveEnd)-max(from, l.ActiveStart))
			if l.OverlapHighS < MinCover*(to-from) && !l.Killed() {
				exclude(fmt.Sprintf("%s was active for %.2f s of HIGH's %.2f s contention window (< %.0f%%) and was not killed",
					l.Name, l.OverlapHighS, to-from, 100*MinCover))
			}
			continue
		}
		l.OverlapHighS = max(0, min(h.ActiveEnd, l.ActiveEnd)-max(h.ActiveStart, l.ActiveStart))
		if l.OverlapHighS < MinOverlapS && !l.Killed() {
			exclude(fmt.Sprintf("%s overlapped HIGH for %.2f s (< %.0f s) and was not killed", l.Name, l.OverlapHighS, MinOverlapS))
		}
	}
}
