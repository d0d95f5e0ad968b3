package main

import (
	"fmt"
	"io"
	"slices"

	"github.com/agentcg/agentcg/replayimage/replay"
	"github.com/spf13/cobra"
)

func newBench(stdout io.Writer) *cobra.Command {
	var (
		tf       traceFlags
		memScale float64
		rounds   int
		touch    bool
		minRatio float64
	)
	c := &cobra.Command{
		Use:   "bench TRACE",
		Short: "Unpaced replay throughput next to a raw mmap-and-touch loop, in the same run",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tr, err := tf.load(args[0])
			if err != nil {
				return err
			}
			if rounds < 1 {
				return &exitError{exitInvalid, fmt.Errorf("rounds %d: need at least 1", rounds)}
			}
			var replayGBs, rawGBs, wallGBs []float64
			var last *replay.Result
			// Round 0 warms up the machine (first touches of fresh host
			// memory are slow for both) and is not counted.
			for r := range rounds + 1 {
				res, err := replay.Run(cmd.Context(), tr, replay.Options{Speed: 1, MemScale: memScale, Unpaced: true, Touch: touch})
				if err != nil {
					return &exitError{exitFail, err}
				}
				if !res.Complete {
					return &exitError{exitFail, fmt.Errorf("replay interrupted: %s", res.Interrupted)}
				}
				d, err := replay.RawTouch(res.TouchedBytes)
				if err != nil {
					return &exitError{exitFail, err}
				}
				if r == 0 {
					continue
				}
				replayGBs = append(replayGBs, float64(res.TouchedBytes)/res.GrowS/1e9)
				wallGBs = append(wallGBs, float64(res.TouchedBytes)/res.CompletionS/1e9)
				rawGBs = append(rawGBs, float64(res.TouchedBytes)/d.Seconds()/1e9)
				last = res
			}
			rp, raw := median(replayGBs), median(rawGBs)
			fmt.Fprintf(stdout, "trace    %s, mem-scale %g, %d samples, %d rounds (median)\n", tr.Name, memScale, last.Samples, rounds)
			fmt.Fprintf(stdout, "replay   unpaced (%s): %.2f GB touched, %.2f GB released per run\n",
				last.Populate, float64(last.TouchedBytes)/1e9, float64(last.ReleasedBytes)/1e9)
			fmt.Fprintf(stdout, "replay   touch throughput (touched / time in growing steps): %.3f GB/s (rounds %s)\n", rp, fmtAll(replayGBs))
			fmt.Fprintf(stdout, "replay   whole run (touched / completion, frees included): %.3f GB/s (rounds %s)\n", median(wallGBs), fmtAll(wallGBs))
			fmt.Fprintf(stdout, "raw      mmap + touch loop of the same bytes: %.3f GB/s (rounds %s)\n", raw, fmtAll(rawGBs))
			fmt.Fprintf(stdout, "ratio    replay/raw = %.2f\n", rp/raw)
			if rp/raw < minRatio {
				return &exitError{exitFail, fmt.Errorf("replay/raw ratio %.2f is below %.2f", rp/raw, minRatio)}
			}
			return nil
		},
	}
	tf.register(c)
	c.Flags().Float64Var(&memScale, "mem-scale", 0.25, "memory scale (keep the peak well inside RAM)")
	c.Flags().IntVar(&rounds, "rounds", 3, "replay/raw pairs to run; the median is reported")
	c.Flags().Float64Var(&minRatio, "min-ratio", 0, "exit 1 when replay/raw falls below this")
	c.Flags().BoolVar(&touch, "touch", false, "replay with the touch fallback instead of MADV_POPULATE_WRITE")
	return c
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fmtAll(v []float64) string {
	out := ""
	for i, x := range v {
		if i > 0 {
			out += " "
		}
		out += fmt.Sprintf("%.3f", x)
	}
	return out
}
