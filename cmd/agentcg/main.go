// Command agentcg is the agentcg CLI: policy subcommands (probe, attach,
// detach, status), the experiment subcommands, and configure and doctor
// for installing on a node. It only assembles them.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	experimentcli "github.com/agentcg/agentcg/experiment/cli"
	"github.com/agentcg/agentcg/internal/configure"
	"github.com/agentcg/agentcg/internal/doctor"
	"github.com/agentcg/agentcg/internal/policycli"
	"github.com/agentcg/agentcg/internal/version"
	"github.com/spf13/cobra"
)

func main() {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	root := &cobra.Command{
		Use:           "agentcg",
		Short:         "memcg priority policies for AI-agent containers",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(policycli.Commands()...)
	root.AddCommand(experimentcli.Command())
	root.AddCommand(configure.Command(), doctor.Command())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := root.ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "agentcg:", err)
		os.Exit(1)
	}
}
