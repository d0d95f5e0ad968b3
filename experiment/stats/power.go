package stats

import (
	"fmt"
	"math"
	"math/rand/v2"

	"gonum.org/v1/gonum/stat/distuv"
)

// FisherPower is the exact power of the two-sided Fisher test at level
// alpha for n1 and n2 sessions whose event (e.g. kill) probabilities are p1
// and p2: the probability, summed over every pair of binomial outcomes
// (k1, k2), of a table whose p-value is at most alpha. No simulation.
func FisherPower(n1, n2 int, p1, p2, alpha float64) (float64, error) {
	if n1 <= 0 || n2 <= 0 {
		return math.NaN(), fmt.Errorf("fisher power: need n1, n2 > 0, got %d, %d", n1, n2)
	}
	for _, p := range []float64{p1, p2, alpha} {
		if !(p >= 0 && p <= 1) {
			return math.NaN(), fmt.Errorf("fisher power: probability %v not in [0,1]", p)
		}
	}
	b1, b2 := binomPMF(n1, p1), binomPMF(n2, p2)
	power := 0.0
	for k1, q1 := range b1 {
		for k2, q2 := range b2 {
			if q1*q2 == 0 {
				continue
			}
			f, err := Fisher(k1, n1-k1, k2, n2-k2)
			if err != nil {
				return math.NaN(), err
			}
			if f.P <= alpha {
				power += q1 * q2
			}
		}
	}
	return power, nil
}

// binomPMF returns P(K = k) for k = 0..n, exact at p = 0 and p = 1.
func binomPMF(n int, p float64) []float64 {
	out := make([]float64, n+1)
	switch p {
	case 0:
		out[0] = 1
		return out
	case 1:
		out[n] = 1
		return out
	}
	b := distuv.Binomial{N: float64(n), P: p}
	for k := range out {
		out[k] = b.Prob(float64(k))
	}
	return out
}

// SignedRankPower estimates the power of the two-sided signed-rank test at
// level alpha for n pairs whose differences are Normal(effect, 1), i.e. a
// standardised shift of effect. It simulates sims data sets from a PCG
// generator seeded with seed, so the same arguments always give the same
// number; its Monte Carlo standard error is at most 0.5/sqrt(sims).
func SignedRankPower(n int, effect, alpha float64, sims int, seed uint64) (float64, error) {
	if n <= 0 || sims <= 0 {
		return math.NaN(), fmt.Errorf("signed-rank power: need n > 0 and sims > 0, got n=%d sims=%d", n, sims)
	}
	if !(alpha > 0 && alpha < 1) || math.IsNaN(effect) || math.IsInf(effect, 0) {
		return math.NaN(), fmt.Errorf("signed-rank power: alpha=%v effect=%v out of range", alpha, effect)
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	d := make([]float64, n)
	hits := 0
	for range sims {
		for i := range d {
			d[i] = effect + rng.NormFloat64()
		}
		r, err := SignedRank(d, TwoSided, 0.95)
		if err != nil {
			return math.NaN(), err
		}
		if r.P <= alpha {
			hits++
		}
	}
	return float64(hits) / float64(sims), nil
}
