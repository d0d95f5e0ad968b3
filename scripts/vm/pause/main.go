// Command pause is the CRI sandbox ("pause") process of the agentcg VM guest:
// it holds the pod's namespaces, reaps adopted children and exits on
// SIGINT or SIGTERM. It is built statically and packed as agentcg/pause:1
// because the guest has no registry to pull registry.k8s.io/pause from.
package main

import (
	"os"
	"os/signal"

	"golang.org/x/sys/unix"
)

func main() {
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, unix.SIGINT, unix.SIGTERM, unix.SIGCHLD)
	for s := range sig {
		if s != unix.SIGCHLD {
			os.Exit(0)
		}
		// As PID 1 of the pod we adopt orphans; reap them so they do not pile up.
		for {
			pid, err := unix.Wait4(-1, nil, unix.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
