package hook

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Nice is the nice value the hook runs its stages at. The hook is on the
// container's start path for milliseconds and holds the node-wide state
// lock for part of them. Nice weighs it against the tasks of its own
// cgroup, the runtime's (runc, the shims, the daemon): in a burst of starts
// those are what it queues behind, and the other hooks wait on the lock
// while it does.
const Nice = -10

// SetNice sets the nice value of every thread of this process. Linux keeps
// nice per thread, and the Go runtime has started several by now; a thread
// inherits its creator's, so the passes repeat until one finds no new
// thread. It changes only this process: the runc that ran the hook and the
// container keep theirs.
func SetNice(nice int) error {
	done := map[int]bool{}
	var errs []error
	for {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return fmt.Errorf("list threads: %w", err)
		}
		found := false
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil || done[tid] {
				continue
			}
			done[tid], found = true, true
			if err := unix.Setpriority(unix.PRIO_PROCESS, tid, nice); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("setpriority(thread %d, %d): %w", tid, nice, err))
			}
		}
		if !found {
			return errors.Join(errs...)
		}
	}
}
