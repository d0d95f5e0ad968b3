// Package figures draws the experiment's figures with gonum/plot, as PNG
// and SVG, from data already analysed by package report: the HIGH outcome
// per arm with its CI, memory and pressure over time for one block, HIGH
// survival per arm, and the BPF policy's delay returns.
package figures

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Slug turns a label into a file-name part.
func Slug(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-':
			return r
		}
		return '_'
	}, s)
}

// save writes p as base.png and base.svg.
func save(p *plot.Plot, dir, base string, w, h vg.Length) ([]string, error) {
	var out []string
	for _, ext := range []string{".png", ".svg"} {
		f := filepath.Join(dir, base+ext)
		if err := p.Save(w, h, f); err != nil {
			return out, fmt.Errorf("save %s: %w", f, err)
		}
		out = append(out, f)
	}
	return out, nil
}

// saveGrid draws rows × cols plots into one image, base.png and base.svg.
func saveGrid(plots [][]*plot.Plot, dir, base string, w, h vg.Length) ([]string, error) {
	var out []string
	for _, ext := range []string{"png", "svg"} {
		c, err := draw.NewFormattedCanvas(w, h, ext)
		if err != nil {
			return out, err
		}
		t := draw.Tiles{Rows: len(plots), Cols: len(plots[0]), PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 4,
			PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
		cv := plot.Align(plots, t, draw.New(c))
		for i := range plots {
			for j := range plots[i] {
				if plots[i][j] != nil {
					plots[i][j].Draw(cv[i][j])
				}
			}
		}
		f := filepath.Join(dir, base+"."+ext)
		fh, err := os.Create(f)
		if err != nil {
			return out, err
		}
		if _, err := c.WriteTo(fh); err != nil {
			fh.Close()
			return out, fmt.Errorf("save %s: %w", f, err)
		}
		if err := fh.Close(); err != nil {
			return out, err
		}
		out = append(out, f)
	}
	return out, nil
}

// Outcome is one arm's column in figure 1.
type Outcome struct {
	Label    string
	Values   []float64 // surviving sessions (killed ones are counted in Killed)
	Killed   int
	Median   float64 // over all sessions, killed at +Inf (so +Inf once half were killed)
	Lo, Hi   float64 // CI of the median (order statistics; ±Inf allowed)
	CILevel  float64
	Subtitle string // e.g. "n=10"
}

// Outcomes is figure 1: one metric of HIGH per arm.
type Outcomes struct {
	Title, YLabel string
	Arms          []Outcome
}

// DrawOutcomes draws every session as a dot, killed sessions as crosses
// above the data, and the median with its CI as a bar with whiskers.
func DrawOutcomes(dir, base string, o Outcomes) ([]string, error) {
	p := plot.New()
	p.Title.Text = o.Title
	p.Y.Label.Text = o.YLabel
	var names []string
	top := 0.0
	for _, a := range o.Arms {
		names = append(names, a.Label+"\n"+a.Subtitle)
		for _, v := range a.Values {
			top = max(top, v)
		}
		for _, v := range []float64{a.Hi, a.Median} {
			if !math.IsInf(v, 0) && !math.IsNaN(v) {
				top = max(top, v)
			}
		}
	}
	if top == 0 {
		top = 1
	}
	killedY := top * 1.12
	p.NominalX(names...)
	var dots, kills plotter.XYs
	var med plotter.XYs
	var errs plotter.YErrors
	for i, a := range o.Arms {
		for j, v := range a.Values {
			dots = append(dots, plotter.XY{X: float64(i) - 0.15 + 0.3*float64(j%7)/6, Y: v})
		}
		for j := range a.Killed {
			kills = append(kills, plotter.XY{X: float64(i) - 0.15 + 0.3*float64(j%7)/6, Y: killedY})
		}
		m := a.Median
		if math.IsNaN(m) {
			continue
		}
		if math.IsInf(m, 1) {
			m = killedY
		}
		lo, hi := clampInf(a.Lo, killedY), clampInf(a.Hi, killedY)
		med = append(med, plotter.XY{X: float64(i) + 0.25, Y: m})
		errs = append(errs, struct{ Low, High float64 }{max(0, m-lo), max(0, hi-m)})
	}
	if len(dots) > 0 {
		sc, err := plotter.NewScatter(dots)
		if err != nil {
			return nil, err
		}
		sc.GlyphStyle.Color = color.RGBA{R: 60, G: 90, B: 200, A: 200}
		sc.GlyphStyle.Radius = vg.Points(2.5)
		sc.GlyphStyle.Shape = draw.CircleGlyph{}
		p.Add(sc)
		p.Legend.Add("one block (HIGH survived)", sc)
	}
	if len(kills) > 0 {
		sc, err := plotter.NewScatter(kills)
		if err != nil {
			return nil, err
		}
		sc.GlyphStyle.Color = color.RGBA{R: 200, A: 255}
		sc.GlyphStyle.Radius = vg.Points(3)
		sc.GlyphStyle.Shape = draw.CrossGlyph{}
		p.Add(sc)
		p.Legend.Add("HIGH killed (worst rank)", sc)
	}
	if len(med) > 0 {
		sc, err := plotter.NewScatter(med)
		if err != nil {
			return nil, err
		}
		sc.GlyphStyle.Shape = draw.BoxGlyph{}
		sc.GlyphStyle.Radius = vg.Points(4)
		eb, err := plotter.NewYErrorBars(struct {
			plotter.XYs
			plotter.YErrors
		}{med, errs})
		if err != nil {
			return nil, err
		}
		p.Add(sc, eb)
		level := 0.95
		if len(o.Arms) > 0 && o.Arms[0].CILevel > 0 {
			level = o.Arms[0].CILevel
		}
		p.Legend.Add(fmt.Sprintf("median, %.0f%% CI", 100*level), sc)
	}
	p.Legend.Top = true
	p.Y.Min, p.Y.Max = 0, killedY*1.08
	p.X.Min, p.X.Max = -0.5, float64(len(o.Arms))-0.5
	p.Add(plotter.NewGrid())
	return save(p, dir, base, vg.Points(float64(200+110*len(o.Arms))), 4.5*vg.Inch)
}

func clampInf(v, top float64) float64 {
	switch {
	case math.IsInf(v, 1):
		return top
	case math.IsInf(v, -1), math.IsNaN(v):
		return 0
	}
	return v
}

// Series is one line of a timeline panel.
type Series struct {
	Name   string
	T      []float64 // seconds since the barrier
	Y      []float64
	Dashed bool
	Color  int // plotutil colour index
}

// Panel is one arm of figure 2: memory over time with the limit and gate
// lines, and cumulative memory stall over time.
type Panel struct {
	Title      string
	Memory     []Series // bytes
	Limit      float64  // 0: none
	Gate       float64  // 0: none
	Contention [2]float64
	Stall      []Series // seconds of stall so far
	ToolCalls  []float64
}

// DrawTimeline draws figure 2: one row per arm of one block.
func DrawTimeline(dir, base, title string, panels []Panel) ([]string, error) {
	if len(panels) == 0 {
		return nil, nil
	}
	var grid [][]*plot.Plot
	for i, pn := range panels {
		mem := plot.New()
		mem.Title.Text = pn.Title + ": memory"
		if i == 0 {
			mem.Title.Text = title + "\n" + mem.Title.Text
		}
		mem.Y.Label.Text = "MB (solid: memory.current, dashed: swap)"
		mem.X.Label.Text = "seconds since the start"
		ymax := max(pn.Limit, pn.Gate) / 1e6
		for _, s := range pn.Memory {
			l, err := line(s, 1e6)
			if err != nil {
				return nil, err
			}
			if l == nil {
				continue
			}
			for _, v := range s.Y {
				ymax = max(ymax, v/1e6)
			}
			mem.Add(l)
			if !s.Dashed {
				mem.Legend.Add(s.Name, l)
			}
		}
		for _, h := range []struct {
			v    float64
			name string
			c    color.Color
		}{{pn.Limit, "limit", color.RGBA{R: 200, A: 255}}, {pn.Gate, "gate", color.RGBA{R: 230, G: 140, A: 255}}} {
			if h.v <= 0 {
				continue
			}
			v := h.v / 1e6
			f := plotter.NewFunction(func(float64) float64 { return v })
			f.LineStyle.Color = h.c
			f.LineStyle.Dashes = []vg.Length{vg.Points(4), vg.Points(2)}
			mem.Add(f)
			mem.Legend.Add(h.name, f)
		}
		if pn.Contention[1] > pn.Contention[0] {
			for _, x := range pn.Contention {
				xx := x
				l, err := plotter.NewLine(plotter.XYs{{X: xx, Y: 0}, {X: xx, Y: ymax * 1.05}})
				if err != nil {
					return nil, err
				}
				l.LineStyle.Color = color.Gray{Y: 150}
				l.LineStyle.Dashes = []vg.Length{vg.Points(1), vg.Points(2)}
				mem.Add(l)
			}
		}
		mem.Y.Min, mem.Y.Max = 0, ymax*1.1
		mem.Legend.Top = true
		mem.Legend.Left = true
		mem.Add(plotter.NewGrid())

		st := plot.New()
		st.Title.Text = pn.Title + ": memory stall so far"
		st.Y.Label.Text = "s (memory.pressure some total)"
		st.X.Label.Text = "seconds since the start"
		for _, s := range pn.Stall {
			l, err := line(s, 1)
			if err != nil {
				return nil, err
			}
			if l == nil {
				continue
			}
			st.Add(l)
			st.Legend.Add(s.Name, l)
		}
		st.Y.Min = 0
		st.Legend.Top = true
		st.Legend.Left = true
		st.Add(plotter.NewGrid())
		grid = append(grid, []*plot.Plot{mem, st})
	}
	return saveGrid(grid, dir, base, 12*vg.Inch, vg.Length(len(panels))*3.2*vg.Inch)
}

func line(s Series, div float64) (*plotter.Line, error) {
	if len(s.T) == 0 {
		return nil, nil
	}
	xy := make(plotter.XYs, len(s.T))
	for j := range s.T {
		xy[j] = plotter.XY{X: s.T[j], Y: s.Y[j] / div}
	}
	l, err := plotter.NewLine(xy)
	if err != nil {
		return nil, fmt.Errorf("series %s: %w", s.Name, err)
	}
	l.LineStyle.Color = plotutil.Color(s.Color)
	l.LineStyle.Width = vg.Points(1)
	if s.Dashed {
		l.LineStyle.Dashes = []vg.Length{vg.Points(3), vg.Points(2)}
	}
	return l, nil
}

// Rate is one arm's k/n with its CI (figure 3).
type Rate struct {
	Label  string
	K, N   int
	Lo, Hi float64
}

// DrawRates draws figure 3: a share per category with its CI.
func DrawRates(dir, base, title, ylabel string, rs []Rate) ([]string, error) {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = ylabel
	var names []string
	var xy plotter.XYs
	var errs plotter.YErrors
	for i, r := range rs {
		names = append(names, r.Label+"\n"+strconv.Itoa(r.K)+"/"+strconv.Itoa(r.N))
		if r.N == 0 {
			continue
		}
		v := float64(r.K) / float64(r.N)
		xy = append(xy, plotter.XY{X: float64(i), Y: v})
		errs = append(errs, struct{ Low, High float64 }{v - r.Lo, r.Hi - v})
	}
	p.NominalX(names...)
	if len(xy) > 0 {
		sc, err := plotter.NewScatter(xy)
		if err != nil {
			return nil, err
		}
		sc.GlyphStyle.Shape = draw.CircleGlyph{}
		sc.GlyphStyle.Radius = vg.Points(4)
		eb, err := plotter.NewYErrorBars(struct {
			plotter.XYs
			plotter.YErrors
		}{xy, errs})
		if err != nil {
			return nil, err
		}
		p.Add(sc, eb)
	}
	p.Y.Min, p.Y.Max = 0, 1.05
	p.X.Min, p.X.Max = -0.5, float64(len(rs))-0.5
	p.Add(plotter.NewGrid())
	return save(p, dir, base, vg.Points(float64(200+100*len(rs))), 4*vg.Inch)
}

// Bars is a grouped bar chart (figure 4).
type Bars struct {
	Title, YLabel string
	Categories    []string
	Groups        []string
	Values        map[string][]float64 // group → one value per category
}

// DrawBars draws a grouped bar chart.
func DrawBars(dir, base string, b Bars) ([]string, error) {
	p := plot.New()
	p.Title.Text = b.Title
	p.Y.Label.Text = b.YLabel
	p.NominalX(b.Categories...)
	p.Legend.Top = true
	w := vg.Points(float64(60 / max(1, len(b.Groups))))
	for gi, g := range b.Groups {
		vals := make(plotter.Values, len(b.Categories))
		for i, v := range b.Values[g] {
			if !math.IsNaN(v) {
				vals[i] = v
			}
		}
		bc, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return nil, fmt.Errorf("%s group %s: %w", base, g, err)
		}
		bc.Color = plotutil.Color(gi)
		bc.LineStyle.Width = 0
		bc.Offset = w * vg.Length(float64(gi)-float64(len(b.Groups)-1)/2)
		p.Add(bc)
		p.Legend.Add(g, bc)
	}
	p.Y.Min = 0
	p.X.Min, p.X.Max = -0.5, float64(len(b.Categories))-0.5
	p.Add(plotter.NewGrid())
	return save(p, dir, base, vg.Points(float64(200+90*len(b.Categories))), 4*vg.Inch)
}
