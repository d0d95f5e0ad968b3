// Command agentcg-runc is a runc-CLI wrapper for Docker's "runtimes": on
// create it adds the agentcg hooks to the bundle, then it execs the real
// runtime with the remaining arguments.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/agentcg/agentcg/enroll"
	"github.com/agentcg/agentcg/hook/runcwrap"
)

func main() {
	self, err := os.Executable()
	if err != nil {
		fatal(err)
	}
	cwd, err := os.Getwd()
	if err != nil {
		fatal(err)
	}
	inv, err := runcwrap.Parse(os.Args[1:], os.Getenv, self, cwd)
	if err != nil {
		fatal(err)
	}
	cfg, cerr := enroll.LoadConfig(inv.Config)
	if inv.Subcommand == "create" && cerr == nil {
		inv.ConfigTimeout = time.Duration(cfg.HookTimeout)
	}
	if err := inv.Modify(); err != nil {
		// Fail open unless the config says closed: the container then
		// runs without the agentcg hooks.
		if cerr != nil || cfg.FailMode == enroll.FailClosed {
			fatal(fmt.Errorf("inject hooks into %s: %w", inv.Bundle, err))
		}
		fmt.Fprintf(os.Stderr, "agentcg-runc: inject hooks into %s: %v (fail_mode open: continuing without them)\n", inv.Bundle, err)
	}
	bin, err := exec.LookPath(inv.Runtime)
	if err != nil {
		fatal(fmt.Errorf("real runtime: %w", err))
	}
	argv := append([]string{inv.Runtime}, inv.Args...)
	fatal(syscall.Exec(bin, argv, os.Environ()))
}

func fatal(err error) {
	fmt.Fprintf(os.Stderr, "agentcg-runc: %v\n", err)
	os.Exit(1)
}
