package main

import (
	"io"

	"github.com/agentcg/agentcg/replayimage/replay"
	"github.com/spf13/cobra"
)

func newRate(stdout io.Writer) *cobra.Command {
	var o replay.RateOptions
	c := &cobra.Command{
		Use:   "rate",
		Short: "Time making --bytes resident as a replay does (and re-reading them), print JSON",
		Long: "Measures the first-touch rate the experiment calibrates its memory scale from. Run inside a\n" +
			"cgroup whose memory.max is below --bytes, the fill includes reclaim and the rereads fault\n" +
			"pages back in: what a reclaim regime costs per GB.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := replay.MeasureRate(cmd.Context(), o)
			if err != nil {
				return &exitError{exitFail, err}
			}
			return writeJSON(stdout, r)
		},
	}
	f := c.Flags()
	f.Int64Var(&o.Bytes, "bytes", 256<<20, "bytes to make resident")
	f.Float64Var(&o.RandomShare, "random-share", 0, "as for run: random share of each page (0: zero pages)")
	f.StringVar(&o.FilePath, "file", "", "read this file's pages into the page cache instead")
	f.IntVar(&o.Rereads, "rereads", 0, "then read every page again this many times")
	f.DurationVar(&o.Hold, "hold", 0, "then keep the memory this long before printing (e.g. 30s)")
	return c
}
