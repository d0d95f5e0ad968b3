package trace

import (
	"errors"
	"fmt"
	"math"
)

// Window selects the part of a trace a replay plays: [From, To] in trace
// seconds, started Offset seconds into the window, optionally looped, for
// Length trace seconds. The zero Window plays the whole trace once.
//
// The target at a window time τ is the usage of the last sample at or
// before From+τ, so a window that starts between two samples starts at the
// earlier sample's usage, as the trace itself held it.
type Window struct {
	From float64 `json:"from_s" yaml:"from_s"`
	To   float64 `json:"to_s" yaml:"to_s"` // 0: the end of the trace
	// Loop repeats the window: at every wrap the target goes back to the
	// usage at From. Length must then be set.
	Loop bool `json:"loop" yaml:"loop"`
	// Offset is the phase, in trace seconds into the window, at which the
	// replay begins (0 ≤ Offset < To−From).
	Offset float64 `json:"offset_s" yaml:"offset_s"`
	// Length is how many trace seconds to play; 0 plays from Offset to the
	// window's end once. A schedule always ends with a point at Length that
	// holds the last target, so the replay lasts exactly Length/speed.
	Length float64 `json:"length_s" yaml:"length_s"`
}

// Point is one step of a schedule.
type Point struct {
	T     float64 // trace seconds since the replay's start
	Bytes int64   // target usage
	CPU   float64 // derived CPU % over the interval ending here (as recorded)
	Index int     // source sample index whose usage this point holds
	Pass  int     // loop pass (0 for the first)
}

// Resolve fills To with the trace's end and checks the window against t.
func (w Window) Resolve(t *Trace) (Window, error) {
	d := t.Duration()
	if w.To == 0 {
		w.To = d
	}
	bad := func(f string, a ...any) (Window, error) { return w, fmt.Errorf("window: "+f, a...) }
	switch {
	case !(w.From >= 0) || math.IsInf(w.From, 0):
		return bad("from %v: must be ≥ 0", w.From)
	case !(w.To > w.From) || math.IsInf(w.To, 0):
		return bad("to %v: must be after from %v", w.To, w.From)
	case w.To > d+1e-9:
		return bad("to %v: beyond the trace's end (%.3f s)", w.To, d)
	case !(w.Offset >= 0) || w.Offset >= w.To-w.From:
		return bad("offset %v: must be in [0, %.3f) (the window's length)", w.Offset, w.To-w.From)
	case !(w.Length >= 0) || math.IsInf(w.Length, 0):
		return bad("length %v: must be ≥ 0", w.Length)
	case w.Loop && w.Length == 0:
		return bad("loop needs a length (how long to play)")
	}
	return w, nil
}

// Period is the window's length in trace seconds (after Resolve).
func (w Window) Period() float64 { return w.To - w.From }

// Span is how many trace seconds the schedule covers (after Resolve).
func (w Window) Span() float64 {
	if w.Length > 0 {
		return w.Length
	}
	return w.Period() - w.Offset
}

// ErrEmptySchedule is returned when a window holds nothing to play.
var ErrEmptySchedule = errors.New("empty schedule")

// Schedule expands the window into the replay's steps. The zero Window
// gives exactly one point per sample at its own time.
func (t *Trace) Schedule(w Window) ([]Point, error) {
	w, err := w.Resolve(t)
	if err != nil {
		return nil, err
	}
	// The window's own points: its start at τ=0, then every sample inside.
	type base struct {
		tau float64
		s   Sample
	}
	at := func(tau float64) Sample { // the sample in force at window time tau
		i := 0
		for i+1 < len(t.Samples) && t.Samples[i+1].T <= w.From+tau {
			i++
		}
		return t.Samples[i]
	}
	bs := []base{{0, at(0)}}
	for _, s := range t.Samples {
		tau := s.T - w.From
		if tau <= 0 {
			continue
		}
		if tau > w.Period() || (w.Loop && tau >= w.Period()) {
			break
		}
		bs = append(bs, base{tau, s})
	}
	span := w.Span()
	var out []Point
	add := func(tt float64, s Sample, pass int) {
		out = append(out, Point{T: tt, Bytes: s.UsedBytes, CPU: s.CPU, Index: s.Index, Pass: pass})
	}
	add(0, at(w.Offset), 0)
	for pass := 0; ; pass++ {
		done := false
		for _, b := range bs {
			tt := float64(pass)*w.Period() + b.tau - w.Offset
			if tt <= 0 {
				continue
			}
			if tt > span+1e-9 {
				done = true
				break
			}
			add(tt, b.s, pass)
		}
		if done || !w.Loop {
			break
		}
	}
	if last := out[len(out)-1]; last.T < span-1e-9 {
		out = append(out, Point{T: span, Bytes: last.Bytes, CPU: last.CPU, Index: last.Index, Pass: last.Pass})
	}
	if len(out) == 0 {
		return nil, ErrEmptySchedule
	}
	return out, nil
}

// ValueAt returns the target of a schedule at trace time tt (0 before the
// start and after the end).
func ValueAt(pts []Point, tt float64) int64 {
	if len(pts) == 0 || tt < 0 || tt > pts[len(pts)-1].T {
		return 0
	}
	lo, hi := 0, len(pts)-1
	for lo < hi { // last point with T ≤ tt
		mid := (lo + hi + 1) / 2
		if pts[mid].T <= tt {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return pts[lo].Bytes
}
