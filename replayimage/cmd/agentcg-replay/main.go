// Command agentcg-replay checks agent resource traces and replays them as
// page-exact memory pressure. It is the replay image's entrypoint.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/agentcg/agentcg/internal/version"
	"github.com/agentcg/agentcg/replayimage/replay"
	"github.com/agentcg/agentcg/replayimage/trace"
	"github.com/spf13/cobra"
)

// Exit codes.
const (
	exitOK      = 0
	exitFail    = 1 // the replay itself failed
	exitInvalid = 2 // bad trace or bad usage
)

// exitError carries the exit code out of a cobra command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "agentcg-replay: %v\n", err)
	if ee, ok := errors.AsType[*exitError](err); ok {
		return ee.code
	}
	return exitInvalid // cobra usage errors
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "agentcg-replay",
		Short:         "Check and replay AI-agent memory traces (podman-stats resources.json)",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(newCheck(stdout), newRun(stdout, stderr), newBench(stdout), newRate(stdout))
	return root
}

type traceFlags struct{ edgeBytes int64 }

func (f *traceFlags) register(c *cobra.Command) {
	c.Flags().Int64Var(&f.edgeBytes, "edge-bytes", trace.DefaultOptions().EdgeBytes,
		"trim leading/trailing samples below this many bytes (container start/stop); 0 keeps them")
}

func (f *traceFlags) load(path string) (*trace.Trace, error) {
	tr, err := trace.Load(path, trace.Options{EdgeBytes: f.edgeBytes})
	if err != nil {
		return nil, &exitError{exitInvalid, err}
	}
	return tr, nil
}

func newCheck(stdout io.Writer) *cobra.Command {
	var tf traceFlags
	c := &cobra.Command{
		Use:   "check TRACE",
		Short: "Validate a trace (resources.json or its folder) and print its summary as JSON",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tr, err := tf.load(args[0])
			if err != nil {
				return err
			}
			return writeJSON(stdout, tr.Summarize())
		},
	}
	tf.register(c)
	return c
}

