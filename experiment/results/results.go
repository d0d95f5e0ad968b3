// Package results owns the on-disk layout of one experiment: the raw
// per-run and per-session JSON the orchestrator writes, and loading it back
// so that every table and figure can be regenerated from raw files alone.
//
// Layout of results/<id>/:
//
//	config.json, env.json
//	runs/<run>/run.json              one Run
//	runs/<run>/session-<name>.json   one Session per container
//	runs/<run>/timeseries.csv        100 ms samples of that run
//	toolcalls/<trace>.json           tool-call times (trace seconds) for figures
//	timeseries.csv, summary.csv, stats.csv, report.md, fig-*.png|svg  (derived)
package results

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/agentcg/agentcg/internal/jsonfile"
	"github.com/agentcg/agentcg/policy"
)

// Roles of a session.
const (
	RoleHigh = "high"
	RoleLow  = "low"
)

// ArmSolo is the baseline arm: HIGH alone, the normaliser T.
const ArmSolo = "Solo"

// Replay mirrors the replay result JSON (contract 1). It is decoded here
// rather than imported so the results format does not move with the
// workload's Go types.
type Replay struct {
	Complete     bool    `json:"complete"`
	CompletionS  float64 `json:"completion_s"`
	IdealS       float64 `json:"ideal_s"`
	LagS         float64 `json:"lag_s"`
	MaxStepLagS  float64 `json:"max_step_lag_s"` // optional: largest delay of one step behind schedule
	Slowdown     float64 `json:"slowdown"`
	Samples      int     `json:"samples"`
	PeakBytes    int64   `json:"peak_bytes"`
	TouchedBytes int64   `json:"touched_bytes"`
	AllocLatency struct {
		P50 float64 `json:"p50"`
		P95 float64 `json:"p95"`
		P99 float64 `json:"p99"`
		Max float64 `json:"max"`
	} `json:"alloc_latency_ms"`
	StartUnix float64   `json:"start_unix"`
	EndUnix   float64   `json:"end_unix"`
	StartedAt time.Time `json:"started_at"` // older replays: start_unix derives from it
	Trace     string    `json:"trace"`
	Speed     float64   `json:"speed"`
	MemScale  float64   `json:"mem_scale"`

	DelayS         float64 `json:"delay_s"`
	Stopped        bool    `json:"stopped"` // a looping session ended by the stop file
	PageSize       int     `json:"page_size"`
	Passes         int     `json:"passes"`
	PeakDueS       float64 `json:"peak_due_s"`
	PeakReachedS   float64 `json:"peak_reached_s"`
	PeakLatenessS  float64 `json:"peak_lateness_s"`
	BusyS          float64 `json:"busy_s"`
	FilePeakBytes  int64   `json:"file_peak_bytes"`
	RetouchedBytes int64   `json:"retouched_bytes"`
	RetouchS       float64 `json:"retouch_s"`
	RetouchMaxMs   float64 `json:"retouch_max_ms"`
}

// Pressure is the PSI totals of one resource, in microseconds.
type Pressure struct {
	SomeUs int64 `json:"some_total_us"`
	FullUs int64 `json:"full_total_us"`
}

// Cgroup is what the kernel says about one cgroup at the end of a run. The
// cgroups are created empty for every run, so each counter is the run's.
type Cgroup struct {
	Events     map[string]int64 `json:"memory_events"`   // low, high, max, oom, oom_kill, oom_group_kill
	Stat       map[string]int64 `json:"memory_stat"`     // the StatKeys counters
	Memory     Pressure         `json:"memory_pressure"` // stall totals
	CPU        Pressure         `json:"cpu_pressure"`
	CPUStat    map[string]int64 `json:"cpu_stat"` // usage_usec, user_usec, system_usec, nr_throttled, throttled_usec
	PeakBytes  int64            `json:"memory_peak"`
	SwapPeak   int64            `json:"memory_swap_peak"`
	MemoryLow  int64            `json:"memory_low"` // as set by the arm (-1 max)
	MemoryHigh int64            `json:"memory_high"`
	MemoryMax  int64            `json:"memory_max"`
	SwapMax    int64            `json:"memory_swap_max"`
	ReadErrors []string         `json:"read_errors,omitempty"`
}

