// Package trace owns the replay workload's input: it parses an agent run's
// podman-stats resources.json (plus the tool_calls.json beside it) and cleans
// it into a timeline of memory targets and per-interval CPU.
package trace

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
)

// File names inside a trace folder.
const (
	ResourcesFile = "resources.json"
	ToolCallsFile = "tool_calls.json"
)

// StartupOffset is how long before the first sample the container started.
// podman's cpu_percent averages over the container's lifetime, so deriving
// per-interval CPU needs that origin; the collector starts sampling about 1 s
// after the container.
const StartupOffset = 1.0

// RawSample is one entry of samples[] as recorded, before cleaning.
type RawSample struct {
	Index      int     // position in samples[]
	Epoch      float64 // Unix seconds
	UsedBytes  int64   // container memory usage
	LimitBytes int64   // host RAM or container limit
	CPUAvg     float64 // cpu_percent: average since container start
}

// zero reports podman's "0B / 0B": the container was already gone.
func (s RawSample) zero() bool { return s.UsedBytes == 0 && s.LimitBytes == 0 }

// SampleError names the sample and field that made a trace invalid.
type SampleError struct {
	Index int
	Field string
	Err   error
}

func (e *SampleError) Error() string {
	return fmt.Sprintf("sample %d: %s: %v", e.Index, e.Field, e.Err)
}

func (e *SampleError) Unwrap() error { return e.Err }

var errMissing = errors.New("missing")

// rawJSON uses pointers so that a missing field differs from a zero one.
type rawJSON struct {
	Epoch      *float64 `json:"epoch"`
	MemUsage   *string  `json:"mem_usage"`
	CPUPercent *string  `json:"cpu_percent"`
}

// Decode reads resources.json and validates every sample: known units,
// present fields, strictly increasing epochs. It streams samples[] so that a
// truncated or malformed file is reported with the sample it broke in.
func Decode(r io.Reader) ([]RawSample, error) {
	dec := json.NewDecoder(r)
	if err := expectDelim(dec, '{'); err != nil {
		return nil, fmt.Errorf("top level: %w", err)
	}
	var (
		out  []RawSample
		seen bool
	)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("top level: %w", err)
		}
		key, _ := tok.(string)
		if key != "samples" {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return nil, fmt.Errorf("%s: %w", key, err)
			}
			continue
		}
		if seen {
			return nil, errors.New("samples: appears twice")
		}
		seen = true
		if out, err = decodeSamples(dec); err != nil {
			return nil, err
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return nil, fmt.Errorf("top level: %w", err)
	}
	if !seen {
		return nil, errors.New("samples: missing")
	}
	if len(out) == 0 {
		return nil, &SampleError{Index: 0, Field: "samples", Err: errors.New("list is empty")}
	}
	return out, nil
}

func decodeSamples(dec *json.Decoder) ([]RawSample, error) {
	if err := expectDelim(dec, '['); err != nil {
		return nil, fmt.Errorf("samples: %w", err)
	}
	var out []RawSample
	for i := 0; dec.More(); i++ {
		var raw rawJSON
		if err := dec.Decode(&raw); err != nil {
			field := "json"
			if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok && te.Field != "" {
				field = te.Field
			}
			return nil, &SampleError{Index: i, Field: field, Err: unexpectedEOF(err)}
		}
		s, err := validate(i, raw)
		if err != nil {
			return nil, err
		}
		if n := len(out); n > 0 && !(s.Epoch > out[n-1].Epoch) {
			return nil, &SampleError{Index: i, Field: "epoch",
				Err: fmt.Errorf("%.6f is not after sample %d's %.6f", s.Epoch, i-1, out[n-1].Epoch)}
		}
		out = append(out, s)
	}
	if err := expectDelim(dec, ']'); err != nil {
		return nil, &SampleError{Index: len(out), Field: "json", Err: unexpectedEOF(err)}
	}
	return out, nil
}

