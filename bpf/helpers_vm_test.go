//go:build vmtest

package bpf

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/agentcg/agentcg/cgroup"
	"golang.org/x/sys/unix"
)

// Re-exec helpers: the test binary doubles as the workload, started
// directly inside a cgroup with CLONE_INTO_CGROUP.
const (
	envRole = "AGENTCG_BPF_TEST_ROLE" // "alloc" or "churn"
	envMB   = "AGENTCG_BPF_TEST_MB"
	envIter = "AGENTCG_BPF_TEST_ITER"
	envFile = "AGENTCG_BPF_TEST_FILE"
)

// growTopMB is how far above its resident MB the "grow" role climbs.
const growTopMB = 16

func TestMain(m *testing.M) {
	switch os.Getenv(envRole) {
	case "attach": // another process: Load + Attach, print attachResult
		os.Exit(attachRole())
	case "tmpfs": // write MB of incompressible data to the file envFile names
		mb, _ := strconv.Atoi(os.Getenv(envMB))
		if err := writeRandom(os.Getenv(envFile), mb); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		os.Exit(0)
	case "alloc": // touch MB once, then exit
		mb, _ := strconv.Atoi(os.Getenv(envMB))
		touch(mb, 1)
		os.Exit(0)
	case "churn": // touch and free MB, ITER times (0 = forever)
		mb, _ := strconv.Atoi(os.Getenv(envMB))
		it, _ := strconv.Atoi(os.Getenv(envIter))
		touch(mb, it)
		os.Exit(0)
	case "grow": // keep MB resident, then grow by 2 MiB every 50 ms up to
		// MB+growTopMB, free the extra and start again, forever: 16 MiB of
		// growth per 0.4 s (slower on a loaded host, still far above
		// GrowthSignal's default 8 MiB in 2 s).
		mb, _ := strconv.Atoi(os.Getenv(envMB))
		if _, err := mapTouch(mb); err != nil {
			os.Exit(3)
		}
		for {
			b, err := unix.Mmap(-1, 0, growTopMB<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
			if err != nil {
				os.Exit(3)
			}
			for off := 0; off < len(b); off += 2 << 20 {
				for i := off; i < off+2<<20; i += 4096 {
					b[i] = 1
				}
				time.Sleep(50 * time.Millisecond)
			}
			unix.Munmap(b)
		}
	case "hold": // keep MB resident and fault in 4 MiB every 20 ms, forever
		// (usage moves by 4 MiB: faults, but no growth by GrowthSignal)
		mb, _ := strconv.Atoi(os.Getenv(envMB))
		if _, err := mapTouch(mb); err != nil {
			os.Exit(3)
		}
		for {
			touch(4, 1)
			time.Sleep(20 * time.Millisecond) // steady, without hogging a vCPU
		}
	}
	os.Exit(m.Run())
}

// writeRandom writes mb MiB to path: a random MiB written over and over,
// each page stamped with its offset. zram compresses page by page and has no
// dedup, so every page stays incompressible (zero or repeated-byte pages
// would cost zram nothing).
func writeRandom(path string, mb int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{1}).Read(buf)
	for i := 0; i < mb; i++ {
		for pg := 0; pg < len(buf); pg += 4096 {
			binary.LittleEndian.PutUint64(buf[pg:], uint64(i<<20+pg))
		}
		if _, err := f.Write(buf); err != nil {
			f.Close()
			return fmt.Errorf("write %s at %d MiB: %w", path, i, err)
		}
	}
	return f.Close()
}

func mapTouch(mb int) ([]byte, error) {
	b, err := unix.Mmap(-1, 0, mb<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, err
	}
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	return b, nil
}

func touch(mb, iters int) {
	for i := 0; iters == 0 || i < iters; i++ {
		b, err := mapTouch(mb)
		if err != nil {
			os.Exit(3)
		}
		unix.Munmap(b)
	}
}

// cg makes a cgroup directory with the memory controller enabled in its
// parent, removed at the end of the test.
func cg(t testing.TB, path string) string {
	t.Helper()
	parent := filepath.Dir(path)
	if err := cgroup.Write(parent, "cgroup.subtree_control", "+memory"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o755); err != nil && !os.IsExist(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() { rmCgroup(path) })
	return path
}

// rmCgroup kills what runs in dir and removes it (and its children).
func rmCgroup(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.IsDir() {
			rmCgroup(filepath.Join(dir, e.Name()))
		}
	}
	os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0)
	for i := 0; i < 50; i++ {
		if err := os.Remove(dir); err == nil || os.IsNotExist(err) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// start runs this binary with role in cgroup dir.
func start(t testing.TB, dir, role string, mb, iters int, extraEnv ...string) *exec.Cmd {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = append(os.Environ(), envRole+"="+role, fmt.Sprintf("%s=%d", envMB, mb), fmt.Sprintf("%s=%d", envIter, iters))
	cmd.Env = append(cmd.Env, extraEnv...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s in %s: %v", role, dir, err)
	}
	return cmd
}

// timed runs role to completion in dir and returns its wall time.
func timed(t testing.TB, dir, role string, mb, iters int) time.Duration {
	t.Helper()
	t0 := time.Now()
	cmd := start(t, dir, role, mb, iters)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%s %d MiB in %s: %v", role, mb, dir, err)
	}
	return time.Since(t0)
}

func stop(cmd *exec.Cmd) {
	cmd.Process.Kill()
	cmd.Wait()
}
