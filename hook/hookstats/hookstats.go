// Package hookstats owns the OCI hook's outcome counters. Each hook process
// is short-lived, so the counters live in a file in the Prometheus text
// format (node_exporter's textfile collector reads it as it is). No hook
// ever waits for another to be counted: each run drops its event as a
// small file of its own, and whichever run gets the folder's lock (a
// bounded wait) folds the pending events into the counter file and
// replaces it atomically. `agentcg status` reads the file plus any events
// still pending, without a lock.
package hookstats

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/agentcg/agentcg/internal/dirlock"
	"github.com/agentcg/agentcg/internal/jsonfile"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metric names in the file.
const (
	RunsName          = "agentcg_hook_runs_total"
	WithoutPolicyName = "agentcg_hook_without_policy_total"
	RefusedName       = "agentcg_hook_refused_total"
	DurationName      = "agentcg_hook_duration_seconds"
)

// DefaultPath is the counter file of the default config (hook.prom in
// the parent of the default state_dir).
const DefaultPath = "/run/agentcg/hook.prom"

// DurationBuckets are the upper bounds (seconds) of the duration histogram:
// from a reused-object attach (milliseconds) to a BPF load under emulation.
var DurationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// Event is one hook run.
type Event struct {
	Stage   string `json:"stage"`   // createRuntime or poststop
	Outcome string `json:"outcome"` // enroll's outcome: attached, skipped, rejected, failed, detached
	Reason  string `json:"reason"`  // enroll's reason ("" when none)
	// WithoutPolicy: the container asked for a priority and runs without
	// it (fail_mode open). Refused: the runtime was told to refuse it.
	WithoutPolicy bool          `json:"without_policy"`
	Refused       bool          `json:"refused"`
	Duration      time.Duration `json:"duration_ns"`
}

// Key labels one runs counter.
type Key struct{ Stage, Outcome, Reason string }

// Histogram is a duration histogram: Buckets[i] counts the runs that took
// at most DurationBuckets[i] (cumulative, as Prometheus has it).
type Histogram struct {
	Count   uint64    `json:"count"`
	Sum     float64   `json:"sum_seconds"`
	Buckets []uint64  `json:"buckets"`
	Bounds  []float64 `json:"bounds_seconds"`
}

// Counts is the whole file.
type Counts struct {
	Runs          map[Key]uint64        `json:"-"`
	WithoutPolicy map[string]uint64     `json:"without_policy"` // by reason
	Refused       map[string]uint64     `json:"refused"`        // by reason
	Duration      map[string]*Histogram `json:"duration"`       // by stage
}

func newCounts() Counts {
	return Counts{Runs: map[Key]uint64{}, WithoutPolicy: map[string]uint64{}, Refused: map[string]uint64{}, Duration: map[string]*Histogram{}}
}

// Add counts one event.
func (c *Counts) Add(e Event) {
	c.Runs[Key{e.Stage, e.Outcome, e.Reason}]++
	if e.WithoutPolicy {
		c.WithoutPolicy[e.Reason]++
	}
	if e.Refused {
		c.Refused[e.Reason]++
	}
	h := c.Duration[e.Stage]
	if h == nil {
		h = &Histogram{Buckets: make([]uint64, len(DurationBuckets)), Bounds: DurationBuckets}
		c.Duration[e.Stage] = h
	}
	s := e.Duration.Seconds()
	h.Count++
	h.Sum += s
	for i, b := range DurationBuckets {
		if s <= b {
			h.Buckets[i]++
		}
	}
}

// Run is one runs counter, for JSON.
type Run struct {
	Stage   string `json:"stage"`
	Outcome string `json:"outcome"`
	Reason  string `json:"reason,omitempty"`
	Count   uint64 `json:"count"`
}

// RunList returns the runs counters sorted by stage, outcome and reason.
func (c Counts) RunList() []Run {
	out := make([]Run, 0, len(c.Runs))
	for k, n := range c.Runs {
		out = append(out, Run{k.Stage, k.Outcome, k.Reason, n})
	}
	slices.SortFunc(out, func(a, b Run) int {
		return strings.Compare(a.Stage+"\x00"+a.Outcome+"\x00"+a.Reason, b.Stage+"\x00"+b.Outcome+"\x00"+b.Reason)
	})
	return out
}

// Total returns the number of runs of stage with outcome (any reason).
func (c Counts) Total(stage, outcome string) uint64 {
	var n uint64
	for k, v := range c.Runs {
		if k.Stage == stage && k.Outcome == outcome {
			n += v
		}
	}
	return n
}

// Sum returns the sum of a by-reason map.
func Sum(m map[string]uint64) uint64 {
	var n uint64
	for _, v := range m {
		n += v
	}
	return n
}

// LockFunc takes the exclusive lock of a folder within ctx's deadline and
// returns its release.
type LockFunc func(ctx context.Context, dir string) (unlock func(), err error)

