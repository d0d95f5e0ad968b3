package report

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/agentcg/agentcg/experiment/results"
)

// Headers of the derived CSV files: their schema.
var Headers = map[string]string{
	"summary.csv":    "arm,role,metric,n,mean,std,ci95_low,ci95_high,p50,max",
	"stats.csv":      "metric,arm_a,arm_b,n_a,n_b,U,p,note",
	"timeseries.csv": results.TimeseriesHeader,
}

// Check verifies a finished results folder: every file exists with its
// schema, and every arm in wantArms has at least one finished run with
// sessions. It is what CI runs after the smoke profile.
func Check(dir string, wantArms []string) error {
	var problems []string
	for _, f := range []string{"config.json", "env.json", "report.md", "fig1-completion.png", "fig1-completion.svg", "fig3-oom.png", "fig3-oom.svg"} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Size() == 0 {
			problems = append(problems, f+": missing or empty")
		}
	}
	for f, h := range Headers {
		got, err := firstLine(filepath.Join(dir, f))
		if err != nil {
			problems = append(problems, err.Error())
		} else if got != h {
			problems = append(problems, fmt.Sprintf("%s: header %q, want %q", f, got, h))
		}
	}
	var env results.Env
	if err := results.ReadJSON(filepath.Join(dir, "env.json"), &env); err != nil {
		problems = append(problems, err.Error())
	} else if env.KernelRelease == "" || env.Runtime == "" || env.Where == "" {
		problems = append(problems, "env.json: kernel_release, runtime or where empty")
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
		have[r.Run.Arm] = true
		if _, err := os.Stat(filepath.Join(results.RunDir(dir, r.Run.ID), "timeseries.csv")); err != nil {
			problems = append(problems, "run "+r.Run.ID+": no timeseries.csv")
		}
	}
	for _, a := range wantArms {
		if !have[a] {
			problems = append(problems, "arm "+a+": no finished run")
		}
	}
	if len(problems) > 0 {
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
	sc.Scan()
	return sc.Text(), sc.Err()
}