func newRun(stdout, stderr io.Writer) *cobra.Command {
	var (
		tf           traceFlags
		opt          replay.Options
		out, stepLog string
		quiet        bool
		startAt      float64
		window       string
		duration     float64
		delay        float64
	)
	c := &cobra.Command{
		Use:   "run TRACE",
		Short: "Replay a trace's memory (and optionally CPU) and write a result JSON",
		Long: "Replays the trace in one mmap arena, page-exact. SIGTERM or SIGINT stop the replay and\n" +
			"write the partial result with \"complete\": false; the exit code is then 128+signal.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tr, err := tf.load(args[0])
			if err != nil {
				return err
			}
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			sigs := make(chan os.Signal, 1)
			signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
			defer signal.Stop(sigs)
			var got os.Signal
			go func() {
				select {
				case got = <-sigs:
					cancel()
				case <-ctx.Done():
				}
			}()

			if startAt > 0 {
				opt.StartAt = time.Unix(0, int64(startAt*1e9))
			}
			if window != "" {
				from, to, ok := strings.Cut(window, ":")
				var err1, err2 error
				opt.Window.From, err1 = strconv.ParseFloat(from, 64)
				opt.Window.To, err2 = strconv.ParseFloat(to, 64)
				if !ok || err1 != nil || err2 != nil {
					return &exitError{exitInvalid, fmt.Errorf("window %q: want FROM:TO in trace seconds", window)}
				}
			}
			if duration < 0 || delay < 0 {
				return &exitError{exitInvalid, fmt.Errorf("duration %v and delay %v must be ≥ 0", duration, delay)}
			}
			opt.Window.Length = duration * opt.Speed
			opt.Delay = time.Duration(delay * float64(time.Second))
			if _, err := opt.Window.Resolve(tr); err != nil {
				return &exitError{exitInvalid, err}
			}
			if stepLog != "" {
				f, err := os.Create(stepLog)
				if err != nil {
					return &exitError{exitFail, err}
				}
				defer f.Close()
				opt.StepLog = f
			}
			if !quiet {
				bar := newProgress(stderr, tr)
				opt.Progress = bar.update
				defer bar.finish()
			}
			res, runErr := replay.Run(ctx, tr, opt)
			if res == nil {
				return &exitError{exitInvalid, runErr}
			}
			res.Version = version.Version
			if err := writeResult(stdout, out, res); err != nil {
				return &exitError{exitFail, err}
			}
			cancel()
			switch {
			case runErr != nil:
				return &exitError{exitFail, runErr}
			case !res.Complete:
				code := exitFail
				if s, ok := got.(syscall.Signal); ok {
					code = 128 + int(s)
				}
				return &exitError{code, fmt.Errorf("interrupted after %d of %d samples (%v); partial result written", res.Samples, res.SamplesTotal, got)}
			}
			return nil
		},
	}
	tf.register(c)
	f := c.Flags()
	f.Float64Var(&opt.Speed, "speed", 1, "time scale: trace seconds per wall second")
	f.Float64Var(&opt.MemScale, "mem-scale", 1, "memory scale applied to every target (scale the cgroup limits with it)")
	f.BoolVar(&opt.Unpaced, "unpaced", false, "run steps back to back (measures throttling directly)")
	f.BoolVar(&opt.CPU, "cpu", false, "also replay the derived per-interval CPU as a duty cycle")
	f.Float64Var(&opt.MaxCPU, "max-cpu", 0, "cap for --cpu in percent (default 100 × CPUs)")
	f.BoolVar(&opt.Touch, "touch", false, "fault pages by writing one byte each instead of MADV_POPULATE_WRITE")
	f.StringVar(&out, "out", "", "write the result JSON here (default or \"-\": stdout)")
	f.Float64Var(&startAt, "start-at", 0, "wait until this Unix time (seconds) before step 0: a barrier for sessions started apart")
	f.StringVar(&stepLog, "step-log", "", "write one JSON line per step here (CLOCK_MONOTONIC times)")
	f.StringVar(&opt.StartFile, "start-file", "", "poll this file until it holds the Unix start time (seconds): a barrier decided once every session is ready")
	f.StringVar(&opt.ReadyFile, "ready-file", "", "create this file when ready to start (before waiting for the barrier)")
	f.StringVar(&opt.StopFile, "stop-file", "", "end the replay, complete, once this file exists (checked every step and every 200 ms)")
	f.Float64Var(&delay, "delay", 0, "start step 0 this many wall seconds after the start (barrier)")
	f.StringVar(&window, "window", "", "replay only FROM:TO of the trace (trace seconds)")
	f.BoolVar(&opt.Window.Loop, "loop", false, "repeat the window until --duration")
	f.Float64Var(&opt.Window.Offset, "offset", 0, "begin this many trace seconds into the window (its phase)")
	f.Float64Var(&duration, "duration", 0, "play this many wall seconds (required with --loop; default: the window once)")
	f.Float64Var(&opt.RandomShare, "random-share", 0, "write this share of each page with random bytes, the rest zero (sets zram compressibility); 0 populates zero pages")
	f.Uint64Var(&opt.Seed, "seed", 1, "seed of the random page content")
	f.StringVar(&opt.FilePath, "file", "", "file whose pages hold the --file-share part of the memory (clean page cache)")
	f.Float64Var(&opt.FileShare, "file-share", 0, "share of each target held as page cache of --file")
	f.Float64Var(&opt.RetouchPerS, "retouch", 0, "re-read this share of the resident pages per second (working set; paced mode)")
	f.BoolVarP(&quiet, "quiet", "q", false, "no progress line on stderr")
	return c
}

// progress prints one status line on stderr at most once per second, plus a
// last one at the end. Plain lines rather than a redrawn bar, because the
// usual reader is a container log.
type progress struct {
	w     io.Writer
	name  string
	last  time.Time
	final replay.Status
}

func newProgress(w io.Writer, tr *trace.Trace) *progress { return &progress{w: w, name: tr.Name} }

func (p *progress) update(s replay.Status) {
	p.final = s
	if now := time.Now(); now.Sub(p.last) >= time.Second {
		p.last = now
		p.print(s)
	}
}

func (p *progress) print(s replay.Status) {
	fmt.Fprintf(p.w, "%s: step %d/%d t=%.1fs target %.1f MB resident %.1f MB lag %.2fs\n",
		p.name, s.Step, s.Steps, s.Elapsed.Seconds(), float64(s.TargetBytes)/1e6, float64(s.ResidentBytes)/1e6, s.Lag.Seconds())
}

func (p *progress) finish() {
	if p.final.Step > 0 {
		p.print(p.final)
	}
}

// writeResult writes to a temporary file and renames it, so that a reader
// (or a SIGKILL mid-write) never sees half a result.
func writeResult(stdout io.Writer, path string, res *replay.Result) error {
	if path == "" || path == "-" {
		return writeJSON(stdout, res)
	}
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := writeJSON(f, res); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("%s: %w", tmp, err)
	}
	return os.Rename(tmp, path)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
