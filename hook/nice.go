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
// lock for part of them: under a burst of starts it should not queue for
// CPU behind the containers it is starting, nor keep the other hooks
// waiting on that lock while it does.
const Nice = -10

// SetNice sets the nice value of every thread of this process. Linux keeps
// nice per thread, and the Go runtime has started several by now; threads
// started later inherit it from their creator. It changes only this
// process: the runtime that ran the hook and the container keep theirs.
func SetNice(nice int) error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return fmt.Errorf("list threads: %w", err)
	}
	var errs []error
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.Setpriority(unix.PRIO_PROCESS, tid, nice); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("setpriority(thread %d, %d): %w", tid, nice, err))
		}
	}
	return errors.Join(errs...)
}
