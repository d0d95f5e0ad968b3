package contention

import (
	"fmt"
	"strings"
	"text/tabwriter"
)

// Text renders the plan for a terminal and for report.md (a fenced block).
func (p *Plan) Text() string {
	var b strings.Builder
	w := func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }
	w("Contention plan: profile %s, memory scale %s (%s), speed %g, a contended run lasts %.1f s wall\n\n",
		p.Profile, trim(p.MemScale), p.ScaleNote, p.Speed, p.RunS)
	tw := tabwriter.NewWriter(&b, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "session\trole\ttrace\twindow (trace s)\tdelay s\tpeak\tmin\t")
	for _, s := range p.Sessions {
		win := fmt.Sprintf("%g–%g", s.Window.From, s.Window.To)
		if s.Window.Loop {
			win += fmt.Sprintf(" looped, phase %g (block 0)", s.Window.Offset)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%g\t%s\t%s\t\n", s.Name, s.Role, s.Trace, win, s.DelayS, MB(s.PeakBytes), MB(s.MinBytes))
	}
	tw.Flush()
	w("\nparent limit %s (%s unscaled), gate line %d%% = %s, %s overhead per running container (not scaled)\n\n",
		MB(p.ParentLimitBytes), MB(int64(float64(p.ParentLimitBytes)/p.MemScale)), p.GatePct, MB(p.GateBytes), MB(p.OverheadBytes))

	w("Demand over time, block 0 (bytes include each container's overhead; give-up: what LOW must release for HIGH to fit, while HIGH runs):\n\n")
	tw = tabwriter.NewWriter(&b, 2, 8, 2, ' ', tabwriter.AlignRight)
	hdr := "t s\t"
	for _, s := range p.Sessions {
		hdr += s.Name + "\t"
	}
	fmt.Fprintln(tw, hdr+"sum\tlimit\tgate\tgive-up\t")
	for i, s := range p.Series {
		if i > 0 && sameRow(p.Series[i-1], s) {
			continue
		}
		row := fmt.Sprintf("%.2f\t", s.T)
		for _, ss := range p.Sessions {
			if v, ok := s.Bytes[ss.Name]; ok {
				row += mb(v) + "\t"
			} else {
				row += "–\t"
			}
		}
		mark := ""
		if s.GiveUpBytes >= p.FloorBytes && s.GiveUpBytes > 0 {
			mark = " *"
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s%s\t\n", row, mb(s.SumBytes), mb(p.ParentLimitBytes), mb(p.GateBytes), mb(s.GiveUpBytes), mark)
	}
	tw.Flush()
	w("(MB; * = give-up at or above the floor)\n\n")

	w("Per block (LOW phases drawn from the seed, shared by every arm of the block):\n\n")
	tw = tabwriter.NewWriter(&b, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "block\tphases (trace s)\tgive-up max\tat/above floor\tLOW share\tcontention window (s)\t")
	for _, bl := range p.Blocks {
		var ph []string
		for _, s := range p.Sessions {
			if v, ok := bl.Offsets[s.Name]; ok {
				ph = append(ph, fmt.Sprintf("%s %g", s.Name, v))
			}
		}
		weak := ""
		if bl.Weak {
			weak = "  WEAK"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%.2f s%s\t%.0f%%\t%.2f–%.2f\t\n", bl.Block, or(strings.Join(ph, ", "), "–"), MB(bl.GiveUpBytes), bl.GiveUpS, weak,
			100*bl.LowShare, bl.ContentionStartS, bl.ContentionEndS)
	}
	tw.Flush()
	verdict := "met in every block"
	if p.Weak {
		verdict = "NOT met: weak contention"
	}
	w("\nFloor: LOW must give up at least %s (%.0f%% of HIGH's window peak %s) for at least %.1f s of wall time: %s (weakest block: %s for %.2f s).\n",
		MB(p.FloorBytes), 100*float64(p.FloorBytes)/float64(max(1, p.HighPeakBytes)), MB(p.HighPeakBytes), p.FloorS, verdict, MB(p.GiveUpBytes), p.GiveUpS)
	if p.LimitRange[1] > 0 {
		w("Unscaled parent limits that fit HIGH and meet the floor in every block: %s to %s.\n", MB(p.LimitRange[0]), MB(p.LimitRange[1]))
	} else {
		w("No parent limit both fits HIGH and meets the floor in every block with these windows.\n")
	}
	for _, pr := range p.Problems {
		w("Problem: %s\n", pr)
	}
	bu := p.Budget
	w("\nTime budget: %d blocks × %d runs = %d runs; replay %.0f s + setup %.0f s (%g s per run + %g s per container + cool-down) + fixed %.0f s (boot, calibration, report) = %.0f s (%.0f min).\n",
		bu.Blocks, bu.RunsPerBlock, bu.Runs, bu.ReplayS, bu.SetupS, bu.Estimate.RunS, bu.Estimate.SessionS, bu.FixedS, bu.TotalS, bu.TotalS/60)
	return b.String()
}

func sameRow(a, b Sample) bool {
	if a.SumBytes != b.SumBytes || a.GiveUpBytes != b.GiveUpBytes || len(a.Bytes) != len(b.Bytes) {
		return false
	}
	for k, v := range a.Bytes {
		if b.Bytes[k] != v {
			return false
		}
	}
	return true
}

func mb(v int64) string { return fmt.Sprintf("%.1f", float64(v)/1e6) }

func trim(v float64) string {
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.4f", v), "0"), ".")
}

func or(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
