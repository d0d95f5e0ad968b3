package report

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/agentcg/agentcg/experiment/results"
)

// Check verifies a finished results folder: every file exists with its
// schema, env.json says where it ran, and every label in wantLabels has
// at least one finished run with sessions. It is what CI runs after the
// smoke profile.
func Check(dir string, wantLabels []string) error {
	var problems []string
	for _, f := range []string{"config.json", "env.json", "plan.json", "report.md"} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Size() == 0 {
			problems = append(problems, f+": missing or empty")
		}
	}
	for _, pat := range []string{"fig1-high-stall-*.png", "fig1-high-stall-*.svg", "fig2-timeline-*.png", "fig3-survival-*.png"} {
		if m, _ := filepath.Glob(filepath.Join(dir, pat)); len(m) == 0 {
			problems = append(problems, pat+": no such figure")
		}
	}
	hs := Headers()
	for _, f := range sortedKeys(hs) {
		got, err := firstLine(filepath.Join(dir, f))
		if err != nil {
			problems = append(problems, err.Error())
		} else if got != hs[f] {
			problems = append(problems, fmt.Sprintf("%s: header %q, want %q", f, got, hs[f]))
		}
	}
	var env results.Env
	if err := results.ReadJSON(filepath.Join(dir, "env.json"), &env); err != nil {
		problems = append(problems, err.Error())
	} else if env.KernelRelease == "" || env.Runtime == "" || env.Where == "" || len(env.Reclaim) == 0 {
		problems = append(problems, "env.json: kernel_release, runtime, where or reclaim empty")
	}
	runs, err := results.Load(dir)
	if err != nil {
		problems = append(problems, err.Error())
	}
	have := map[string]bool{}
	for _, r := range runs {
		if len(r.Sessions) == 0 {
			problems = append(problems, "run "+r.Run.ID+": no sessions")
			continue
		}
		have[r.Run.Label] = true
		if r.Run.Reclaim == "" {
			problems = append(problems, "run "+r.Run.ID+": no reclaim regime")
		}
		if _, err := os.Stat(filepath.Join(results.RunDir(dir, r.Run.ID), "timeseries.csv")); err != nil {
			problems = append(problems, "run "+r.Run.ID+": no timeseries.csv")
		}
	}
	for _, l := range wantLabels {
		if !have[l] {
			problems = append(problems, "point "+l+": no finished run")
		}
	}
	if md, err := os.ReadFile(filepath.Join(dir, "report.md")); err == nil {
		for _, want := range []string{"**Regime:**", "## Headline", "## The contention plan"} {
			if !strings.Contains(string(md), want) {
				problems = append(problems, "report.md: no "+want)
			}
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return fmt.Errorf("results %s:\n  %s", dir, strings.Join(problems, "\n  "))
	}
	return nil
}

func firstLine(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	sc.Scan()
	return sc.Text(), sc.Err()
}
