// Package stats owns the statistical tests the experiment reports, as pure
// functions: per-group summaries, the Wilson interval for k/n, Fisher's exact
// test, the Wilcoxon signed-rank and Mann-Whitney tests with Hodges-Lehmann
// shifts and CIs, Cliff's delta, Holm's adjustment, power, the time-weighted
// mean, and the worst-rank transform for killed sessions.
//
// Conventions: tests are two-sided unless an Alternative says otherwise;
// CIs are two-sided at the level given (the experiment uses 0.95); ties get
// midranks; rank tests follow R's wilcox.test defaults. Each hand-written
// test is checked against published values in *_test.go. See
// experiment/analysis/README.md for when each is used.
package stats

import (
	"errors"
	"fmt"
	"math"
	"slices"

	moremath "github.com/aclements/go-moremath/stats"
	"gonum.org/v1/gonum/stat"
	"gonum.org/v1/gonum/stat/distuv"
)

// Summary describes one sample. With n=1 the std and CI are NaN; with
// fewer than ~100 values "p99" is meaningless, so only p50 and max exist.
type Summary struct {
	N      int
	Mean   float64
	Std    float64 // sample standard deviation (n-1)
	CILow  float64 // two-sided 95% CI of the mean, Student's t with n-1 df
	CIHigh float64
	P50    float64 // empirical median (mean of the middle two for even n)
	Max    float64
}

// Summarize computes a Summary; NaN values are dropped first.
func Summarize(xs []float64) Summary {
	x := make([]float64, 0, len(xs))
	for _, v := range xs {
		if !math.IsNaN(v) {
			x = append(x, v)
		}
	}
	s := Summary{N: len(x), Mean: math.NaN(), Std: math.NaN(), CILow: math.NaN(), CIHigh: math.NaN(), P50: math.NaN(), Max: math.NaN()}
	if s.N == 0 {
		return s
	}
	slices.Sort(x)
	s.Mean = stat.Mean(x, nil)
	s.Max = x[len(x)-1]
	if n := len(x); n%2 == 1 {
		s.P50 = x[n/2]
	} else {
		s.P50 = (x[n/2-1] + x[n/2]) / 2
	}
	if s.N < 2 {
		return s
	}
	s.Std = stat.StdDev(x, nil)
	t := distuv.StudentsT{Mu: 0, Sigma: 1, Nu: float64(s.N - 1)}.Quantile(0.975)
	half := t * s.Std / math.Sqrt(float64(s.N))
	s.CILow, s.CIHigh = s.Mean-half, s.Mean+half
	return s
}

// UTest is the outcome of a two-sided Mann-Whitney U test of a against b.
type UTest struct {
	N1, N2 int
	U      float64 // U of the first sample: pairs a>b plus half the ties
	P      float64 // two-sided p-value; exact for small samples (ties included)
}

// Comparer compares two samples. It is an interface so the unmaintained
// go-moremath implementation can be swapped without touching callers.
type Comparer interface {
	Compare(a, b []float64) (UTest, error)
}

// MannWhitney is the go-moremath backed Comparer. It uses the exact U
// distribution (Klotz's algorithm with ties) for small samples.
type MannWhitney struct{}

// ErrAllEqual means every value in both samples is the same: p is 1.
var ErrAllEqual = errors.New("all values equal")

// Compare runs the two-sided test. Identical samples give U = n1*n2/2, p = 1.
func (MannWhitney) Compare(a, b []float64) (UTest, error) {
	r, err := moremath.MannWhitneyUTest(a, b, moremath.LocationDiffers)
	switch {
	case errors.Is(err, moremath.ErrSamplesEqual):
		return UTest{N1: len(a), N2: len(b), U: float64(len(a)*len(b)) / 2, P: 1}, nil
	case err != nil:
		return UTest{N1: len(a), N2: len(b), U: math.NaN(), P: math.NaN()}, fmt.Errorf("mann-whitney n1=%d n2=%d: %w", len(a), len(b), err)
	}
	return UTest{N1: r.N1, N2: r.N2, U: r.U, P: math.Min(1, r.P)}, nil
}