// EventsDir is the folder of pending events beside the counter file at path
// (a dot folder: node_exporter reads only *.prom files).
func EventsDir(path string) string {
	return filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".events")
}

// foldedPrefix starts the comment line that names the events the last
// fold counted: if the folder crashed before deleting them, the next fold
// deletes them without counting them twice. Prometheus parsers ignore it.
const foldedPrefix = "# agentcg_folded_events "

// Record adds e to the counters of the file at path: AddEvent, then Fold.
func Record(ctx context.Context, path string, lock LockFunc, e Event) error {
	if err := AddEvent(path, e); err != nil {
		return err
	}
	return Fold(ctx, path, lock)
}

// AddEvent writes e as a pending event beside the file at path: one small
// file of its own, atomically, with no lock. Read counts it from then on.
func AddEvent(path string, e Event) error {
	dir := EventsDir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("hook counters %s: %w", path, err)
	}
	name := fmt.Sprintf("%d-%d-%08x.json", time.Now().UnixNano(), os.Getpid(), rand.Uint32())
	if err := jsonfile.Write(filepath.Join(dir, name), e); err != nil {
		return fmt.Errorf("hook counters %s: %w", path, err)
	}
	return nil
}

// Fold tries, within ctx, to take the folder's lock (nil lock:
// dirlock.LockContext) and fold every pending event into the file at path.
// When the lock is busy the events stay pending for a later fold; that is
// not an error. A counter file that does not parse is started anew (a
// counter reset, which Prometheus handles), and the error says so.
func Fold(ctx context.Context, path string, lock LockFunc) error {
	if lock == nil {
		lock = dirlock.LockContext
	}
	unlock, err := lock(ctx, filepath.Dir(path))
	if err != nil {
		return nil // pending: folded by a later run
	}
	defer unlock()
	return fold(path)
}

// fold counts the pending events into the file at path; the caller holds
// the lock.
func fold(path string) error {
	c, folded, rerr := readFile(path)
	if rerr != nil {
		c, folded = newCounts(), nil
	}
	events, names, err := pending(path)
	if err != nil {
		return fmt.Errorf("hook counters %s: %w", path, err)
	}
	var counted []string
	for i, e := range events {
		if slices.Contains(folded, names[i]) {
			continue // counted by a fold that stopped before deleting it
		}
		c.Add(e)
		counted = append(counted, names[i])
	}
	var buf bytes.Buffer
	if err := c.Write(&buf); err != nil {
		return fmt.Errorf("hook counters %s: %w", path, err)
	}
	if len(counted) > 0 {
		buf.WriteString(foldedPrefix + strings.Join(counted, " ") + "\n")
	}
	if err := writeAtomic(path, buf.Bytes()); err != nil {
		return err
	}
	for _, n := range names {
		os.Remove(filepath.Join(EventsDir(path), n))
	}
	if rerr != nil {
		return fmt.Errorf("hook counters %s: unreadable, started anew: %w", path, rerr)
	}
	return nil
}

// pending returns the events waiting beside the file at path, oldest
// first, with their file names. A half-written or foreign file is skipped.
func pending(path string) ([]Event, []string, error) {
	ents, err := os.ReadDir(EventsDir(path))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	var events []Event
	var names []string
	for _, d := range ents {
		n := d.Name()
		if strings.HasPrefix(n, ".") || !strings.HasSuffix(n, ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(EventsDir(path), n))
		if err != nil {
			continue // folded and removed meanwhile
		}
		var e Event
		if json.Unmarshal(b, &e) != nil {
			continue
		}
		events, names = append(events, e), append(names, n)
	}
	return events, names, nil
}

// Read returns the counters of the file at path plus the events still
// pending; a missing file is all zeros.
func Read(path string) (Counts, error) {
	c, folded, err := readFile(path)
	if err != nil {
		return c, err
	}
	events, names, perr := pending(path)
	for i, e := range events {
		if !slices.Contains(folded, names[i]) {
			c.Add(e)
		}
	}
	if perr != nil {
		return c, fmt.Errorf("hook counters %s: pending events: %w", path, perr)
	}
	return c, nil
}

// readFile parses the counter file and the names of the events its last
// fold counted.
func readFile(path string) (Counts, []string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return newCounts(), nil, nil
	}
	if err != nil {
		return newCounts(), nil, fmt.Errorf("hook counters: %w", err)
	}
	var folded []string
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, foldedPrefix); ok {
			folded = strings.Fields(rest)
		}
	}
	c, err := Parse(bytes.NewReader(b))
	if err != nil {
		return c, nil, fmt.Errorf("hook counters %s: %w", path, err)
	}
	return c, folded, nil
}

