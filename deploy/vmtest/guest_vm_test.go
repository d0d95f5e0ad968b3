//go:build vmtest || vmtest_systemd

// Package vmtest_test holds the install acceptance tests of deploy/: agentcg
// configure on stock containerd and Docker configs, agentcg doctor, the
// capabilities the plugin really needs, and the .deb. They run in the VM
// guest (make vmtest, or scripts/vm/vmtest.sh --no-selftest deploy/vmtest)
// and put the guest's config back when they finish.
package vmtest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentcg/agentcg/cgroup"
	"github.com/agentcg/agentcg/internal/vmtest"
)

// bin returns a host-built binary from bin/.
func bin(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(vmtest.Src(t), "bin", name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s missing: run `make build` before the VM tier: %v", p, err)
	}
	return p
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func waitFor(t *testing.T, what string, d time.Duration, ok func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := ok()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, d, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// restartDaemon stops the guest's daemon (containerd or dockerd) and starts
// it again the way vminit does, in /sys/fs/cgroup/daemons, appending to
// /run/<name>.log, then waits until its client answers.
// Under systemd (the systemd profile) it is `systemctl restart`.
func restartDaemon(t *testing.T, name string, client ...string) {
	t.Helper()
	if underSystemd() {
		unit := map[string]string{"containerd": "containerd.service", "dockerd": "docker.service"}[name]
		run(t, "systemctl", "restart", unit)
		waitFor(t, name+" answers", 120*time.Second, func() error {
			out, err := exec.Command(client[0], client[1:]...).CombinedOutput()
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		})
		return
	}
	if out, err := exec.Command("pidof", "-s", name).Output(); err == nil {
		pid, _ := strconv.Atoi(strings.TrimSpace(string(out)))
		if pid > 0 {
			syscall.Kill(pid, syscall.SIGTERM)
			waitFor(t, name+" exits", 60*time.Second, func() error {
				if syscall.Kill(pid, 0) == nil {
					return fmt.Errorf("pid %d alive", pid)
				}
				return nil
			})
		}
	}
	cmd := exec.Command("bash", "-c", fmt.Sprintf("echo $$ >/sys/fs/cgroup/daemons/cgroup.procs && exec %s >>/run/%s.log 2>&1", name, name))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go cmd.Wait()
	waitFor(t, name+" answers", 120*time.Second, func() error {
		out, err := exec.Command(client[0], client[1:]...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
}

func underSystemd() bool {
	_, err := os.Stat("/run/systemd/system")
	return err == nil
}

// swapFile replaces file with content and registers the restore (and a
// restart through restore) for the end of the test.
func swapFile(t *testing.T, file string, content []byte, restore func()) {
	t.Helper()
	old, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, content, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(file, old, 0o644); err != nil {
			t.Errorf("restore %s: %v", file, err)
		}
		// Backups configure wrote next to it.
		if m, _ := filepath.Glob(file + ".agentcg-backup-*"); len(m) > 0 {
			for _, f := range m {
				os.Remove(f)
			}
		}
		restore()
	})
}

// pins lists the pinned links under pinDir.
func pins(t *testing.T, pinDir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(pinDir, "links"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func pinFor(t *testing.T, pinDir, cgDir string) string {
	t.Helper()
	id, err := cgroup.ID(cgDir)
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(pinDir, "links", "cg-"+strconv.FormatUint(id, 10))
}

func writeJSON(t *testing.T, dir, name string, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func logTail(file string, n int) string {
	b, _ := os.ReadFile(file)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// startNRI runs agentcg-nri as an external plugin and waits until it has
// synchronised with containerd. It is stopped at the end of the test.
func startNRI(t *testing.T, args ...string) (logFile string) {
	t.Helper()
	logFile = filepath.Join(vmtest.ResultsDir(t), "agentcg-nri.log")
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Cleanup(func() { cancel(); cmd.Wait() })
	waitFor(t, "agentcg-nri synchronized", 90*time.Second, func() error {
		b, _ := os.ReadFile(logFile)
		if !strings.Contains(string(b), "synchronized") {
			return fmt.Errorf("log:\n%s", logTail(logFile, 10))
		}
		return nil
	})
	return logFile
}
