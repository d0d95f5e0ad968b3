// Command agentcg-runc is a runc-CLI wrapper for Docker's "runtimes": on
// create or run of a container whose bundle carries the priority
// annotation it adds the agentcg hooks to the bundle, then it execs the
// real runtime with runc's arguments untouched.
//
// The wrapper is transparent to runc's command line: cobra renders only its
// own --version and --help (asked for without a subcommand, each followed
// by runc's), and never parses runc's arguments. Its own settings are the
// leading --agentcg-* flags (daemon.json "runtimeArgs") or AGENTCG_*
// variables; its log format and file are runc's --log-format and --log, so
// that its messages land where the runc shim looks for runc's.
package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/agentcg/agentcg/enroll"
	"github.com/agentcg/agentcg/hook"
	"github.com/agentcg/agentcg/hook/runcwrap"
	"github.com/agentcg/agentcg/internal/version"
	"github.com/spf13/cobra"
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr, syscall.Exec))
}

type execFunc func(argv0 string, argv []string, envv []string) error

func run(args []string, getenv func(string) string, stdout, stderr io.Writer, exec execFunc) int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "agentcg-runc:", err)
		return 1
	}
	cwd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(stderr, "agentcg-runc:", err)
		return 1
	}
	inv, err := runcwrap.Parse(args, getenv, self, cwd)
	if err != nil {
		fmt.Fprintln(stderr, "agentcg-runc:", err)
		return 2
	}
	log := newLog(inv.Globals, stderr)

	if inv.Own() {
		root := rootCmd()
		root.SetOut(stdout)
		root.SetErr(stderr)
		if inv.Version {
			root.SetArgs([]string{"--version"})
		} else {
			root.SetArgs([]string{"--help"})
		}
		if err := root.Execute(); err != nil {
			fmt.Fprintln(stderr, "agentcg-runc:", err)
			return 1
		}
		fmt.Fprintln(stdout)
	}

	if inv.Injects() {
		s := hook.LoadSettings(inv.Config)
		inv.AnnotationKey = s.Config.AnnotationKey
		inv.ConfigTimeout = hook.EffectiveTimeout(s.Config)
		injected, err := inv.Modify()
		switch {
		case err != nil && s.FailModeKnown && s.Config.FailMode == enroll.FailClosed:
			log.Error("agentcg-runc: cannot add the agentcg hooks (fail_mode closed)", "bundle", inv.Bundle, "err", err)
			return 1
		case err != nil:
			// The spec may not even carry the annotation: an unannotated
			// container must not break on agentcg's account.
			log.Warn("agentcg-runc: cannot add the agentcg hooks; the container runs without them", "bundle", inv.Bundle, "err", err)
		case injected:
			log.Debug("agentcg-runc: hooks added", "bundle", inv.Bundle, "hook", inv.Hook)
		}
	}

	rt, err := runcwrap.LookRuntime(inv.Runtime, self, getenv("PATH"))
	if err != nil {
		log.Error("agentcg-runc: "+err.Error(), "runtime", inv.Runtime)
		return 1
	}
	err = exec(rt, append([]string{inv.Runtime}, inv.Args...), os.Environ())
	log.Error("agentcg-runc: exec "+rt, "err", err)
	return 1
}

// newLog writes to stderr and, when runc was given --log, to that file in
// runc's --log-format, so the shim reports the wrapper's errors as it
// reports runc's.
func newLog(g runcwrap.Globals, stderr io.Writer) *slog.Logger {
	w := stderr
	if g.Log != "" {
		if f, err := os.OpenFile(g.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
			// Left open: the process execs or exits right after.
			w = io.MultiWriter(stderr, f)
		}
	}
	log, err := hook.NewLogger(g.LogFormat, w, slog.LevelInfo)
	if err != nil {
		log, _ = hook.NewLogger("text", w, slog.LevelInfo)
	}
	return log
}

func rootCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "agentcg-runc [--agentcg-FLAG=VALUE...] RUNC-ARGS...",
		Short: "runc wrapper that adds the agentcg OCI hooks to annotated containers",
		Long: fmt.Sprintf(`agentcg-runc stands in for runc (Docker "runtimes", or default-runtime). On
"create" or "run" of a container whose config.json carries the priority
annotation (%s by default, annotation_key in the config) it adds the
agentcg-hook createRuntime and poststop hooks; every other container and
every other subcommand goes to runc untouched.

Its own flags come first, before runc's (daemon.json "runtimeArgs" puts them there):
  %s=PATH     agentcg-hook (default: beside this executable; env %s)
  %s=FILE   config passed to the hook (env %s)
  %s=PATH  the real runtime (default runc, searched in PATH, never this wrapper; env %s)
  %s=D     hook timeout (env %s; default hook_timeout from the config)

Its log lines go to stderr and to runc's --log file in runc's --log-format.
--version and --help print the wrapper's, then runc's.`,
			enroll.DefaultAnnotationKey,
			runcwrap.FlagHook, runcwrap.EnvHook, runcwrap.FlagConfig, runcwrap.EnvConfig,
			runcwrap.FlagRuntime, runcwrap.EnvRuntime, runcwrap.FlagTimeout, runcwrap.EnvTimeout),
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Run:           func(*cobra.Command, []string) {},
	}
	c.SetVersionTemplate("agentcg-runc version {{.Version}}\nspec: " + specs.Version + "\n")
	return c
}
