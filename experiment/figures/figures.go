// Package figures draws the experiment's four figures with gonum/plot, as
// PNG and SVG, from data already analysed by package report.
package figures

import (
	"fmt"
	"image/color"
	"math"
	"path/filepath"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Point is a mean with its 95% CI; NaN means "no data".
type Point struct {
	Mean, Low, High float64
	N               int
}

// Completion is figure 1's input: per label, per role.
type Completion struct {
	Labels []string
	Roles  []string
	Points map[string]map[string]Point // label → role → point
}

// Series is one line in figure 2.
type Series struct {
	Name string
	T    []float64 // seconds since the run's start
	Y    []float64 // bytes
}

// Memory is figure 2's input for one run.
type Memory struct {
	Title     string
	Limit     float64 // parent memory.max in bytes (0 = none)
	Series    []Series
	ToolCalls []float64 // seconds since the run's start
}

// Bars is a grouped bar chart (figures 3 and 4).
type Bars struct {
	Title, YLabel string
	Categories    []string
	Groups        []string
	Values        map[string][]float64 // group → one value per category
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

// DrawCompletion draws figure 1: mean normalised completion with 95% CI,
// HIGH and LOW side by side for every arm.
func DrawCompletion(dir, base string, c Completion) ([]string, error) {
	p := plot.New()
	p.Title.Text = "Completion time normalised (HIGH: / solo T, LOW: / ideal), mean and 95% CI"
	p.Y.Label.Text = "normalised completion"
	p.Y.Tick.Marker = preciseTicks{}
	p.NominalX(c.Labels...)
	p.Legend.Top = true
	width := 0.6 / float64(max(1, len(c.Roles)))
	for ri, role := range c.Roles {
		var xy plotter.XYs
		var errs plotter.YErrors
		for li, l := range c.Labels {
			pt, ok := c.Points[l][role]
			if !ok || math.IsNaN(pt.Mean) {
				continue
			}
			x := float64(li) - 0.3 + width*(float64(ri)+0.5)
			xy = append(xy, plotter.XY{X: x, Y: pt.Mean})
			lo, hi := pt.Mean-pt.Low, pt.High-pt.Mean
			if math.IsNaN(lo) || math.IsNaN(hi) {
				lo, hi = 0, 0 // n=1: no interval
			}
			errs = append(errs, struct{ Low, High float64 }{lo, hi})
		}
		if len(xy) == 0 {
			continue
		}
		sc, err := plotter.NewScatter(xy)
		if err != nil {
			return nil, err
		}
		sc.GlyphStyle.Color = plotutil.Color(ri)
		sc.GlyphStyle.Shape = draw.CircleGlyph{}
		sc.GlyphStyle.Radius = vg.Points(4)
		eb, err := plotter.NewYErrorBars(struct {
			plotter.XYs
			plotter.YErrors
		}{xy, errs})
		if err != nil {
			return nil, err
		}
		eb.LineStyle.Color = plotutil.Color(ri)
		p.Add(sc, eb)
		p.Legend.Add(role, sc)
	}
	one := plotter.NewFunction(func(float64) float64 { return 1 })
	one.LineStyle.Dashes = []vg.Length{vg.Points(3), vg.Points(3)}
	one.LineStyle.Color = color.Gray{Y: 120}
	p.Add(one)
	p.Add(plotter.NewGrid())
	p.X.Min, p.X.Max = -0.5, float64(len(c.Labels))-0.5
	return save(p, dir, base, vg.Points(float64(160+110*len(c.Labels))), 4*vg.Inch)
}

// preciseTicks labels the default ticks with six significant digits:
// normalised completions cluster near 1, where the default labels round
// every tick to "1".
type preciseTicks struct{}

func (preciseTicks) Ticks(min, max float64) []plot.Tick {
	ts := plot.DefaultTicks{}.Ticks(min, max)
	for i := range ts {
		if ts[i].Label != "" {
			ts[i].Label = strconv.FormatFloat(ts[i].Value, 'g', 6, 64)
		}
	}
	return ts
}

// DrawMemory draws figure 2 for one run: memory.current of every cgroup,
// the parent limit and HIGH's tool-call starts as ticks at the bottom.
func DrawMemory(dir, base string, m Memory) ([]string, error) {
	p := plot.New()
	p.Title.Text = m.Title
	p.X.Label.Text = "seconds since the barrier"
	p.Y.Label.Text = "memory.current (MB)"
	p.Legend.Top = true
	ymax := m.Limit / 1e6
	for i, s := range m.Series {
		xy := make(plotter.XYs, len(s.T))
		for j := range s.T {
			xy[j] = plotter.XY{X: s.T[j], Y: s.Y[j] / 1e6}
			ymax = max(ymax, xy[j].Y)
		}
		if len(xy) == 0 {
			continue
		}
		l, err := plotter.NewLine(xy)
		if err != nil {
			return nil, fmt.Errorf("series %s: %w", s.Name, err)
		}
		l.LineStyle.Color = plotutil.Color(i)
		l.LineStyle.Width = vg.Points(1)
		p.Add(l)
		p.Legend.Add(s.Name, l)
	}
	if m.Limit > 0 {
		lim := plotter.NewFunction(func(float64) float64 { return m.Limit / 1e6 })
		lim.LineStyle.Color = color.RGBA{R: 200, A: 255}
		lim.LineStyle.Dashes = []vg.Length{vg.Points(4), vg.Points(2)}
		p.Add(lim)
		p.Legend.Add("parent memory.max", lim)
	}
	if len(m.ToolCalls) > 0 {
		xy := make(plotter.XYs, len(m.ToolCalls))
		for i, t := range m.ToolCalls {
			xy[i] = plotter.XY{X: t, Y: 0}
		}
		sc, err := plotter.NewScatter(xy)
		if err != nil {
			return nil, err
		}
		sc.GlyphStyle.Shape = draw.PyramidGlyph{}
		sc.GlyphStyle.Radius = vg.Points(2.5)
		sc.GlyphStyle.Color = color.Gray{Y: 60}
		p.Add(sc)
		p.Legend.Add("HIGH tool call", sc)
	}
	p.Y.Min, p.Y.Max = 0, ymax*1.1
	p.Add(plotter.NewGrid())
	return save(p, dir, base, 8*vg.Inch, 4*vg.Inch)
}

// DrawBars draws a grouped bar chart (figures 3 and 4).
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
	return save(p, dir, base, vg.Points(float64(160+90*len(b.Categories))), 4*vg.Inch)
}
