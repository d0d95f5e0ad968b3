package stats

import (
	"fmt"
	"math"
	"slices"
)

// Alternative is the alternative hypothesis of a test. Every test in this
// package defaults to TwoSided (the zero value); Less and Greater follow R:
// "less" means the first sample (or the differences) tends to be smaller.
type Alternative int

const (
	TwoSided Alternative = iota
	Less
	Greater
)

func (a Alternative) String() string {
	switch a {
	case Less:
		return "less"
	case Greater:
		return "greater"
	}
	return "two-sided"
}

// Direction says which end of a metric is the bad one.
type Direction int

const (
	// LowerIsBetter: stall, lateness, refaults. A killed session is +Inf.
	LowerIsBetter Direction = iota
	// HigherIsBetter: work done, throughput. A killed session is -Inf.
	HigherIsBetter
)

// Worst is the value a killed session takes for a metric of direction d:
// beyond every measured value, so rank tests give it the worst rank and
// killed sessions tie with each other.
func (d Direction) Worst() float64 {
	if d == HigherIsBetter {
		return math.Inf(-1)
	}
	return math.Inf(1)
}

// WorstForKilled returns a copy of x in which killed sessions take the worst
// value of direction d (see Direction.Worst). A killed session's own
// measurement, if any, is ignored: it did not run to the end, so it is not
// comparable. A NaN in a session that was not killed is an error (the metric
// was not measured), naming the index.
func WorstForKilled(x []float64, killed []bool, d Direction) ([]float64, error) {
	if len(x) != len(killed) {
		return nil, fmt.Errorf("worst rank: %d values but %d killed flags", len(x), len(killed))
	}
	out := make([]float64, len(x))
	for i, v := range x {
		switch {
		case killed[i]:
			out[i] = d.Worst()
		case math.IsNaN(v):
			return nil, fmt.Errorf("worst rank: value %d is NaN in a session that was not killed", i)
		default:
			out[i] = v
		}
	}
	return out, nil
}

// Ranks returns the ranks (1-based) of x, with ties given their mean rank
// ("midranks", R's rank(ties.method="average")). ±Inf are ordinary values, so
// all +Inf entries tie for the top ranks. NaN is an error naming the index.
func Ranks(x []float64) ([]float64, error) {
	idx := make([]int, len(x))
	for i, v := range x {
		if math.IsNaN(v) {
			return nil, fmt.Errorf("rank: value %d is NaN", i)
		}
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmpFloat(x[a], x[b]) })
	r := make([]float64, len(x))
	for i := 0; i < len(idx); {
		j := i
		for j+1 < len(idx) && x[idx[j+1]] == x[idx[i]] {
			j++
		}
		mid := float64(i+j)/2 + 1
		for k := i; k <= j; k++ {
			r[idx[k]] = mid
		}
		i = j + 1
	}
	return r, nil
}

// tieSizes returns the sizes of the groups of equal values in x (groups of
// one included), in ascending order of value.
func tieSizes(x []float64) []int {
	s := slices.Clone(x)
	slices.SortFunc(s, cmpFloat)
	var t []int
	for i := 0; i < len(s); {
		j := i
		for j+1 < len(s) && s[j+1] == s[i] {
			j++
		}
		t = append(t, j-i+1)
		i = j + 1
	}
	return t
}

// tieCorrection is Σ(t³ − t) over the tie groups of x.
func tieCorrection(x []float64) float64 {
	c := 0.0
	for _, t := range tieSizes(x) {
		c += float64(t*t*t - t)
	}
	return c
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// median of a sorted slice (mean of the middle two for even length). For
// ±Inf in the middle the mean can be ±Inf; Inf + -Inf is taken as 0 (the two
// worst values cancel, as in Walsh averages).
func medianSorted(s []float64) float64 {
	n := len(s)
	if n == 0 {
		return math.NaN()
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return mid(s[n/2-1], s[n/2])
}

// mid is (a+b)/2, with Inf + -Inf defined as 0.
func mid(a, b float64) float64 {
	if math.IsInf(a, 0) && math.IsInf(b, 0) && a != b {
		return 0
	}
	return a/2 + b/2
}