func validate(i int, raw rawJSON) (RawSample, error) {
	s := RawSample{Index: i}
	switch {
	case raw.Epoch == nil:
		return s, &SampleError{i, "epoch", errMissing}
	case raw.MemUsage == nil:
		return s, &SampleError{i, "mem_usage", errMissing}
	case raw.CPUPercent == nil:
		return s, &SampleError{i, "cpu_percent", errMissing}
	}
	s.Epoch = *raw.Epoch
	if math.IsNaN(s.Epoch) || math.IsInf(s.Epoch, 0) || s.Epoch <= 0 {
		return s, &SampleError{i, "epoch", fmt.Errorf("%v is not a positive Unix time", s.Epoch)}
	}
	var err error
	if s.UsedBytes, s.LimitBytes, err = ParseUsage(*raw.MemUsage); err != nil {
		return s, &SampleError{i, "mem_usage", err}
	}
	if s.CPUAvg, err = ParsePercent(*raw.CPUPercent); err != nil {
		return s, &SampleError{i, "cpu_percent", err}
	}
	return s, nil
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return unexpectedEOF(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return fmt.Errorf("got %v, want %q", tok, want)
	}
	return nil
}

// unexpectedEOF turns a bare io.EOF inside a document into the truncation it is.
func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("truncated JSON: %w", io.ErrUnexpectedEOF)
	}
	return err
}

// Sample is one step of the cleaned timeline.
type Sample struct {
	Index      int     `json:"index"`       // position in the source samples[]
	T          float64 `json:"t_s"`         // seconds since the first kept sample
	UsedBytes  int64   `json:"used_bytes"`  // memory target
	LimitBytes int64   `json:"limit_bytes"` // as recorded
	CPUAvg     float64 `json:"cpu_avg"`     // recorded since-start average, %
	CPU        float64 `json:"cpu"`         // derived over the interval ending here, %
}

// Dropped is a sample that cleaning removed, and why.
type Dropped struct {
	Index  int    `json:"index"`
	Reason string `json:"reason"`
}

// Drop reasons.
const (
	ReasonTrailingZero = "trailing 0B / 0B sample: container already gone"
	ReasonInnerZero    = "0B / 0B sample inside the trace"
	ReasonEdgeFirst    = "near-zero first sample: container starting"
	ReasonEdgeLast     = "near-zero last sample: container stopping"
)

// Options tunes cleaning.
type Options struct {
	// EdgeBytes trims leading and trailing samples below this usage (the
	// container starting or stopping). 0 keeps them. Never trims a trace
	// whose every sample is below it.
	EdgeBytes int64
}

// DefaultOptions trims kB-level edge samples (below 1 MB).
func DefaultOptions() Options { return Options{EdgeBytes: 1_000_000} }

// Trace is a cleaned, replayable timeline.
type Trace struct {
	Name      string
	Samples   []Sample // at least one; T strictly increasing from 0
	Dropped   []Dropped
	ToolCalls []ToolCall // empty when there was no tool_calls.json
	StartUnix float64    // epoch of Samples[0]
}

