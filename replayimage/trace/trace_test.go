package trace

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Real traces: the three design traces baked into the image, and three more
// kept as test data because they exercise the cleaning rules.
var realTraces = map[string]string{
	"Medical_Bio_Hard":               "../traces/Medical_Bio_Hard",
	"ML_Scientific_Hard":             "../traces/ML_Scientific_Hard",
	"CLI_Tools_Easy":                 "../traces/CLI_Tools_Easy",
	"DevOps_Build_Easy":              "testdata/DevOps_Build_Easy",
	"study_pytorch-ignite-1077_0.5s": "testdata/study_pytorch-ignite-1077_0.5s",
	"haiku_pre-commit-2524":          "testdata/haiku_pre-commit-2524",
}

func TestRealTraces(t *testing.T) {
	tests := []struct {
		name      string
		samples   int
		peak      int64
		toolCalls int
		dropped   map[string]int // reason -> count
		firstIdx  int            // source index of the first kept sample
	}{
		{"Medical_Bio_Hard", 499, 4_060_000_000, 89, nil, 0},
		{"ML_Scientific_Hard", 576, 367_800_000, 95, nil, 0},
		{"CLI_Tools_Easy", 83, 279_300_000, 20, nil, 0},
		{"DevOps_Build_Easy", 2049, 633_200_000, 51, map[string]int{ReasonTrailingZero: 47}, 0},
		{"study_pytorch-ignite-1077_0.5s", 559, 839_900_000, 44, map[string]int{ReasonEdgeFirst: 1, ReasonEdgeLast: 1}, 1},
		{"haiku_pre-commit-2524", 314, 1_862_000_000, 24, map[string]int{ReasonTrailingZero: 1}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := Load(realTraces[tt.name], DefaultOptions())
			if err != nil {
				t.Fatal(err)
			}
			if tr.Name != tt.name {
				t.Errorf("name %q, want %q", tr.Name, tt.name)
			}
			if len(tr.Samples) != tt.samples {
				t.Errorf("samples %d, want %d", len(tr.Samples), tt.samples)
			}
			if p := tr.Peak(); p != tt.peak {
				t.Errorf("peak %d, want %d", p, tt.peak)
			}
			if len(tr.ToolCalls) != tt.toolCalls {
				t.Errorf("tool calls %d, want %d", len(tr.ToolCalls), tt.toolCalls)
			}
			got := map[string]int{}
			for _, d := range tr.Dropped {
				got[d.Reason]++
			}
			if len(got) != len(tt.dropped) {
				t.Errorf("dropped %v, want %v", got, tt.dropped)
			}
			for r, n := range tt.dropped {
				if got[r] != n {
					t.Errorf("dropped %q: %d, want %d", r, got[r], n)
				}
			}
			if tr.Samples[0].Index != tt.firstIdx || tr.Samples[0].T != 0 {
				t.Errorf("first kept sample %+v, want index %d at t=0", tr.Samples[0], tt.firstIdx)
			}
			for i := 1; i < len(tr.Samples); i++ {
				if !(tr.Samples[i].T > tr.Samples[i-1].T) {
					t.Fatalf("sample %d: t %v not after %v", tr.Samples[i].Index, tr.Samples[i].T, tr.Samples[i-1].T)
				}
			}
		})
	}
}