// StatKeys are the memory.stat counters a run keeps: refaults and
// activations (working-set pressure), swap traffic, faults, reclaim.
var StatKeys = []string{"anon", "file", "shmem", "workingset_refault_anon", "workingset_refault_file", "workingset_activate_anon",
	"workingset_activate_file", "workingset_restore_anon", "workingset_restore_file", "pgfault", "pgmajfault", "pswpin", "pswpout",
	"pgscan", "pgsteal", "pgscan_direct", "pgsteal_direct", "pgscan_kswapd", "pgsteal_kswapd", "zswpout", "zswpin"}

// Session is everything measured about one container in one run.
type Session struct {
	Name  string `json:"name"` // unique in the run, e.g. high, low1
	Role  string `json:"role"`
	Trace string `json:"trace"`

	ContainerID string `json:"container_id"`
	CgroupPath  string `json:"cgroup_path"`
	CgroupID    uint64 `json:"cgroup_id"`
	MemoryMax   int64  `json:"memory_max"`  // -1 = max
	MemoryHigh  int64  `json:"memory_high"` // -1 = max; initial value

	ExitCode  int    `json:"exit_code"`
	Signal    int    `json:"signal"` // 9 when killed, from exit code 128+n
	OOMKilled bool   `json:"oom_killed"`
	OOMSource string `json:"oom_source,omitempty"` // memory.events oom_kill, runtime, exit 137
	// TimedOut: still running at the run's deadline (planned length plus
	// run_timeout_s) and stopped; it did not finish.
	TimedOut bool `json:"timed_out,omitempty"`

	Events    map[string]int64 `json:"memory_events_delta"` // high, max, oom, oom_kill
	PeakBytes int64            `json:"memory_peak"`
	// Kernel is the session cgroup's full record (events, stat, pressure,
	// CPU), read after the container exited.
	Kernel Cgroup `json:"kernel"`

	Replay   *Replay          `json:"replay,omitempty"` // nil when no result came back
	Counters *policy.Counters `json:"bpf_counters,omitempty"`

	// Active interval (Unix seconds): from the replay result, else from
	// the container's start and exit.
	ActiveStart float64 `json:"active_start_unix"`
	ActiveEnd   float64 `json:"active_end_unix"`
	// OverlapHighS is the overlap of this LOW session's active interval
	// with HIGH's contention window (seconds); 0 for HIGH.
	OverlapHighS float64 `json:"overlap_with_high_s"`
	// Window is what the session was asked to play.
	Window Window  `json:"window"`
	DelayS float64 `json:"delay_s"`
}

// Window mirrors the replay's trace window (trace seconds).
type Window struct {
	From   float64 `json:"from_s"`
	To     float64 `json:"to_s"`
	Loop   bool    `json:"loop"`
	Offset float64 `json:"offset_s"`
	Length float64 `json:"length_s"`
}