// Clean applies the design §3 rules to decoded samples.
func Clean(raw []RawSample, opt Options) (*Trace, error) {
	if len(raw) == 0 {
		return nil, &SampleError{Index: 0, Field: "samples", Err: errors.New("list is empty")}
	}
	cpu := deriveCPU(raw)
	keep := make([]bool, len(raw))
	reason := make(map[int]string)
	for i := range raw {
		keep[i] = true
	}
	end := len(raw)
	for end > 0 && raw[end-1].zero() {
		end--
		keep[end] = false
		reason[end] = ReasonTrailingZero
	}
	for i := range end {
		if raw[i].zero() {
			keep[i] = false
			reason[i] = ReasonInnerZero
		}
	}
	if opt.EdgeBytes > 0 && slices.ContainsFunc(raw[:end], func(s RawSample) bool { return s.UsedBytes >= opt.EdgeBytes }) {
		for i := 0; i < end && (!keep[i] || raw[i].UsedBytes < opt.EdgeBytes); i++ {
			if keep[i] {
				keep[i] = false
				reason[i] = ReasonEdgeFirst
			}
		}
		for i := end - 1; i >= 0 && (!keep[i] || raw[i].UsedBytes < opt.EdgeBytes); i-- {
			if keep[i] {
				keep[i] = false
				reason[i] = ReasonEdgeLast
			}
		}
	}
	t := &Trace{}
	for i, s := range raw {
		if !keep[i] {
			t.Dropped = append(t.Dropped, Dropped{Index: s.Index, Reason: reason[i]})
			continue
		}
		if len(t.Samples) == 0 {
			t.StartUnix = s.Epoch
		}
		t.Samples = append(t.Samples, Sample{
			Index: s.Index, T: s.Epoch - t.StartUnix,
			UsedBytes: s.UsedBytes, LimitBytes: s.LimitBytes,
			CPUAvg: s.CPUAvg, CPU: cpu[i],
		})
	}
	if len(t.Samples) == 0 {
		return nil, &SampleError{Index: raw[0].Index, Field: "mem_usage", Err: errors.New("every sample is 0B / 0B")}
	}
	return t, nil
}

// deriveCPU turns podman's since-start averages into per-interval CPU:
// (a_i·e_i − a_{i−1}·e_{i−1}) / (e_i − e_{i−1}), e = seconds since start,
// clamped at 0 because rounding in the recorded averages can go negative.
func deriveCPU(raw []RawSample) []float64 {
	t0 := raw[0].Epoch - StartupOffset
	out := make([]float64, len(raw))
	out[0] = raw[0].CPUAvg
	for i := 1; i < len(raw); i++ {
		e1, e0 := raw[i].Epoch-t0, raw[i-1].Epoch-t0
		v := (raw[i].CPUAvg*e1 - raw[i-1].CPUAvg*e0) / (e1 - e0)
		out[i] = max(v, 0)
	}
	return out
}

// Load reads a trace from a resources.json file or a folder holding one,
// with tool_calls.json when it sits beside it.
func Load(path string, opt Options) (*Trace, error) {
	file := path
	if fi, err := os.Stat(path); err != nil {
		return nil, err
	} else if fi.IsDir() {
		file = filepath.Join(path, ResourcesFile)
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	raw, err := Decode(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	t, err := Clean(raw, opt)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	dir := filepath.Dir(file)
	t.Name = filepath.Base(dir)
	tc := filepath.Join(dir, ToolCallsFile)
	if calls, err := LoadToolCalls(tc, t.StartUnix); err == nil {
		t.ToolCalls = calls
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return t, nil
}

// Duration is the span from the first to the last kept sample, in seconds.
func (t *Trace) Duration() float64 { return t.Samples[len(t.Samples)-1].T }

// Peak is the largest memory target.
func (t *Trace) Peak() int64 {
	var p int64
	for _, s := range t.Samples {
		p = max(p, s.UsedBytes)
	}
	return p
}

// Mean is the per-sample mean memory target.
func (t *Trace) Mean() int64 {
	var sum float64
	for _, s := range t.Samples {
		sum += float64(s.UsedBytes)
	}
	return int64(math.Round(sum / float64(len(t.Samples))))
}

// Summary is what `agentcg-replay check` prints.
type Summary struct {
	Name      string    `json:"name"`
	Samples   int       `json:"samples"`
	DurationS float64   `json:"duration_s"`
	PeakBytes int64     `json:"peak_bytes"`
	MeanBytes int64     `json:"mean_bytes"`
	ToolCalls int       `json:"tool_calls"`
	Dropped   []Dropped `json:"dropped"`
}

// Summarize reports the cleaned trace's shape.
func (t *Trace) Summarize() Summary {
	d := t.Dropped
	if d == nil {
		d = []Dropped{}
	}
	return Summary{
		Name: t.Name, Samples: len(t.Samples), DurationS: t.Duration(),
		PeakBytes: t.Peak(), MeanBytes: t.Mean(), ToolCalls: len(t.ToolCalls), Dropped: d,
	}
}