// Parse reads counters in the text format Write produces. Families it does
// not know are ignored.
func Parse(r io.Reader) (Counts, error) {
	c := newCounts()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return c, err
	}
	label := func(pairs []*dto.LabelPair, name string) string {
		for _, l := range pairs {
			if l.GetName() == name {
				return l.GetValue()
			}
		}
		return ""
	}
	count := func(v float64) (uint64, error) {
		if v < 0 || v > math.MaxUint64 || v != math.Trunc(v) {
			return 0, fmt.Errorf("counter value %v is not a count", v)
		}
		return uint64(v), nil
	}
	if f := fams[RunsName]; f != nil {
		for _, m := range f.GetMetric() {
			n, err := count(m.GetCounter().GetValue())
			if err != nil {
				return newCounts(), fmt.Errorf("%s: %w", RunsName, err)
			}
			c.Runs[Key{label(m.GetLabel(), "stage"), label(m.GetLabel(), "outcome"), label(m.GetLabel(), "reason")}] += n
		}
	}
	for name, dst := range map[string]map[string]uint64{WithoutPolicyName: c.WithoutPolicy, RefusedName: c.Refused} {
		if f := fams[name]; f != nil {
			for _, m := range f.GetMetric() {
				n, err := count(m.GetCounter().GetValue())
				if err != nil {
					return newCounts(), fmt.Errorf("%s: %w", name, err)
				}
				dst[label(m.GetLabel(), "reason")] += n
			}
		}
	}
	if f := fams[DurationName]; f != nil {
		for _, m := range f.GetMetric() {
			hm := m.GetHistogram()
			h := &Histogram{Count: hm.GetSampleCount(), Sum: hm.GetSampleSum(), Buckets: make([]uint64, len(DurationBuckets)), Bounds: DurationBuckets}
			for _, b := range hm.GetBucket() {
				if i := slices.Index(DurationBuckets, b.GetUpperBound()); i >= 0 {
					h.Buckets[i] = b.GetCumulativeCount()
				}
			}
			c.Duration[label(m.GetLabel(), "stage")] = h
		}
	}
	return c, nil
}

// Write renders c in the Prometheus text format, sorted, so that equal
// counts give equal files.
func (c Counts) Write(w io.Writer) error {
	var b strings.Builder
	b.WriteString("# HELP " + RunsName + " OCI hook runs by stage, outcome and reason.\n# TYPE " + RunsName + " counter\n")
	keys := make([]Key, 0, len(c.Runs))
	for k := range c.Runs {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b Key) int {
		return strings.Compare(a.Stage+"\x00"+a.Outcome+"\x00"+a.Reason, b.Stage+"\x00"+b.Outcome+"\x00"+b.Reason)
	})
	for _, k := range keys {
		fmt.Fprintf(&b, "%s{stage=%s,outcome=%s,reason=%s} %d\n", RunsName, quote(k.Stage), quote(k.Outcome), quote(k.Reason), c.Runs[k])
	}
	for _, m := range []struct {
		name, help string
		v          map[string]uint64
	}{
		{WithoutPolicyName, "Containers that asked for a priority and run without it (fail_mode open), by reason.", c.WithoutPolicy},
		{RefusedName, "Containers the hook told the runtime to refuse, by reason.", c.Refused},
	} {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s counter\n", m.name, m.help, m.name)
		for _, r := range sortedKeys(m.v) {
			fmt.Fprintf(&b, "%s{reason=%s} %d\n", m.name, quote(r), m.v[r])
		}
	}
	b.WriteString("# HELP " + DurationName + " OCI hook run time by stage.\n# TYPE " + DurationName + " histogram\n")
	for _, stage := range sortedKeys(c.Duration) {
		h := c.Duration[stage]
		for i, ub := range DurationBuckets {
			var n uint64
			if i < len(h.Buckets) {
				n = h.Buckets[i]
			}
			fmt.Fprintf(&b, "%s_bucket{stage=%s,le=\"%s\"} %d\n", DurationName, quote(stage), strconv.FormatFloat(ub, 'g', -1, 64), n)
		}
		fmt.Fprintf(&b, "%s_bucket{stage=%s,le=\"+Inf\"} %d\n", DurationName, quote(stage), h.Count)
		fmt.Fprintf(&b, "%s_sum{stage=%s} %s\n", DurationName, quote(stage), strconv.FormatFloat(h.Sum, 'g', -1, 64))
		fmt.Fprintf(&b, "%s_count{stage=%s} %d\n", DurationName, quote(stage), h.Count)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// quote renders a label value with the text format's escapes.
func quote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}

// writeAtomic replaces path with data (fsync, then rename), so a reader
// never sees half a file.
func writeAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("hook counters %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("hook counters %s: %w", path, err)
	}
	_, werr := tmp.Write(data)
	err = errors.Join(werr, tmp.Chmod(0o644), tmp.Sync(), tmp.Close())
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("hook counters %s: %w", path, err)
	}
	return nil
}
