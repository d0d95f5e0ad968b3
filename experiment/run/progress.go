package run

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
)

// Progress shows per-run and overall progress with ETAs. In "lines" mode
// (the VM's serial console, CI logs) it prints one line when a run starts,
// every Every while it runs, and when it ends; in "bar" mode (a terminal)
// it keeps a progress bar whose description carries the same numbers.
//
// The ETA is the plan's expected time of the remaining runs (replay length
// plus the setup estimate), corrected by how the finished runs compared
// with their own expectation.
type Progress struct {
	W     io.Writer
	Mode  string // lines or bar
	Every time.Duration

	mu        sync.Mutex
	total     int
	expected  []float64 // seconds per run, by plan position
	done      map[int]bool
	spent     float64 // actual seconds of the runs measured here
	predicted float64 // their expected seconds
	start     time.Time
	bar       *progressbar.ProgressBar
}

// Begin starts the report for runs with their expected seconds; done
// marks the ones already finished (a resumed experiment).
func (p *Progress) Begin(expected []float64, done map[int]bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total, p.expected, p.done, p.start = len(expected), expected, map[int]bool{}, time.Now()
	for i := range done {
		p.done[i] = true
	}
	if p.Every == 0 {
		p.Every = 10 * time.Second
	}
	if p.Mode == "bar" {
		p.bar = progressbar.NewOptions(p.total, progressbar.OptionSetWriter(p.W), progressbar.OptionShowCount(),
			progressbar.OptionSetWidth(20), progressbar.OptionSetPredictTime(false), progressbar.OptionShowElapsedTimeOnFinish())
		_ = p.bar.Set(len(p.done))
	}
	fmt.Fprintf(p.W, "progress: %d runs planned, %d done, about %s\n", p.total, len(p.done), dur(p.remaining(-1, 0)))
}

// remaining is the corrected expected time of the unfinished runs, with
// run cur counted from elapsed seconds on. Callers hold mu.
func (p *Progress) remaining(cur int, elapsed float64) float64 {
	f := 1.0
	if p.predicted > 0 {
		f = p.spent / p.predicted
	}
	r := 0.0
	for i, e := range p.expected {
		if p.done[i] {
			continue
		}
		if i == cur {
			r += max(0, f*e-elapsed)
			continue
		}
		r += f * e
	}
	return r
}

// Run reports run i (label) from now until the returned stop is called.
func (p *Progress) Run(i int, label string) (stop func()) {
	t0 := time.Now()
	line := func(final bool) string {
		p.mu.Lock()
		defer p.mu.Unlock()
		el := time.Since(t0).Seconds()
		f := 1.0
		if p.predicted > 0 {
			f = p.spent / p.predicted
		}
		state := fmt.Sprintf("%s of ~%s", dur(el), dur(f*p.expected[i]))
		if final {
			state = "done in " + dur(el)
		}
		return fmt.Sprintf("run %d/%d %s: %s; experiment %s elapsed, ~%s left", i+1, p.total, label, state,
			dur(time.Since(p.start).Seconds()), dur(p.remaining(i, el)))
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(p.Every)
		if p.Mode == "bar" {
			t.Reset(time.Second)
		}
		defer t.Stop()
		p.emit(line(false))
		for {
			select {
			case <-done:
				return
			case <-t.C:
				p.emit(line(false))
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
		p.mu.Lock()
		p.spent += time.Since(t0).Seconds()
		p.predicted += p.expected[i]
		p.done[i] = true
		p.mu.Unlock()
		p.emit(line(true))
		if p.bar != nil {
			_ = p.bar.Add(1)
		}
	}
}

func (p *Progress) emit(s string) {
	if p.bar != nil {
		p.bar.Describe(s)
		return
	}
	fmt.Fprintln(p.W, "progress: "+s)
}

// Finish closes the bar.
func (p *Progress) Finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
		fmt.Fprintln(p.W)
	}
}

func dur(s float64) string {
	d := time.Duration(s * float64(time.Second)).Round(time.Second)
	if d >= time.Hour {
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	if d >= time.Minute {
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%ds", int(d.Seconds()))
}
