package stats

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"gonum.org/v1/gonum/stat/distuv"
)

// SignedRankResult is a Wilcoxon signed-rank test of paired differences
// against 0, with the Hodges-Lehmann estimate of the pseudo-median and its
// two-sided confidence interval (R's wilcox.test(d, conf.int=TRUE)).
type SignedRankResult struct {
	N      int     // non-zero differences used
	Zeros  int     // zero differences dropped (Wilcoxon's convention, as R)
	V      float64 // sum of the ranks of |d| over the positive differences
	P      float64
	Alt    Alternative
	Exact  bool   // exact null distribution (no ties, no zeros, N < ExactLimit)
	Method string // "exact" or the approximation used, for the report

	Estimate float64 // Hodges-Lehmann: median of the Walsh averages of the non-zero differences
	Lo, Hi   float64 // two-sided CI for the pseudo-median
	Conf     float64 // the CI's confidence level as achieved (see README)
}

// ExactLimit: below this many observations (per sample), rank tests use the
// exact distribution when there are no ties, as R does.
const ExactLimit = 50

// MethodExact and MethodNormal name the two ways a rank test's p-value and
// CI are computed.
const (
	MethodExact  = "exact"
	MethodNormal = "normal approximation (tie-corrected variance, continuity correction)"
)

// ErrNoData is returned when a test has no observations.
var ErrNoData = errors.New("no observations")

// SignedRank tests whether paired differences d are centred on 0.
//
// Conventions (those of R's wilcox.test with its defaults): zero differences
// are dropped (Wilcoxon's method), leaving N; ties in |d| get midranks. With
// N < ExactLimit, no ties and no zeros, the p-value and the CI come from the
// exact null distribution of V; otherwise from the normal approximation with
// the tie correction Σ(t³−t)/48 to the variance and a continuity correction
// of 0.5, and the CI is found by inverting that approximation. The CI is
// always two-sided at level conf. ±Inf differences (a session killed in one
// arm only) are allowed and take the extreme ranks; NaN is an error.
func SignedRank(d []float64, alt Alternative, conf float64) (SignedRankResult, error) {
	r := SignedRankResult{Alt: alt, P: math.NaN(), Estimate: math.NaN(), Lo: math.NaN(), Hi: math.NaN(), Conf: math.NaN()}
	if !(conf > 0 && conf < 1) {
		return r, fmt.Errorf("signed rank: confidence level %v not in (0,1)", conf)
	}
	var x []float64
	for i, v := range d {
		switch {
		case math.IsNaN(v):
			return r, fmt.Errorf("signed rank: difference %d is NaN", i)
		case v == 0:
			r.Zeros++
		default:
			x = append(x, v)
		}
	}
	r.N = len(x)
	if len(d) == 0 {
		return r, fmt.Errorf("signed rank: %w", ErrNoData)
	}
	if r.N == 0 {
		// Every pair tied: no evidence either way.
		r.P, r.Estimate, r.Method = 1, 0, "all differences zero"
		return r, nil
	}
	abs := make([]float64, len(x))
	for i, v := range x {
		abs[i] = math.Abs(v)
	}
	ranks, err := Ranks(abs)
	if err != nil {
		return r, fmt.Errorf("signed rank: %w", err)
	}
	for i, v := range x {
		if v > 0 {
			r.V += ranks[i]
		}
	}
	ties := tieCorrection(abs)
	r.Exact = r.N < ExactLimit && ties == 0 && r.Zeros == 0
	walsh := walshAverages(x)
	r.Estimate = medianSorted(walsh)
	if r.Exact {
		r.Method = MethodExact
		dist := newSignRankDist(r.N)
		r.P = dist.pValue(r.V, alt)
		qu := max(dist.quantile((1-conf)/2), 1)
		ql := r.N*(r.N+1)/2 - qu
		r.Lo, r.Hi = walsh[qu-1], walsh[ql]
		r.Conf = 1 - 2*dist.cdf(qu-1)
		return r, nil
	}
	r.Method = MethodNormal
	n := float64(r.N)
	sigma := math.Sqrt(n*(n+1)*(2*n+1)/24 - ties/48)
	r.P = normalP(r.V-n*(n+1)/4, sigma, alt)
	f := func(shift, zq float64) float64 { return signRankZ(x, shift) - zq }
	r.Lo, r.Hi, r.Conf = invertCI(f, x[argMin(x)], x[argMax(x)], uniqueFinite(walsh), conf, r.Estimate, true)
	return r, nil
}

// signRankZ is the continuity-corrected standardised signed-rank statistic
// of x − shift (zeros dropped, tie-corrected), the function R's
// wilcox.test inverts for its approximate CI.
func signRankZ(x []float64, shift float64) float64 {
	var abs []float64
	var pos []bool
	for _, v := range x {
		if d := v - shift; d != 0 {
			abs, pos = append(abs, math.Abs(d)), append(pos, d > 0)
		}
	}
	if len(abs) == 0 {
		return 0
	}
	ranks, _ := Ranks(abs) // abs has no NaN: x has none and shift is finite
	v := 0.0
	for i, p := range pos {
		if p {
			v += ranks[i]
		}
	}
	n := float64(len(abs))
	z := v - n*(n+1)/4
	sigma := math.Sqrt(n*(n+1)*(2*n+1)/24 - tieCorrection(abs)/48)
	return (z - 0.5*sign(z)) / sigma
}

// walshAverages returns the sorted (x_i + x_j)/2 for i <= j.
func walshAverages(x []float64) []float64 {
	w := make([]float64, 0, len(x)*(len(x)+1)/2)
	for i := range x {
		for j := i; j < len(x); j++ {
			w = append(w, mid(x[i], x[j]))
		}
	}
	slices.SortFunc(w, cmpFloat)
	return w
}