// Trailing zeros are dropped as one run at the end, never mid-trace.
func TestTrailingZerosAreTheTail(t *testing.T) {
	tr, err := Load(realTraces["DevOps_Build_Easy"], DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	last := tr.Samples[len(tr.Samples)-1].Index
	for i, d := range tr.Dropped {
		if d.Index != last+1+i {
			t.Fatalf("dropped[%d] = sample %d, want %d (a contiguous tail)", i, d.Index, last+1+i)
		}
	}
	for _, s := range tr.Samples {
		if s.UsedBytes == 0 {
			t.Fatalf("sample %d: zero usage kept", s.Index)
		}
	}
}

func TestEdgeTrimOff(t *testing.T) {
	tr, err := Load(realTraces["study_pytorch-ignite-1077_0.5s"], Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.Samples) != 561 || len(tr.Dropped) != 0 {
		t.Fatalf("with EdgeBytes 0: %d samples, %d dropped; want 561, 0", len(tr.Samples), len(tr.Dropped))
	}
	if tr.Samples[0].UsedBytes >= 1_000_000 {
		t.Fatalf("first sample %d B; the trace starts kB-level", tr.Samples[0].UsedBytes)
	}
}

// A trace whose every sample is below the edge threshold is kept whole.
func TestEdgeTrimKeepsSmallTraces(t *testing.T) {
	raw := []RawSample{
		{Index: 0, Epoch: 10, UsedBytes: 50_000, LimitBytes: 1e9},
		{Index: 1, Epoch: 11, UsedBytes: 70_000, LimitBytes: 1e9},
	}
	tr, err := Clean(raw, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.Samples) != 2 {
		t.Fatalf("kept %d samples, want 2", len(tr.Samples))
	}
}

func TestInnerZeroDropped(t *testing.T) {
	raw := []RawSample{
		{Index: 0, Epoch: 10, UsedBytes: 5e6, LimitBytes: 1e9},
		{Index: 1, Epoch: 11},
		{Index: 2, Epoch: 12, UsedBytes: 6e6, LimitBytes: 1e9},
		{Index: 3, Epoch: 13},
	}
	tr, err := Clean(raw, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	want := []Dropped{{1, ReasonInnerZero}, {3, ReasonTrailingZero}}
	if len(tr.Dropped) != 2 || tr.Dropped[0] != want[0] || tr.Dropped[1] != want[1] {
		t.Fatalf("dropped %v, want %v", tr.Dropped, want)
	}
}

func TestDeriveCPU(t *testing.T) {
	// Container starts at 9. Busy 100% for 1 s, 0% for 1 s, 300% for 2 s:
	// averages since start are 100, 50, 200.
	raw := []RawSample{
		{Epoch: 10, CPUAvg: 100},
		{Epoch: 11, CPUAvg: 50},
		{Epoch: 13, CPUAvg: 175},
		{Epoch: 14, CPUAvg: 100}, // would be negative: clamped
	}
	got := deriveCPU(raw)
	want := []float64{100, 0, 300, 0}
	for i := range want {
		if math.Abs(got[i]-want[i]) > 1e-9 {
			t.Errorf("cpu[%d] = %v, want %v", i, got[i], want[i])
		}
	}
}

// On real traces, integrating the derived CPU over time must give back the
// recorded since-start average wherever no clamping happened.
func TestDeriveCPURealTraces(t *testing.T) {
	for name, dir := range realTraces {
		f, err := os.Open(filepath.Join(dir, ResourcesFile))
		if err != nil {
			t.Fatal(err)
		}
		raw, err := Decode(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		cpu := deriveCPU(raw)
		t0 := raw[0].Epoch - StartupOffset
		for i := 1; i < len(raw); i++ {
			if cpu[i] < 0 {
				t.Fatalf("%s sample %d: negative cpu %v", name, i, cpu[i])
			}
			if cpu[i] == 0 {
				continue
			}
			e1, e0 := raw[i].Epoch-t0, raw[i-1].Epoch-t0
			back := (raw[i-1].CPUAvg*e0 + cpu[i]*(e1-e0)) / e1
			if math.Abs(back-raw[i].CPUAvg) > 1e-6 {
				t.Fatalf("%s sample %d: average from derived cpu %v, recorded %v", name, i, back, raw[i].CPUAvg)
			}
		}
	}
}

const sampleFmt = `{"timestamp":"x","epoch":%s,"mem_usage":%s,"mem_percent":"1%%","cpu_percent":%s}`

func TestMalformed(t *testing.T) {
	medical, err := os.ReadFile(filepath.Join(realTraces["Medical_Bio_Hard"], ResourcesFile))
	if err != nil {
		t.Fatal(err)
	}
	cut := len(medical) / 2
	// The sample the cut lands in: count the sample objects opened before it.
	truncIdx := strings.Count(string(medical[:cut]), "\n    {") - 1

	tests := []struct {
		name  string
		in    string
		index int
		field string
	}{
		{"unknown unit", `{"samples":[
			{"epoch":1,"mem_usage":"1MB / 2GB","cpu_percent":"1%"},
			{"epoch":2,"mem_usage":"1XB / 2GB","cpu_percent":"1%"}]}`, 1, "mem_usage"},
		{"missing mem_usage", `{"samples":[
			{"epoch":1,"mem_usage":"1MB / 2GB","cpu_percent":"1%"},
			{"epoch":2,"mem_usage":"1MB / 2GB","cpu_percent":"1%"},
			{"epoch":3,"cpu_percent":"1%"}]}`, 2, "mem_usage"},
		{"missing epoch", `{"samples":[{"mem_usage":"1MB / 2GB","cpu_percent":"1%"}]}`, 0, "epoch"},
		{"missing cpu_percent", `{"samples":[{"epoch":1,"mem_usage":"1MB / 2GB"}]}`, 0, "cpu_percent"},
		{"bad cpu_percent", `{"samples":[{"epoch":1,"mem_usage":"1MB / 2GB","cpu_percent":"--"}]}`, 0, "cpu_percent"},
		{"duplicate epoch", `{"samples":[
			{"epoch":1,"mem_usage":"1MB / 2GB","cpu_percent":"1%"},
			{"epoch":1,"mem_usage":"1MB / 2GB","cpu_percent":"1%"}]}`, 1, "epoch"},
		{"decreasing epoch", `{"samples":[
			{"epoch":5,"mem_usage":"1MB / 2GB","cpu_percent":"1%"},
			{"epoch":6,"mem_usage":"1MB / 2GB","cpu_percent":"1%"},
			{"epoch":4,"mem_usage":"1MB / 2GB","cpu_percent":"1%"}]}`, 2, "epoch"},
		{"epoch as string", `{"samples":[{"epoch":"1","mem_usage":"1MB / 2GB","cpu_percent":"1%"}]}`, 0, "epoch"},
		{"truncated real trace", string(medical[:cut]), truncIdx, "json"},
		{"truncated after sample", `{"samples":[{"epoch":1,"mem_usage":"1MB / 2GB","cpu_percent":"1%"},`, 1, "json"},
		{"empty samples", `{"samples":[],"summary":{}}`, 0, "samples"},
		{"all zero", `{"samples":[{"epoch":1,"mem_usage":"0B / 0B","cpu_percent":"0.00%"}]}`, 0, "mem_usage"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := Decode(strings.NewReader(tt.in))
			if err == nil {
				_, err = Clean(raw, DefaultOptions())
			}
			var se *SampleError
			if !errors.As(err, &se) {
				t.Fatalf("error %v, want a SampleError", err)
			}
			if se.Index != tt.index || se.Field != tt.field {
				t.Fatalf("error %q names sample %d field %s, want sample %d field %s", err, se.Index, se.Field, tt.index, tt.field)
			}
			if want := "sample "; !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("error %q does not say sample and field", err)
			}
		})
	}
}

func TestNotASampleError(t *testing.T) {
	for _, in := range []string{``, `[]`, `{"summary":{}}`, `{"samples":{}}`, `{"samples":[]`} {
		if _, err := Decode(strings.NewReader(in)); err == nil {
			t.Errorf("Decode(%q) succeeded", in)
		}
	}
}

func TestToolCallsOnTraceClock(t *testing.T) {
	tr, err := Load(realTraces["Medical_Bio_Hard"], DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	// The agent runs inside the sampled window, give or take a few seconds.
	for i, c := range tr.ToolCalls {
		if c.T < -5 || c.T > tr.Duration()+5 {
			t.Fatalf("tool call %d (%s) at %.1f s, outside the trace's %.1f s", i, c.Tool, c.T, tr.Duration())
		}
	}
	if tr.ToolCalls[0].Tool != "TodoWrite" {
		t.Fatalf("first tool %q, want TodoWrite", tr.ToolCalls[0].Tool)
	}
}

func TestLoadMissingToolCallsIsFine(t *testing.T) {
	dir := t.TempDir()
	b, err := os.ReadFile(filepath.Join(realTraces["CLI_Tools_Easy"], ResourcesFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ResourcesFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	tr, err := Load(filepath.Join(dir, ResourcesFile), DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.ToolCalls) != 0 || len(tr.Samples) != 83 {
		t.Fatalf("got %d tool calls, %d samples", len(tr.ToolCalls), len(tr.Samples))
	}
	if err := os.WriteFile(filepath.Join(dir, ToolCallsFile), []byte(`[{"timestamp":"yesterday","tool":"Bash"}]`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir, DefaultOptions()); err == nil || !strings.Contains(err.Error(), "tool call 0") {
		t.Fatalf("bad tool_calls.json: error %v, want one naming tool call 0", err)
	}
}

// The shared development set, when this checkout sits beside it.
func TestSharedTraces(t *testing.T) {
	dirs, _ := filepath.Glob("../../../shared/traces/*/" + ResourcesFile)
	if len(dirs) == 0 {
		t.Skip("SKIP: ../shared/traces not beside this checkout; the copies under testdata/ and ../traces/ are tested above")
	}
	for _, f := range dirs {
		if _, err := Load(f, DefaultOptions()); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, dir := range realTraces {
		b, err := os.ReadFile(filepath.Join(dir, ResourcesFile))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b[:min(len(b), 2000)])
	}
	f.Add([]byte(`{"samples":[{"epoch":1,"mem_usage":"1MB / 2GB","cpu_percent":"1%"},{"epoch":2,"mem_usage":"0B / 0B","cpu_percent":"0%"}]}`))
	f.Add([]byte(`{"samples":[{"epoch":1e300,"mem_usage":"1.5GiB / 2TB","cpu_percent":"100.0%"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		raw, err := Decode(bytes.NewReader(b))
		if err != nil {
			return
		}
		tr, err := Clean(raw, DefaultOptions())
		if err != nil {
			return
		}
		if len(tr.Samples)+len(tr.Dropped) != len(raw) {
			t.Fatalf("%d kept + %d dropped != %d decoded", len(tr.Samples), len(tr.Dropped), len(raw))
		}
		for i, s := range tr.Samples {
			if s.UsedBytes < 0 || s.CPU < 0 || math.IsNaN(s.CPU) {
				t.Fatalf("sample %d: %+v", s.Index, s)
			}
			if i > 0 && !(s.T > tr.Samples[i-1].T) {
				t.Fatalf("sample %d: t %v not after %v", s.Index, s.T, tr.Samples[i-1].T)
			}
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	data, err := os.ReadFile(filepath.Join(realTraces["Medical_Bio_Hard"], ResourcesFile))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		raw, err := Decode(bytes.NewReader(data))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Clean(raw, DefaultOptions()); err != nil {
			b.Fatal(err)
		}
	}
}
