// Command agentcg-image writes the replay image tar (docker load / ctr images
// import) without a Docker daemon.
package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/agentcg/agentcg/internal/version"
	"github.com/agentcg/agentcg/replayimage/image"
	"github.com/spf13/cobra"
)

func main() {
	var opt image.Options
	var (
		tags []string
		out  string
	)
	root := &cobra.Command{
		Use:           "agentcg-image",
		Short:         "Build the agentcg replay image tar without a Docker daemon",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opt.Version == "" {
				opt.Version = version.Version
			}
			img, err := image.Build(opt)
			if err != nil {
				return err
			}
			if err := image.Write(out, img, tags...); err != nil {
				return err
			}
			d, err := img.Digest()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s %s\n", out, strings.Join(tags, ","), d)
			return nil
		},
	}
	f := root.Flags()
	f.StringVar(&opt.Binary, "binary", "bin/agentcg-replay", "static agentcg-replay binary (the entrypoint)")
	f.StringVar(&opt.Traces, "traces", "replayimage/traces", "folder of trace folders to bake in under /traces/<name>/")
	f.StringVar(&opt.Version, "version", "", "image version label (default: this build's version)")
	f.StringSliceVar(&tags, "tag", []string{"agentcg/replay:" + version.Version, "agentcg/replay:latest"}, "image references (repeatable)")
	f.StringVar(&out, "out", "build/agentcg-replay.tar", "output tar")
	if err := root.Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "agentcg-image: %v\n", err)
		os.Exit(1)
	}
}
