package stats

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/stat/distuv"
)

// Proportion is k successes out of n with a two-sided confidence interval.
type Proportion struct {
	K, N   int
	P      float64 // k/n
	Lo, Hi float64 // Wilson score interval
	Conf   float64 // confidence level, e.g. 0.95
}

// Wilson returns k/n with the Wilson score interval (Wilson 1927; method 3
// of Newcombe 1998), without continuity correction. Unlike the Wald
// interval it stays inside [0, 1] and is not degenerate at k=0 or k=n:
// 0/10 gives [0, 0.278]. The bound at k=0 is exactly 0, at k=n exactly 1.
func Wilson(k, n int, conf float64) (Proportion, error) {
	if n <= 0 || k < 0 || k > n {
		return Proportion{}, fmt.Errorf("wilson: need 0 <= k <= n and n > 0, got k=%d n=%d", k, n)
	}
	if !(conf > 0 && conf < 1) {
		return Proportion{}, fmt.Errorf("wilson: confidence level %v not in (0,1)", conf)
	}
	z := zCrit(conf)
	nf, p := float64(n), float64(k)/float64(n)
	den := 1 + z*z/nf
	centre := (p + z*z/(2*nf)) / den
	half := z * math.Sqrt(p*(1-p)/nf+z*z/(4*nf*nf)) / den
	r := Proportion{K: k, N: n, P: p, Lo: centre - half, Hi: centre + half, Conf: conf}
	if k == 0 {
		r.Lo = 0
	}
	if k == n {
		r.Hi = 1
	}
	r.Lo, r.Hi = math.Max(0, r.Lo), math.Min(1, r.Hi)
	return r, nil
}

// zCrit is the two-sided standard normal critical value for conf.
func zCrit(conf float64) float64 {
	return distuv.UnitNormal.Quantile(1 - (1-conf)/2)
}

// DiffCI is Newcombe's hybrid score interval for p1 − p2 of two independent
// proportions (Newcombe 1998b, method 10), built from the two Wilson
// intervals. It inherits their good behaviour at 0/n and n/n.
func DiffCI(a, b Proportion) (lo, hi float64) {
	d := a.P - b.P
	lo = d - math.Sqrt((a.P-a.Lo)*(a.P-a.Lo)+(b.Hi-b.P)*(b.Hi-b.P))
	hi = d + math.Sqrt((a.Hi-a.P)*(a.Hi-a.P)+(b.P-b.Lo)*(b.P-b.Lo))
	return lo, hi
}
