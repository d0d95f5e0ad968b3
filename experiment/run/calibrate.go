package run

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/agentcg/agentcg/experiment/config"
	"github.com/agentcg/agentcg/experiment/results"
	"github.com/agentcg/agentcg/replayimage/replay"
	"github.com/agentcg/agentcg/replayimage/trace"
)

// NeedRate is the fastest growth HIGH's window asks for at scale 1 and
// the config's speed: each step's growth must be made resident before the
// next step is due. Bytes per wall second.
func NeedRate(cfg config.Config, tr *trace.Trace) (float64, error) {
	h := cfg.High()
	pts, err := tr.Schedule(h.Window)
	if err != nil {
		return 0, err
	}
	need := 0.0
	for i := 1; i+1 < len(pts); i++ {
		grow := pts[i].Bytes - pts[i-1].Bytes
		if dt := (pts[i+1].T - pts[i].T) / cfg.Speed; grow > 0 && dt > 0 {
			need = max(need, float64(grow)/dt)
		}
	}
	return need, nil
}

// ChooseScale is the largest scale, rounded down to two significant digits
// and at most 1, at which need × scale stays within safety × rate and the
// parent limit (limitUnscaled × scale) within half of memBytes.
func ChooseScale(rate, need, safety float64, limitUnscaled, memBytes int64) (scale, memCap float64) {
	scale = 1.0
	if need > 0 {
		scale = min(scale, safety*rate/need)
	}
	memCap = 1.0
	if limitUnscaled > 0 && memBytes > 0 {
		memCap = min(1, float64(memBytes)/2/float64(limitUnscaled))
	}
	scale = min(scale, memCap)
	if scale <= 0 {
		return 0, memCap
	}
	// Two significant digits, rounded down, as a decimal that prints short.
	digits := int(math.Floor(math.Log10(scale))) - 1
	e := math.Pow(10, float64(digits))
	v, _ := strconv.ParseFloat(strconv.FormatFloat(math.Floor(scale/e+1e-9)*e, 'f', max(0, -digits), 64), 64)
	return v, memCap
}

