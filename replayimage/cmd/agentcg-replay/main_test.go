package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentcg/agentcg/replayimage/replay"
	"github.com/agentcg/agentcg/replayimage/trace"
	"golang.org/x/sys/unix"
)

const asMainEnv = "AGENTCG_REPLAY_TEST_AS_MAIN"

// TestMain lets tests run this binary as agentcg-replay itself, so that a
// replay can be watched from outside its process.
func TestMain(m *testing.M) {
	if os.Getenv(asMainEnv) == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func command(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), asMainEnv+"=1")
	return cmd
}

const (
	designTraces = "../../traces"
	testTraces   = "../../trace/testdata"
)

func runInProcess(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

func TestCheckRealTraces(t *testing.T) {
	dirs, _ := filepath.Glob(designTraces + "/*/resources.json")
	more, _ := filepath.Glob(testTraces + "/*/resources.json")
	shared, _ := filepath.Glob("../../../../shared/traces/*/resources.json")
	dirs = append(append(dirs, more...), shared...)
	if len(dirs) < 6 {
		t.Fatalf("found only %d traces", len(dirs))
	}
	for _, f := range dirs {
		code, out, errOut := runInProcess("check", filepath.Dir(f))
		if code != 0 {
			t.Errorf("check %s: exit %d: %s", f, code, errOut)
			continue
		}
		var s trace.Summary
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			t.Fatalf("check %s: %v in %q", f, err, out)
		}
		if s.Samples == 0 || s.PeakBytes < s.MeanBytes || s.DurationS <= 0 || s.Dropped == nil {
			t.Errorf("check %s: implausible summary %+v", f, s)
		}
		if !strings.Contains(out, `"dropped"`) {
			t.Errorf("check %s: no dropped list", f)
		}
	}
}

func TestCheckDesignNumbers(t *testing.T) {
	code, out, errOut := runInProcess("check", designTraces+"/Medical_Bio_Hard")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var s trace.Summary
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatal(err)
	}
	if s.PeakBytes != 4_060_000_000 || s.Samples != 499 {
		t.Fatalf("Medical_Bio_Hard: peak %d samples %d, want 4060000000 and 499", s.PeakBytes, s.Samples)
	}

	code, out, errOut = runInProcess("check", testTraces+"/DevOps_Build_Easy/resources.json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatal(err)
	}
	if len(s.Dropped) != 47 {
		t.Fatalf("DevOps_Build_Easy: %d dropped, want 47", len(s.Dropped))
	}
	for i, d := range s.Dropped {
		if d.Index != 2049+i || d.Reason != trace.ReasonTrailingZero {
			t.Fatalf("dropped[%d] = %+v, want trailing zero sample %d", i, d, 2049+i)
		}
	}
}

func TestCheckMalformedExits2(t *testing.T) {
	good := `{"epoch":%d,"mem_usage":"1MB / 2GB","cpu_percent":"1%%"}`
	tests := []struct {
		name, body, want string
	}{
		{"unknown unit", `{"samples":[` + fmt.Sprintf(good, 1) + `,{"epoch":2,"mem_usage":"1.2QB / 2GB","cpu_percent":"1%"}]}`, "sample 1: mem_usage"},
		{"missing mem_usage", `{"samples":[` + fmt.Sprintf(good, 1) + `,{"epoch":2,"cpu_percent":"1%"}]}`, "sample 1: mem_usage"},
		{"non-increasing epoch", `{"samples":[` + fmt.Sprintf(good, 5) + `,` + fmt.Sprintf(good, 6) + `,` + fmt.Sprintf(good, 6) + `]}`, "sample 2: epoch"},
		{"truncated JSON", `{"samples":[` + fmt.Sprintf(good, 1) + `,{"epoch":2,"mem_us`, "sample 1: json"},
		{"empty samples", `{"samples":[]}`, "sample 0: samples"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "resources.json"), []byte(tt.body), 0o644); err != nil {
				t.Fatal(err)
			}
			code, out, errOut := runInProcess("check", dir)
			if code != 2 {
				t.Fatalf("exit %d, want 2 (stdout %q)", code, out)
			}
			if strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, tt.want) {
				t.Fatalf("stderr %q: want one line containing %q", errOut, tt.want)
			}
		})
	}
	if code, _, _ := runInProcess("check", filepath.Join(t.TempDir(), "nope")); code != 2 {
		t.Errorf("missing file: exit %d, want 2", code)
	}
}

var requiredFields = []string{"complete", "completion_s", "ideal_s", "lag_s", "slowdown", "samples",
	"peak_bytes", "touched_bytes", "alloc_latency_ms", "start_unix", "end_unix"}

