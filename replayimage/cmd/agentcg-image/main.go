// Command agentcg-image writes the project's images as tars (docker load,
// ctr images import) without a container daemon: the replay image, the
// agentcg-nri plugin image and the CRI pause image of the VM guest.
package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/agentcg/agentcg/internal/version"
	"github.com/agentcg/agentcg/replayimage/image"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"
)

func main() {
	if err := newRoot(os.Stdout).Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "agentcg-image: %v\n", err)
		os.Exit(1)
	}
}

// output is the flags every image subcommand shares.
type output struct {
	tags     []string
	out, oci string
	version  string
}

func (o *output) register(cmd *cobra.Command, tags []string, file string) {
	f := cmd.Flags()
	f.StringSliceVar(&o.tags, "tag", tags, "image references (repeatable)")
	f.StringVar(&o.out, "out", "build/"+file+".tar", "output docker-archive tar")
	f.StringVar(&o.oci, "oci", "", "also write an OCI image-layout tar here")
	f.StringVar(&o.version, "image-version", "", "org.opencontainers.image.version label (default: this build's version)")
}

// versioned is repo tagged with this build's version and latest.
func versioned(repo string) []string {
	return []string{repo + ":" + version.Version, repo + ":latest"}
}

func (o *output) labelVersion() string {
	if o.version == "" {
		return version.Version
	}
	return o.version
}

func (o *output) write(w io.Writer, spec image.Spec, err error) error {
	if err != nil {
		return err
	}
	img, err := image.New(spec)
	if err != nil {
		return err
	}
	if err := image.Write(o.out, img, o.tags...); err != nil {
		return err
	}
	files := []string{o.out}
	if o.oci != "" {
		if err := image.WriteOCI(o.oci, img, o.tags...); err != nil {
			return err
		}
		files = append(files, o.oci)
	}
	return report(w, img, files, o.tags)
}

func report(w io.Writer, img v1.Image, files, tags []string) error {
	d, err := img.Digest()
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s %s %s\n", strings.Join(files, ","), strings.Join(tags, ","), d)
	return err
}

func newRoot(stdout io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "agentcg-image",
		Short: "Build agentcg's container images as tars without a Docker daemon",
		Long: `Build agentcg's container images as tars without a Docker daemon.

Each subcommand writes one single-layer image: a docker-archive tar (--out,
for docker load and ctr images import) and optionally an OCI image-layout
tar (--oci). The same inputs give the same image digest.`,
		Version:       version.Version,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)

	var replay image.Options
	var ro output
	replayCmd := &cobra.Command{
		Use:   "replay",
		Short: "The replay image: agentcg-replay as entrypoint, traces under /traces/<name>/",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			replay.Version = ro.labelVersion()
			spec, err := image.Replay(replay)
			return ro.write(cmd.OutOrStdout(), spec, err)
		},
	}
	replayCmd.Flags().StringVar(&replay.Binary, "binary", "bin/agentcg-replay", "static agentcg-replay binary (the entrypoint)")
	replayCmd.Flags().StringVar(&replay.Traces, "traces", "replayimage/traces", "folder of trace folders to bake in under /traces/<name>/")
	ro.register(replayCmd, versioned("agentcg/replay"), "agentcg-replay")

	var nriBin string
	var no output
	nriCmd := &cobra.Command{
		Use:   "nri",
		Short: "The agentcg-nri plugin image: the static plugin, config expected at /etc/agentcg/config.yaml",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			spec, err := image.NRI(nriBin, no.labelVersion())
			return no.write(cmd.OutOrStdout(), spec, err)
		},
	}
	nriCmd.Flags().StringVar(&nriBin, "binary", "bin/agentcg-nri", "static agentcg-nri binary (the entrypoint)")
	no.register(nriCmd, versioned("agentcg/agentcg-nri"), "agentcg-nri")

	var pauseBin string
	var po output
	pauseCmd := &cobra.Command{
		Use:   "pause",
		Short: "The CRI sandbox image: a static pause binary at /pause",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			spec, err := image.Pause(pauseBin)
			return po.write(cmd.OutOrStdout(), spec, err)
		},
	}
	pauseCmd.Flags().StringVar(&pauseBin, "binary", "", "static pause binary (the entrypoint)")
	po.register(pauseCmd, []string{"docker.io/agentcg/pause:1"}, "agentcg-pause")
	_ = pauseCmd.MarkFlagRequired("binary")

	root.AddCommand(replayCmd, nriCmd, pauseCmd)
	return root
}
