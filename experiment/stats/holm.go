package stats

import (
	"math"
	"slices"
)

// Holm adjusts p-values for multiple comparisons with Holm's step-down
// method (Holm 1979), as R's p.adjust(p, "holm"): sorted ascending, the i-th
// smallest of m becomes max over j <= i of min(1, (m-j+1)·p(j)). The result
// is in the input order. NaN entries stay NaN and do not count in m (as R,
// whose n defaults to the number of non-missing p-values).
func Holm(p []float64) []float64 {
	out := make([]float64, len(p))
	var idx []int
	for i, v := range p {
		out[i] = math.NaN()
		if !math.IsNaN(v) {
			idx = append(idx, i)
		}
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmpFloat(p[a], p[b]) })
	m, run := len(idx), 0.0
	for j, i := range idx {
		run = math.Max(run, math.Min(1, float64(m-j)*p[i]))
		out[i] = run
	}
	return out
}