// Run is one execution of one arm.
type Run struct {
	ID       string            `json:"id"`
	Arm      string            `json:"arm"`     // Solo, Uncontended, Static, StaticPriority, NoLimit, HighOnly, BPF, BPFSeed
	Reclaim  string            `json:"reclaim"` // none, swap, file
	Label    string            `json:"label"`   // arm, regime when several, sweep point: "BPF swap gate=80"
	Params   map[string]string `json:"params,omitempty"`
	Index    int               `json:"index"`    // block (repetition of this label)
	Block    int               `json:"block"`    // block
	Position int               `json:"position"` // place in the block's seeded order
	Order    int               `json:"order"`    // position in the whole experiment
	// Offsets are the block's LOW window phases (trace seconds).
	Offsets map[string]float64 `json:"offsets_s,omitempty"`
	// The planned contention window (wall seconds from the barrier) and
	// the run's planned length.
	ContentionStartS float64 `json:"contention_start_s"`
	ContentionEndS   float64 `json:"contention_end_s"`
	PlannedS         float64 `json:"planned_s"`
	Speed            float64 `json:"speed"`
	MemScale         float64 `json:"mem_scale"`
	Runtime          string  `json:"runtime"`

	StartUnix float64 `json:"start_unix"`
	EndUnix   float64 `json:"end_unix"`

	ParentPath  string `json:"parent_path"`
	ParentLimit int64  `json:"parent_limit"` // -1: unlimited (Uncontended)
	// GateLimit is the limit the gate and utilisation are measured
	// against: the parent's, or for Uncontended the limit it would have had.
	GateLimit   int64   `json:"gate_limit"`
	ParentPeak  int64   `json:"parent_peak"`
	Utilisation float64 `json:"utilisation"` // time-weighted mean of memory.current / gate_limit over the run
	Parent      Cgroup  `json:"parent"`
	// Zram is the swap device's mm_stat change over the run (swap regime).
	Zram *Zram `json:"zram,omitempty"`
	// Timing: from the first container create to every replay ready, and
	// from the last exit to a clean machine; the guest's load average.
	SetupS    float64 `json:"setup_s"`
	TeardownS float64 `json:"teardown_s"`
	LoadAvg   string  `json:"loadavg"`
	// HighOnly: how often the monitor opened its gate, and its polls.
	Monitor *MonitorStats `json:"highonly,omitempty"`

	Sessions []string `json:"sessions"` // names; data in session-<name>.json

	Excluded      bool   `json:"excluded"`
	ExcludeReason string `json:"exclude_reason,omitempty"`
	Error         string `json:"error,omitempty"`
}

// Zram is a zram device's mm_stat fields (bytes) when it held the most of
// a run's pages (sampled every 250 ms), minus at the run's start.
type Zram struct {
	OrigBytes  int64   `json:"orig_data_size"`
	ComprBytes int64   `json:"compr_data_size"`
	UsedBytes  int64   `json:"mem_used_total"`
	SamePages  int64   `json:"same_pages"`
	Ratio      float64 `json:"ratio"` // orig / compr of the run's pages then
}

// MonitorStats is the HighOnly monitor's record of one run.
type MonitorStats struct {
	Polls       int     `json:"polls"`
	Tightenings int     `json:"tightenings"` // gate openings
	ActiveS     float64 `json:"active_s"`    // time LOW was held at its memory.high
}

// Sample is one row of a run's time series.
type Sample struct {
	Run       string
	Cgroup    string // session name or "parent"
	T         float64
	Current   int64
	Swap      int64 // memory.swap.current
	SomeAvg10 float64
	FullAvg10 float64
	SomeTotal int64 // µs
	FullTotal int64 // µs
}

// TimeseriesHeader is the header of every timeseries CSV.
const TimeseriesHeader = "run,cgroup,t_s,memory_current,swap_current,some_avg10,full_avg10,some_total_us,full_total_us"

// Row renders s as a CSV line without newline.
func (s Sample) Row() string {
	return fmt.Sprintf("%s,%s,%.3f,%d,%d,%.2f,%.2f,%d,%d", s.Run, s.Cgroup, s.T, s.Current, s.Swap, s.SomeAvg10, s.FullAvg10, s.SomeTotal, s.FullTotal)
}

// RunData is a loaded run with its sessions.
type RunData struct {
	Run      Run
	Sessions []Session
}

// Session returns the session named name, or nil.
func (r *RunData) Session(name string) *Session {
	for i := range r.Sessions {
		if r.Sessions[i].Name == name {
			return &r.Sessions[i]
		}
	}
	return nil
}

// ByRole returns the sessions with role, in name order.
func (r *RunData) ByRole(role string) []*Session {
	var out []*Session
	for i := range r.Sessions {
		if r.Sessions[i].Role == role {
			out = append(out, &r.Sessions[i])
		}
	}
	return out
}

// RunDir is the folder of one run.
func RunDir(dir, run string) string { return filepath.Join(dir, "runs", run) }

// WriteJSON writes v indented to path, through a temporary file so a
// crash never leaves half a record (resume trusts what it finds).
func WriteJSON(path string, v any) error { return jsonfile.Write(path, v) }

// ReadJSON decodes path into v.
func ReadJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}

