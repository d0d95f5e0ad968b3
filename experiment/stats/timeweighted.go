package stats

import (
	"fmt"
	"math"
)

// TimeWeightedMean is the mean of a series sampled at irregular times t
// (seconds, strictly increasing), weighting each value by the time it covers:
// the trapezoid integral of v over [t0, tn] divided by tn − t0. A sample-mean
// would over-weight bursts of fast sampling. One sample returns its value.
func TimeWeightedMean(t, v []float64) (float64, error) {
	if len(t) != len(v) {
		return math.NaN(), fmt.Errorf("time-weighted mean: %d times but %d values", len(t), len(v))
	}
	if len(t) == 0 {
		return math.NaN(), fmt.Errorf("time-weighted mean: no samples")
	}
	for i := range t {
		if math.IsNaN(v[i]) || math.IsInf(v[i], 0) || math.IsNaN(t[i]) || math.IsInf(t[i], 0) {
			return math.NaN(), fmt.Errorf("time-weighted mean: sample %d is not finite (t=%v v=%v)", i, t[i], v[i])
		}
		if i > 0 && t[i] <= t[i-1] {
			return math.NaN(), fmt.Errorf("time-weighted mean: time %d (%v) not after time %d (%v)", i, t[i], i-1, t[i-1])
		}
	}
	if len(t) == 1 {
		return v[0], nil
	}
	area := 0.0
	for i := 1; i < len(t); i++ {
		area += (v[i] + v[i-1]) / 2 * (t[i] - t[i-1])
	}
	return area / (t[len(t)-1] - t[0]), nil
}