// MeasureFill runs `agentcg-replay rate` in procs processes at once (one
// per session: under TCG every vCPU runs on one host thread, and a page
// fault costs several times more when processes take turns than when one
// runs alone), each in a fresh cgroup beside the experiment's parent so the
// pages are charged as a session's are. It runs twice (the first warms up)
// and returns the slowest process of the second round.
func MeasureFill(ctx context.Context, replayBin string, t Tree, bytes int64, randomShare float64, procs int) (replay.RateResult, error) {
	var slowest replay.RateResult
	procs = max(1, procs)
	var dirs []string
	defer func() {
		for _, d := range dirs {
			os.Remove(d)
		}
	}()
	for i := range procs {
		d := filepath.Join(t.Root, fmt.Sprintf("%s-calibrate-%d", t.Parent, i))
		_ = os.Remove(d)
		if err := os.Mkdir(d, 0o755); err != nil {
			return slowest, fmt.Errorf("calibration cgroup: %w", err)
		}
		dirs = append(dirs, d)
	}
	for round := range 2 {
		res := make([]replay.RateResult, procs)
		errs := make([]error, procs)
		var wg sync.WaitGroup
		for i, d := range dirs {
			wg.Go(func() {
				res[i], errs[i] = runRate(ctx, replayBin, d, "--bytes", strconv.FormatInt(bytes, 10),
					"--random-share", strconv.FormatFloat(randomShare, 'g', -1, 64))
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return slowest, fmt.Errorf("round %d: %w", round, err)
		}
		slowest = res[0]
		for _, r := range res[1:] {
			if r.FillBytesPerS < slowest.FillBytesPerS {
				slowest = r
			}
		}
	}
	return slowest, nil
}

// runRate runs `agentcg-replay rate args…` inside the cgroup dir.
func runRate(ctx context.Context, replayBin, dir string, args ...string) (replay.RateResult, error) {
	var r replay.RateResult
	fd, err := os.Open(dir)
	if err != nil {
		return r, err
	}
	defer fd.Close()
	cmd := exec.CommandContext(ctx, replayBin, append([]string{"rate"}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(fd.Fd())}
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return r, fmt.Errorf("%s rate %s: %w: %s", replayBin, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	if err := json.Unmarshal([]byte(out.String()), &r); err != nil {
		return r, fmt.Errorf("%s rate: %w", replayBin, err)
	}
	return r, nil
}

// Calibrate measures the machine and picks the memory scale for cfg.
func Calibrate(ctx context.Context, cfg config.Config, replayBin string, t Tree, high *trace.Trace, limitUnscaled int64) (results.Calibration, error) {
	c := results.Calibration{Bytes: cfg.CalibrateBytes, RandomShare: cfg.RandomShare, Safety: cfg.CalibrateSafety}
	need, err := NeedRate(cfg, high)
	if err != nil {
		return c, err
	}
	c.NeedBytesPerS = need
	c.Processes = len(cfg.Sessions)
	r, err := MeasureFill(ctx, replayBin, t, cfg.CalibrateBytes, cfg.RandomShare, c.Processes)
	if err != nil {
		return c, err
	}
	c.FillBytesPerS = r.FillBytesPerS
	c.Scale, c.MemoryCapScale = ChooseScale(r.FillBytesPerS, need, cfg.CalibrateSafety, limitUnscaled, memTotal())
	c.Note = fmt.Sprintf("first-touch %.0f MB/s per process with %d filling at once and %.0f%% random page content; HIGH's fastest step needs %.0f MB/s at scale 1 and speed %g; scale %g keeps it within %.0f%% of the measured rate",
		r.FillBytesPerS/1e6, c.Processes, 100*cfg.RandomShare, need/1e6, cfg.Speed, c.Scale, 100*cfg.CalibrateSafety)
	if c.Scale <= 0 {
		return c, fmt.Errorf("calibration: no usable memory scale (%s)", c.Note)
	}
	return c, nil
}

func memTotal() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// loadAvg is /proc/loadavg's first three fields.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

// ContentFiles holds one clean file per session for the file regime, on a
// disk-backed filesystem (tmpfs pages would be swap-backed, not clean).
type ContentFiles struct {
	Dir   string
	Paths map[string]string // session → file
}

// PrepareFiles writes dir/<session>.dat of sizes[session] bytes each.
func PrepareFiles(dir string, sizes map[string]int64, randomShare float64) (*ContentFiles, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("scratch_dir: %w", err)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return nil, fmt.Errorf("scratch_dir %s: %w", dir, err)
	}
	if st.Type == 0x01021994 { // TMPFS_MAGIC
		return nil, fmt.Errorf("scratch_dir %s is tmpfs: the file regime needs a disk-backed filesystem (its pages must be clean page cache)", dir)
	}
	var content *replay.Content
	if randomShare > 0 {
		var err error
		if content, err = replay.NewContent(randomShare, os.Getpagesize(), 7); err != nil {
			return nil, err
		}
	}
	f := &ContentFiles{Dir: dir, Paths: map[string]string{}}
	for name, size := range sizes {
		p := filepath.Join(dir, name+".dat")
		if err := replay.WriteContentFile(p, size, content); err != nil {
			return nil, err
		}
		f.Paths[name] = p
	}
	return f, nil
}

// Drop evicts the files from the page cache before a run, so that no page
// is charged to an earlier run's (removed) cgroups.
func (f *ContentFiles) Drop() error {
	for _, p := range f.Paths {
		if err := replay.DropCache(p); err != nil {
			return err
		}
	}
	return nil
}

// Remove deletes the files.
func (f *ContentFiles) Remove() error {
	var errs []string
	for _, p := range f.Paths {
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("remove content files: %s", strings.Join(errs, "; "))
	}
	return nil
}

// waitFiles waits until every path exists or the deadline passes.
func waitFiles(ctx context.Context, paths []string, deadline time.Time) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		var missing []string
		for _, p := range paths {
			if _, err := os.Stat(p); err != nil {
				missing = append(missing, filepath.Base(p))
			}
		}
		if len(missing) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready by the deadline: %s", strings.Join(missing, ", "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// writeStart announces the start time to every replay.
func writeStart(path string, at time.Time) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.FormatFloat(float64(at.UnixNano())/1e9, 'f', 3, 64)), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
