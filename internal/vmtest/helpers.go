package vmtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentcg/agentcg/cgroup"
)

// Images and files the guest init provides (scripts/vm/guest/vminit).
const (
	// ReplayImage is the replay image as docker and CRI know it after the
	// guest init has loaded build/agentcg-replay.tar.
	ReplayImage = "agentcg/replay:latest"
	// ReplayTar is the replay image tarball, relative to the checkout.
	ReplayTar = "build/agentcg-replay.tar"
	// PauseImage is the CRI sandbox image imported into containerd's k8s.io namespace.
	PauseImage = "docker.io/agentcg/pause:1"
)

// Command runs name with args and returns its trimmed stdout. On failure the
// error carries the exit status and stderr.
func Command(ctx context.Context, name string, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	out := strings.TrimSpace(stdout.String())
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// ExitCode returns the exit status carried by an error from Command, or -1.
func ExitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// Run is Command that fails the test on error, with a 5 minute limit.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	out, err := Command(ctx, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// RequireReplayImage fails the test (it does not skip: in the guest a missing
// image is a build problem) unless docker and CRI both know ReplayImage.
func RequireReplayImage(t testing.TB) {
	t.Helper()
	ctx := t.Context()
	if _, err := Command(ctx, "docker", "image", "inspect", ReplayImage); err != nil {
		t.Fatalf("replay image not loaded (run `make image` so %s exists before `make vmtest`): %v", ReplayTar, err)
	}
	if _, err := Command(ctx, "crictl", "inspecti", ReplayImage); err != nil {
		t.Fatalf("replay image not imported into containerd's k8s.io namespace: %v", err)
	}
}

// NewCgroup creates the cgroup /sys/fs/cgroup/<name> (removing a stale one
// first), writes the given interface files in order (pairs of file, value),
// and removes it when the test ends, killing anything left inside.
// It returns the cgroup's directory.
func NewCgroup(t testing.TB, name string, files ...string) string {
	t.Helper()
	if len(files)%2 != 0 {
		t.Fatalf("NewCgroup(%s): files must be file, value pairs", name)
	}
	dir := filepath.Join(cgroup.Root, name)
	if err := RemoveCgroup(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("create cgroup: %v", err)
	}
	t.Cleanup(func() {
		if err := RemoveCgroup(dir); err != nil {
			t.Error(err)
		}
	})
	for i := 0; i < len(files); i += 2 {
		if err := cgroup.Write(dir, files[i], files[i+1]); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// RemoveCgroup kills every process under dir and removes it and its
// descendants. A missing dir is not an error.
func RemoveCgroup(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	_ = cgroup.Write(dir, "cgroup.kill", "1")
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	var err error
	for try := 0; try < 50; try++ {
		err = nil
		for i := len(dirs) - 1; i >= 0; i-- { // deepest first
			if e := os.Remove(dirs[i]); e != nil && !errors.Is(e, os.ErrNotExist) {
				err = e
			}
		}
		if err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond) // killed tasks take a moment to leave
	}
	return fmt.Errorf("remove cgroup %s: %w", dir, err)
}

// OOMKills returns the oom_kill count in dir's memory.events (hierarchical:
// it includes kills in descendants).
func OOMKills(t testing.TB, dir string) int64 {
	t.Helper()
	ev, err := cgroup.ReadKeyed(dir, "memory.events")
	if err != nil {
		t.Fatal(err)
	}
	n, ok := ev["oom_kill"]
	if !ok {
		t.Fatalf("%s/memory.events has no oom_kill", dir)
	}
	return n
}

// Interrupt stops a started command the way Ctrl-C would: SIGINT, then
// SIGKILL if it has not exited after grace. It waits for the exit.
func Interrupt(cmd *exec.Cmd, grace time.Duration) {
	cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		cmd.Process.Kill()
		<-done
	}
}