// normalP is the continuity-corrected normal p-value of a centred statistic
// z with standard deviation sigma.
func normalP(z, sigma float64, alt Alternative) float64 {
	var corr float64
	switch alt {
	case TwoSided:
		corr = 0.5 * sign(z)
	case Greater:
		corr = 0.5
	case Less:
		corr = -0.5
	}
	zs := (z - corr) / sigma
	switch alt {
	case Greater:
		return 1 - distuv.UnitNormal.CDF(zs)
	case Less:
		return distuv.UnitNormal.CDF(zs)
	}
	return math.Min(1, 2*math.Min(distuv.UnitNormal.CDF(zs), 1-distuv.UnitNormal.CDF(zs)))
}

func sign(v float64) float64 {
	switch {
	case v > 0:
		return 1
	case v < 0:
		return -1
	}
	return 0
}

// signRankDist is the exact null distribution of V for n untied, non-zero
// differences: every subset of the ranks 1..n is equally likely to be the
// positive one.
type signRankDist struct {
	n     int
	cum   []float64 // cum[q] = P(V <= q)
	total int       // n(n+1)/2
}

func newSignRankDist(n int) signRankDist {
	total := n * (n + 1) / 2
	c := make([]float64, total+1) // c[s] = number of subsets of {1..n} summing to s
	c[0] = 1
	for k := 1; k <= n; k++ {
		for s := total; s >= k; s-- {
			c[s] += c[s-k]
		}
	}
	all := math.Ldexp(1, n)
	cum := make([]float64, total+1)
	acc := 0.0
	for s, v := range c {
		acc += v
		cum[s] = acc / all
	}
	return signRankDist{n: n, cum: cum, total: total}
}

func (d signRankDist) cdf(q int) float64 {
	switch {
	case q < 0:
		return 0
	case q >= d.total:
		return 1
	}
	return d.cum[q]
}

// quantile is the smallest q with P(V <= q) >= p (R's qsignrank, with its
// small fuzz so that p landing exactly on a step is not missed).
func (d signRankDist) quantile(p float64) int {
	p -= 10 * epsilon
	for q := 0; q <= d.total; q++ {
		if d.cum[q] >= p {
			return q
		}
	}
	return d.total
}

const epsilon = 2.220446049250313e-16

func (d signRankDist) pValue(v float64, alt Alternative) float64 {
	q := int(math.Round(v))
	switch alt {
	case Less:
		return d.cdf(q)
	case Greater:
		return 1 - d.cdf(q-1)
	}
	var p float64
	if v > float64(d.total)/2 {
		p = 1 - d.cdf(q-1)
	} else {
		p = d.cdf(q)
	}
	return math.Min(1, 2*p)
}

func argMin(x []float64) int {
	i := 0
	for j, v := range x {
		if v < x[i] {
			i = j
		}
	}
	return i
}

func argMax(x []float64) int {
	i := 0
	for j, v := range x {
		if v > x[i] {
			i = j
		}
	}
	return i
}

func uniqueFinite(sorted []float64) []float64 {
	var u []float64
	for _, v := range sorted {
		if !math.IsInf(v, 0) && (len(u) == 0 || v != u[len(u)-1]) {
			u = append(u, v)
		}
	}
	return u
}

// invertCI finds the two-sided approximate confidence interval of a shift by
// inverting a continuity-corrected z statistic, as R's wilcox.test does with
// uniroot. f(shift, zq) is the statistic at shift minus zq; it is a
// non-increasing step function of shift that jumps only at the candidates
// (Walsh averages or pairwise differences), so each bound is the candidate
// where f crosses 0 (R's uniroot finds the same point to within 1e-4).
// lo and hi are the smallest and largest data values R searches between; a
// bound that is not reached within them is lo or hi. With widen (R does it
// for the one-sample CI only), when even finite lo and hi do not reach the
// requested level (small n), α is doubled until they do, and the achieved
// level is returned. When lo
// or hi is infinite (killed sessions) and the statistic never crosses the
// critical value, that bound is infinite.
func invertCI(f func(shift, zq float64) float64, lo, hi float64, cands []float64, conf, estimate float64, widen bool) (float64, float64, float64) {
	if len(cands) == 0 {
		// Every value infinite: the interval is the value itself.
		return lo, hi, math.NaN()
	}
	at := func(shift, zq float64) float64 {
		switch {
		case math.IsInf(shift, -1):
			shift = cands[0] - 1 - math.Abs(cands[0])
		case math.IsInf(shift, 1):
			shift = cands[len(cands)-1] + 1 + math.Abs(cands[len(cands)-1])
		}
		return f(shift, zq)
	}
	root := func(zq float64) float64 {
		if at(lo, zq) <= 0 {
			return lo
		}
		if at(hi, zq) >= 0 {
			return hi
		}
		for k, w := range cands {
			next := w + 1 + math.Abs(w)
			if k+1 < len(cands) {
				next = (w + cands[k+1]) / 2
			}
			if f(next, zq) <= 0 {
				return w
			}
		}
		return hi
	}
	if lo == hi {
		return lo, hi, math.NaN()
	}
	alpha := 1 - conf
	for widen && alpha < 1 {
		zq := distuv.UnitNormal.Quantile(1 - alpha/2)
		// An infinite end (killed sessions on one side only) is a real
		// bound, not a sign that n is too small: do not widen for it.
		if !math.IsInf(lo, 0) && at(lo, zq) < 0 || !math.IsInf(hi, 0) && at(hi, -zq) > 0 {
			alpha *= 2
			continue
		}
		break
	}
	if alpha >= 1 {
		return estimate, estimate, 0
	}
	zq := distuv.UnitNormal.Quantile(1 - alpha/2)
	return root(zq), root(-zq), 1 - alpha
}
