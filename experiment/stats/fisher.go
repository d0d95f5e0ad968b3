package stats

import (
	"fmt"
	"math"

	moremath "github.com/aclements/go-moremath/stats"
)

// FisherResult is Fisher's exact test of a 2×2 table [[A B] [C D]]
// (rows: the two groups, columns: event, no event).
type FisherResult struct {
	A, B, C, D int
	P          float64 // two-sided: sum of the probabilities of all tables no more likely than the observed one (R's convention)
	PLess      float64 // one-sided: odds ratio < 1, P(X <= A)
	PGreater   float64 // one-sided: odds ratio > 1, P(X >= A)
}

// fisherRelErr is R's tolerance when comparing table probabilities with the
// observed one, so that tables of equal probability are not lost to rounding.
const fisherRelErr = 1 + 1e-7

// Fisher runs Fisher's exact test on [[a b] [c d]], conditioning on all
// margins. A is hypergeometric with population a+b+c+d, a+c successes and
// a+b draws (go-moremath's HypergeometicDist).
func Fisher(a, b, c, d int) (FisherResult, error) {
	if a < 0 || b < 0 || c < 0 || d < 0 {
		return FisherResult{}, fmt.Errorf("fisher: negative cell in [[%d %d] [%d %d]]", a, b, c, d)
	}
	r := FisherResult{A: a, B: b, C: c, D: d}
	h := moremath.HypergeometicDist{N: a + b + c + d, K: a + c, Draws: a + b}
	lo, hi := max(0, h.Draws-(h.N-h.K)), min(h.K, h.Draws)
	obs := h.PMF(float64(a))
	for x := lo; x <= hi; x++ {
		px := h.PMF(float64(x))
		if px <= obs*fisherRelErr {
			r.P += px
		}
		if x <= a {
			r.PLess += px
		}
		if x >= a {
			r.PGreater += px
		}
	}
	r.P, r.PLess, r.PGreater = math.Min(1, r.P), math.Min(1, r.PLess), math.Min(1, r.PGreater)
	return r, nil
}

// PValue returns the p-value for alt.
func (r FisherResult) PValue(alt Alternative) float64 {
	switch alt {
	case Less:
		return r.PLess
	case Greater:
		return r.PGreater
	}
	return r.P
}
