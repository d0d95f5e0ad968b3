package stats

import (
	"fmt"
	"math"
	"slices"

	moremath "github.com/aclements/go-moremath/stats"
)

// Shift is the two-sample Hodges-Lehmann estimate of the location shift of
// x relative to y (the median of all x_i − y_j) with its two-sided CI, as
// R's wilcox.test(x, y, conf.int=TRUE), and Cliff's delta.
type Shift struct {
	N1, N2   int
	Estimate float64
	Lo, Hi   float64
	Conf     float64 // achieved confidence level of the CI
	Exact    bool
	Method   string
	Cliff    float64 // Cliff's delta: P(x > y) − P(x < y), in [-1, 1]
}

// TwoSampleShift computes Shift. With both samples smaller than ExactLimit
// and no ties in the pooled sample, the CI comes from the exact
// Mann-Whitney distribution (go-moremath's UDist); otherwise from inverting
// the tie-corrected, continuity-corrected normal approximation. ±Inf values
// (killed sessions) are allowed; Inf − Inf counts as 0. NaN is an error.
func TwoSampleShift(x, y []float64, conf float64) (Shift, error) {
	s := Shift{N1: len(x), N2: len(y), Estimate: math.NaN(), Lo: math.NaN(), Hi: math.NaN(), Conf: math.NaN(), Cliff: math.NaN()}
	if len(x) == 0 || len(y) == 0 {
		return s, fmt.Errorf("two-sample shift n1=%d n2=%d: %w", len(x), len(y), ErrNoData)
	}
	if !(conf > 0 && conf < 1) {
		return s, fmt.Errorf("two-sample shift: confidence level %v not in (0,1)", conf)
	}
	for i, v := range x {
		if math.IsNaN(v) {
			return s, fmt.Errorf("two-sample shift: x[%d] is NaN", i)
		}
	}
	for i, v := range y {
		if math.IsNaN(v) {
			return s, fmt.Errorf("two-sample shift: y[%d] is NaN", i)
		}
	}
	s.Cliff = CliffsDelta(x, y)
	diffs := make([]float64, 0, len(x)*len(y))
	for _, a := range x {
		for _, b := range y {
			diffs = append(diffs, sub(a, b))
		}
	}
	slices.SortFunc(diffs, cmpFloat)
	s.Estimate = medianSorted(diffs)
	pooled := append(slices.Clone(x), y...)
	s.Exact = len(x) < ExactLimit && len(y) < ExactLimit && tieCorrection(pooled) == 0
	if s.Exact {
		s.Method = MethodExact
		u := moremath.UDist{N1: len(x), N2: len(y)}
		qu := max(uQuantile(u, (1-conf)/2), 1)
		ql := len(x)*len(y) - qu
		s.Lo, s.Hi = diffs[qu-1], diffs[ql]
		s.Conf = 1 - 2*u.CDF(float64(qu-1))
		return s, nil
	}
	s.Method = MethodNormal
	f := func(shift, zq float64) float64 { return mannWhitneyZ(x, y, shift) - zq }
	lo := sub(x[argMin(x)], y[argMax(y)])
	hi := sub(x[argMax(x)], y[argMin(y)])
	s.Lo, s.Hi, s.Conf = invertCI(f, lo, hi, uniqueFinite(diffs), conf, s.Estimate, false)
	return s, nil
}

// CliffsDelta is (#(x_i > y_j) − #(x_i < y_j)) / (n1·n2) (Cliff 1993), the
// probability that x is larger minus the probability that it is smaller.
// It equals 2U/(n1·n2) − 1 for the Mann-Whitney U of x.
func CliffsDelta(x, y []float64) float64 {
	if len(x) == 0 || len(y) == 0 {
		return math.NaN()
	}
	gt, lt := 0, 0
	for _, a := range x {
		for _, b := range y {
			switch {
			case a > b:
				gt++
			case a < b:
				lt++
			}
		}
	}
	return float64(gt-lt) / float64(len(x)*len(y))
}

// mannWhitneyZ is the continuity-corrected, tie-corrected standardised
// Mann-Whitney statistic of x − shift against y.
func mannWhitneyZ(x, y []float64, shift float64) float64 {
	pooled := make([]float64, 0, len(x)+len(y))
	for _, v := range x {
		pooled = append(pooled, v-shift)
	}
	pooled = append(pooled, y...)
	ranks, _ := Ranks(pooled) // no NaN: checked by the caller, shift finite
	n1, n2 := float64(len(x)), float64(len(y))
	w := 0.0
	for _, r := range ranks[:len(x)] {
		w += r
	}
	z := w - n1*(n1+1)/2 - n1*n2/2
	n := n1 + n2
	sigma := math.Sqrt(n1 * n2 / 12 * ((n + 1) - tieCorrection(pooled)/(n*(n-1))))
	if sigma == 0 {
		return 0
	}
	return (z - 0.5*sign(z)) / sigma
}

// uQuantile is the smallest u with P(U <= u) >= p (R's qwilcox).
func uQuantile(d moremath.UDist, p float64) int {
	p -= 10 * epsilon
	for q := 0; q < d.N1*d.N2; q++ {
		if d.CDF(float64(q)) >= p {
			return q
		}
	}
	return d.N1 * d.N2
}

// sub is a − b with Inf − Inf taken as 0 (two killed sessions tie).
func sub(a, b float64) float64 {
	if math.IsInf(a, 0) && a == b {
		return 0
	}
	return a - b
}