// SaveRun writes run.json and every session file of one run. run.json is
// written last: its presence marks the run finished for --resume.
func SaveRun(dir string, rd RunData) error {
	rdir := RunDir(dir, rd.Run.ID)
	rd.Run.Sessions = rd.Run.Sessions[:0]
	for _, s := range rd.Sessions {
		if err := WriteJSON(filepath.Join(rdir, "session-"+s.Name+".json"), s); err != nil {
			return err
		}
		rd.Run.Sessions = append(rd.Run.Sessions, s.Name)
	}
	return WriteJSON(filepath.Join(rdir, "run.json"), rd.Run)
}

// Finished reports whether run id has a complete record in dir.
func Finished(dir, id string) bool {
	_, err := os.Stat(filepath.Join(RunDir(dir, id), "run.json"))
	return err == nil
}

// Load reads every finished run in dir, ordered by Order then ID.
func Load(dir string) ([]RunData, error) {
	ents, err := os.ReadDir(filepath.Join(dir, "runs"))
	if err != nil {
		return nil, fmt.Errorf("load results %s: %w", dir, err)
	}
	var out []RunData
	for _, e := range ents {
		if !e.IsDir() || !Finished(dir, e.Name()) {
			continue
		}
		var rd RunData
		rdir := RunDir(dir, e.Name())
		if err := ReadJSON(filepath.Join(rdir, "run.json"), &rd.Run); err != nil {
			return nil, err
		}
		for _, name := range rd.Run.Sessions {
			var s Session
			if err := ReadJSON(filepath.Join(rdir, "session-"+name+".json"), &s); err != nil {
				return nil, err
			}
			rd.Sessions = append(rd.Sessions, s)
		}
		out = append(out, rd)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Run.Order != out[j].Run.Order {
			return out[i].Run.Order < out[j].Run.Order
		}
		return out[i].Run.ID < out[j].Run.ID
	})
	return out, nil
}

// LoadTimeseries reads a run's timeseries.csv.
func LoadTimeseries(dir, run string) ([]Sample, error) {
	p := filepath.Join(RunDir(dir, run), "timeseries.csv")
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	var out []Sample
	for i, l := range lines {
		if i == 0 || l == "" {
			continue
		}
		var s Sample
		f := strings.Split(l, ",")
		if len(f) != 9 {
			return nil, fmt.Errorf("%s line %d: %d fields, want 9", p, i+1, len(f))
		}
		s.Run, s.Cgroup = f[0], f[1]
		if _, err := fmt.Sscan(strings.Join(f[2:], " "), &s.T, &s.Current, &s.Swap, &s.SomeAvg10, &s.FullAvg10, &s.SomeTotal, &s.FullTotal); err != nil {
			return nil, fmt.Errorf("%s line %d: %w", p, i+1, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// TraceInfo is what the report needs to know about a trace without it.
type TraceInfo struct {
	Trace     string  `json:"trace"`
	PeakBytes int64   `json:"peak_bytes"` // unscaled
	DurationS float64 `json:"duration_s"` // trace seconds
}

// ToolCalls are tool-call start times in trace seconds, kept per trace
// so figures can mark them without the trace files.
type ToolCalls struct {
	Trace string    `json:"trace"`
	Info  TraceInfo `json:"info"`
	T     []float64 `json:"t_s"`
	Tools []string  `json:"tools"`
}

// LoadToolCalls reads toolcalls/<trace>.json; a missing file is no error.
func LoadToolCalls(dir, trace string) (*ToolCalls, error) {
	var tc ToolCalls
	err := ReadJSON(filepath.Join(dir, "toolcalls", trace+".json"), &tc)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &tc, nil
}

// Failed is a run that could not be measured (for example the policy never
// attached). It is kept beside the runs so the report lists it; --resume
// tries it again because it has no run.json.
type Failed struct {
	ID    string `json:"id"`
	Label string `json:"label"`
	Error string `json:"error"`
}

// FailedFile is the name of a failed run's record.
const FailedFile = "failed.json"

// LoadFailed returns the failed runs of dir that never finished later.
func LoadFailed(dir string) ([]Failed, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "runs", "*", FailedFile))
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	var out []Failed
	for _, p := range paths {
		var f Failed
		if err := ReadJSON(p, &f); err != nil {
			return nil, err
		}
		if !Finished(dir, f.ID) {
			out = append(out, f)
		}
	}
	return out, nil
}