func TestRunWritesResult(t *testing.T) {
	out := filepath.Join(t.TempDir(), "result.json")
	code, _, errOut := runInProcess("run", designTraces+"/CLI_Tools_Easy", "--unpaced", "--mem-scale", "0.1", "-q", "--out", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, f := range requiredFields {
		if _, ok := m[f]; !ok {
			t.Errorf("result lacks %q", f)
		}
	}
	lat, _ := m["alloc_latency_ms"].(map[string]any)
	for _, f := range []string{"p50", "p95", "p99", "max"} {
		if _, ok := lat[f]; !ok {
			t.Errorf("alloc_latency_ms lacks %q", f)
		}
	}
	if m["complete"] != true || m["samples"] != float64(83) {
		t.Errorf("complete %v samples %v", m["complete"], m["samples"])
	}
}

func TestRunBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"run", designTraces + "/CLI_Tools_Easy", "--speed", "0"},
		{"run", designTraces + "/CLI_Tools_Easy", "--unpaced", "--cpu"},
		{"run"},
		{"frobnicate"},
	} {
		if code, _, _ := runInProcess(args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}

// A SIGTERM mid-replay writes the partial result and exits 128+15.
func TestRunSIGTERMWritesPartial(t *testing.T) {
	dir := t.TempDir()
	out, steps := filepath.Join(dir, "result.json"), filepath.Join(dir, "steps.jsonl")
	cmd := command("run", designTraces+"/CLI_Tools_Easy", "--mem-scale", "0.05", "-q", "--out", out, "--step-log", steps)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// Wait until at least two steps are done (the second comes ~1.1 s in).
	for n := 0; n < 2; {
		select {
		case err := <-exited:
			t.Fatalf("replay exited before the signal: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		b, _ := os.ReadFile(steps)
		n = bytes.Count(b, []byte("\n"))
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := <-exited
	ee, ok := errors.AsType[*exec.ExitError](err)
	if !ok || ee.ExitCode() != 128+int(syscall.SIGTERM) {
		t.Fatalf("wait: %v, want exit %d", err, 128+int(syscall.SIGTERM))
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var res replay.Result
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if res.Complete || res.Samples < 2 || res.Samples >= res.SamplesTotal || res.Interrupted == "" {
		t.Fatalf("partial result: complete %v samples %d/%d interrupted %q", res.Complete, res.Samples, res.SamplesTotal, res.Interrupted)
	}
	if !strings.Contains(string(b), `"complete": false`) {
		t.Fatalf("result does not say \"complete\": false")
	}
}

var vmRSS = regexp.MustCompile(`(?m)^VmRSS:\s+(\d+) kB$`)

type rssSample struct {
	before, after int64 // CLOCK_MONOTONIC ns around the read
	bytes         int64
}

func monoNow() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// Watched from outside, a paced run's VmRSS tracks each step's target within
// max(2%, 4 MiB) once that step's allocation has finished.
func TestRunTracksTargetFromOutside(t *testing.T) {
	dir := t.TempDir()
	steps := filepath.Join(dir, "steps.jsonl")
	// Medical_Bio_Hard's 4.06 GB spike at 5% is a 203 MB step; 50x speed
	// makes the replay ~11 s.
	cmd := command("run", designTraces+"/Medical_Bio_Hard", "--speed", "50", "--mem-scale", "0.05", "-q",
		"--out", filepath.Join(dir, "result.json"), "--step-log", steps)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	status := fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var samples []rssSample
	buf := make([]byte, 4096)
	for waiting := true; waiting; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("replay: %v", err)
			}
			waiting = false
			continue
		default:
		}
		before := monoNow()
		f, err := os.Open(status)
		if err != nil {
			continue // exiting
		}
		n, _ := f.Read(buf)
		f.Close()
		after := monoNow()
		if m := vmRSS.FindSubmatch(buf[:n]); m != nil {
			kb, _ := strconv.ParseInt(string(m[1]), 10, 64)
			samples = append(samples, rssSample{before, after, kb * 1024})
		}
		time.Sleep(2 * time.Millisecond)
	}

	f, err := os.Open(steps)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var log []replay.Step
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var s replay.Step
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			t.Fatal(err)
		}
		log = append(log, s)
	}
	if len(log) != 499 {
		t.Fatalf("%d steps logged, want 499", len(log))
	}
	// The process's own memory: the last sample before the arena is
	// touched or, if the child got there before our first read, the first
	// sample settled on step 0 minus that step's target.
	var base int64 = -1
	for _, s := range samples {
		if s.after < log[0].StartMonoNs {
			base = s.bytes
		}
	}
	if base < 0 {
		for _, s := range samples {
			if s.before >= log[0].DoneMonoNs && s.after <= log[1].StartMonoNs {
				base = s.bytes - log[0].TargetBytes
				break
			}
		}
	}
	if base < 0 {
		t.Fatal("no VmRSS sample before the first step or settled on it")
	}
	tolFor := func(target int64) float64 { return max(0.02*float64(target), 4<<20) }
	checked, bounded, stepsSeen := 0, 0, map[int]bool{}
	var worst float64
	spikeSeen, spikeWindow := false, false
	const spike = 100e6 // scaled bytes; the trace's GB-scale burst
	for k := 0; k+1 < len(log); k++ {
		if log[k].TargetBytes > spike && log[k+1].StartMonoNs-log[k].DoneMonoNs >= int64(5*time.Millisecond) {
			spikeWindow = true
		}
	}
	j := 0
	for _, s := range samples {
		if s.after < log[0].StartMonoNs {
			continue
		}
		// j: the last step that had started when this read began.
		for j+1 < len(log) && log[j+1].StartMonoNs <= s.before {
			j++
		}
		st := log[j]
		got := s.bytes - base
		// The last step has no successor to bound it: the arena is unmapped
		// when the replay returns, at a time the log does not hold.
		settled := j+1 < len(log) && st.DoneMonoNs <= s.before && log[j+1].StartMonoNs >= s.after
		if !settled {
			// Mid-resize: residency lies between the targets of the steps
			// in flight, never beyond them (no chunk overshoot).
			lo, hi := st.TargetBytes, st.TargetBytes
			if j > 0 {
				lo, hi = min(lo, log[j-1].TargetBytes), max(hi, log[j-1].TargetBytes)
			}
			for k := j + 1; k < len(log) && log[k].StartMonoNs < s.after; k++ {
				lo, hi = min(lo, log[k].TargetBytes), max(hi, log[k].TargetBytes)
			}
			if j+1 < len(log) && float64(got) > float64(hi)+tolFor(hi) {
				t.Fatalf("during step %d (sample %d): VmRSS-base %d B above every target in flight (max %d B)", j, st.Index, got, hi)
			}
			if j+1 < len(log) && float64(got) < float64(lo)-tolFor(lo) {
				t.Fatalf("during step %d (sample %d): VmRSS-base %d B below every target in flight (min %d B)", j, st.Index, got, lo)
			}
			bounded++
			continue
		}
		dev := float64(got - st.TargetBytes)
		if tol := tolFor(st.TargetBytes); dev > tol || -dev > tol {
			t.Fatalf("step %d (sample %d, t=%.1fs): VmRSS-base %d B, target %d B: off by %.1f MiB > %.1f MiB",
				j, st.Index, st.TS, got, st.TargetBytes, dev/(1<<20), tol/(1<<20))
		}
		worst = max(worst, abs(dev)/(1<<20))
		checked++
		stepsSeen[j] = true
		spikeSeen = spikeSeen || st.TargetBytes > spike
	}
	t.Logf("%d VmRSS samples: %d settled (checked within max(2%%, 4 MiB)), %d mid-resize (checked against the targets in flight); "+
		"%d of %d steps observed settled; base %.1f MiB; worst settled deviation %.2f MiB; spike observed settled: %v",
		len(samples), checked, bounded, len(stepsSeen), len(log), float64(base)/(1<<20), worst, spikeSeen)
	if len(stepsSeen) < len(log)/2 {
		t.Fatalf("observed only %d of %d steps after their allocation; sampling too sparse to judge", len(stepsSeen), len(log))
	}
	// On a loaded machine the burst's steps can run late back to back and
	// leave no settled window to observe; when one had a window, we must
	// have seen it.
	if spikeWindow && !spikeSeen {
		t.Fatal("a step of the burst (target > 100 MB) had a settled window of >= 5 ms but was never observed in it")
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

// The barrier: step 0 must not begin before --start-at, and "--out -" is stdout.
func TestRunStartAtBarrier(t *testing.T) {
	at := float64(time.Now().Add(300*time.Millisecond).UnixNano()) / 1e9
	code, stdout, errOut := runInProcess("run", designTraces+"/CLI_Tools_Easy", "--unpaced", "--mem-scale", "0.01", "-q",
		"--start-at", strconv.FormatFloat(at, 'f', 6, 64), "--out", "-")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var res struct {
		StartUnix float64 `json:"start_unix"`
		EndUnix   float64 `json:"end_unix"`
	}
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("stdout is not the result JSON: %v\n%s", err, stdout)
	}
	if res.StartUnix < at {
		t.Errorf("start_unix %.6f is before the barrier %.6f", res.StartUnix, at)
	}
	if res.EndUnix < res.StartUnix {
		t.Errorf("end_unix %.6f before start_unix %.6f", res.EndUnix, res.StartUnix)
	}
}
