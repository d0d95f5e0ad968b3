package trace

import (
	"math"
	"strings"
	"testing"
)

// synthetic builds a trace with samples at t = 0, 1, 2, … holding the given MB.
func synthetic(mb ...int64) *Trace {
	tr := &Trace{Name: "syn"}
	for i, v := range mb {
		tr.Samples = append(tr.Samples, Sample{Index: i, T: float64(i), UsedBytes: v * 1e6})
	}
	return tr
}

type pt struct {
	t  float64
	mb int64
}

func points(ps []Point) []pt {
	out := make([]pt, len(ps))
	for i, p := range ps {
		out[i] = pt{math.Round(p.T*1000) / 1000, p.Bytes / 1e6}
	}
	return out
}

func TestSchedule(t *testing.T) {
	tr := synthetic(10, 20, 30, 40, 50, 60) // t = 0 … 5
	tests := []struct {
		name string
		w    Window
		want []pt
	}{
		{"whole trace", Window{}, []pt{{0, 10}, {1, 20}, {2, 30}, {3, 40}, {4, 50}, {5, 60}}},
		{"window", Window{From: 1, To: 3}, []pt{{0, 20}, {1, 30}, {2, 40}}},
		{"window between samples starts at the earlier sample", Window{From: 1.5, To: 3.5}, []pt{{0, 20}, {0.5, 30}, {1.5, 40}, {2, 40}}},
		{"offset", Window{From: 1, To: 4, Offset: 1.5}, []pt{{0, 30}, {0.5, 40}, {1.5, 50}}},
		{"truncated", Window{From: 0, To: 5, Length: 2.5}, []pt{{0, 10}, {1, 20}, {2, 30}, {2.5, 30}}},
		{"loop", Window{From: 1, To: 3, Loop: true, Length: 5}, []pt{{0, 20}, {1, 30}, {2, 20}, {3, 30}, {4, 20}, {5, 30}}},
		{"loop with offset", Window{From: 1, To: 4, Loop: true, Offset: 2, Length: 4}, []pt{{0, 40}, {1, 20}, {2, 30}, {3, 40}, {4, 20}}},
		{"loop ends between points", Window{From: 0, To: 2, Loop: true, Length: 2.5}, []pt{{0, 10}, {1, 20}, {2, 10}, {2.5, 10}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tr.Schedule(tt.w)
			if err != nil {
				t.Fatal(err)
			}
			if g := points(got); !equalPts(g, tt.want) {
				t.Errorf("got %v, want %v", g, tt.want)
			}
			for i := 1; i < len(got); i++ {
				if got[i].T <= got[i-1].T {
					t.Fatalf("times not increasing at %d: %v", i, points(got))
				}
			}
		})
	}
}

func equalPts(a, b []pt) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestScheduleWholeTraceIsTheTrace: the zero window replays every sample
// at its own time, as the replay did before windows existed.
func TestScheduleWholeTraceIsTheTrace(t *testing.T) {
	for name, dir := range realTraces {
		tr, err := Load(dir, DefaultOptions())
		if err != nil {
			t.Fatal(err)
		}
		pts, err := tr.Schedule(Window{})
		if err != nil {
			t.Fatal(err)
		}
		if len(pts) != len(tr.Samples) {
			t.Fatalf("%s: %d points for %d samples", name, len(pts), len(tr.Samples))
		}
		for i, p := range pts {
			if s := tr.Samples[i]; p.T != s.T || p.Bytes != s.UsedBytes || p.Index != s.Index {
				t.Fatalf("%s point %d: %+v, sample %+v", name, i, p, s)
			}
		}
	}
}

func TestScheduleRejects(t *testing.T) {
	tr := synthetic(10, 20, 30)
	for _, tt := range []struct {
		w    Window
		want string
	}{
		{Window{From: -1}, "from"},
		{Window{From: 2, To: 1}, "to 1"},
		{Window{To: 9}, "beyond the trace's end"},
		{Window{Offset: 2}, "offset"},
		{Window{Loop: true}, "loop needs a length"},
		{Window{Length: -1}, "length"},
		{Window{From: math.NaN()}, "from"},
	} {
		if _, err := tr.Schedule(tt.w); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: err %v, want it to mention %q", tt.w, err, tt.want)
		}
	}
}

func TestValueAt(t *testing.T) {
	pts, _ := synthetic(10, 20, 30).Schedule(Window{})
	for _, tt := range []struct {
		t    float64
		want int64
	}{{-1, 0}, {0, 10e6}, {0.99, 10e6}, {1, 20e6}, {2, 30e6}, {2.01, 0}} {
		if got := ValueAt(pts, tt.t); got != tt.want {
			t.Errorf("ValueAt(%v) = %d, want %d", tt.t, got, tt.want)
		}
	}
}
