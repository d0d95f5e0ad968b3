package stats

import (
	"math"
	"testing"
)

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

func TestSummarize(t *testing.T) {
	// Reference values from R: x <- c(2,4,4,4,5,5,7,9); mean(x); sd(x);
	// t.test(x)$conf.int; median(x).
	cases := []struct {
		name              string
		x                 []float64
		mean, std, lo, hi float64
		p50, max          float64
		n                 int
	}{
		{"eight", []float64{9, 2, 4, 4, 5, 4, 5, 7}, 5, 2.138090, 3.212505, 6.787495, 4.5, 9, 8},
		{"five", []float64{10, 12, 11, 13, 14}, 12, 1.581139, 10.036757, 13.963243, 12, 14, 5},
		{"nan dropped", []float64{1, math.NaN(), 3}, 2, 1.414214, -10.706205, 14.706205, 2, 3, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := Summarize(c.x)
			if s.N != c.n || !near(s.Mean, c.mean, 1e-9) || !near(s.Std, c.std, 1e-6) ||
				!near(s.CILow, c.lo, 1e-5) || !near(s.CIHigh, c.hi, 1e-5) || s.P50 != c.p50 || s.Max != c.max {
				t.Fatalf("Summarize(%v) = %+v", c.x, s)
			}
		})
	}
	if s := Summarize([]float64{3}); s.N != 1 || s.Mean != 3 || !math.IsNaN(s.Std) || !math.IsNaN(s.CILow) {
		t.Fatalf("n=1: %+v", s)
	}
	if s := Summarize(nil); s.N != 0 || !math.IsNaN(s.Mean) {
		t.Fatalf("empty: %+v", s)
	}
}

func TestMannWhitney(t *testing.T) {
	// Reference p-values from R wilcox.test(a, b, exact=TRUE) and, for
	// ties, from the exact permutation distribution (coin::wilcox_test
	// distribution="exact"), which is what Klotz's algorithm computes.
	cases := []struct {
		name string
		a, b []float64
		u, p float64
		tol  float64
	}{
		{"complete separation n=5", []float64{1, 2, 3, 4, 5}, []float64{6, 7, 8, 9, 10}, 0, 0.0079365, 1e-6},
		{"reversed", []float64{6, 7, 8, 9, 10}, []float64{1, 2, 3, 4, 5}, 25, 0.0079365, 1e-6},
		{"overlap", []float64{1, 3, 5, 7, 9}, []float64{2, 4, 6, 8, 10}, 10, 0.6904762, 1e-6},
		{"n=3 vs 3 separated", []float64{1, 2, 3}, []float64{4, 5, 6}, 0, 0.1, 1e-9},
		// Ties across groups: U counts a tie as one half.
		{"ties", []float64{1, 2, 2, 3, 4}, []float64{2, 4, 5, 6, 7}, 3.5, 0.07936508, 1e-6},
		{"identical", []float64{5, 5, 5}, []float64{5, 5, 5}, 4.5, 1, 0},
	}
	var c Comparer = MannWhitney{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := c.Compare(tc.a, tc.b)
			if err != nil {
				t.Fatal(err)
			}
			if r.U != tc.u || !near(r.P, tc.p, tc.tol) || r.N1 != len(tc.a) || r.N2 != len(tc.b) {
				t.Fatalf("got %+v, want U=%v p=%v", r, tc.u, tc.p)
			}
		})
	}
	if _, err := c.Compare(nil, []float64{1}); err == nil {
		t.Fatal("empty sample accepted")
	}
}

// permutationP is an independent brute-force exact two-sided p: the share of
// all relabellings whose U is at least as far from n1*n2/2 as the observed one.
func permutationP(a, b []float64) float64 {
	all := append(append([]float64{}, a...), b...)
	u := func(x, y []float64) float64 {
		s := 0.0
		for _, xi := range x {
			for _, yi := range y {
				switch {
				case xi > yi:
					s++
				case xi == yi:
					s += 0.5
				}
			}
		}
		return s
	}
	mid := float64(len(a)*len(b)) / 2
	obs := math.Abs(u(a, b) - mid)
	n, hit, tot := len(all), 0, 0
	for mask := 0; mask < 1<<n; mask++ {
		var x, y []float64
		for i := range n {
			if mask&(1<<i) != 0 {
				x = append(x, all[i])
			} else {
				y = append(y, all[i])
			}
		}
		if len(x) != len(a) {
			continue
		}
		tot++
		if math.Abs(u(x, y)-mid) >= obs-1e-9 {
			hit++
		}
	}
	return float64(hit) / float64(tot)
}

func TestMannWhitneyTiesAgainstPermutation(t *testing.T) {
	cases := [][2][]float64{
		{{1, 1, 2, 2, 3}, {2, 3, 3, 4, 4}},
		{{10, 10, 10, 12}, {10, 11, 12, 12, 13}},
		{{1.5, 2, 2, 2, 7}, {2, 2, 3, 3, 3}},
	}
	for _, c := range cases {
		r, err := MannWhitney{}.Compare(c[0], c[1])
		if err != nil {
			t.Fatal(err)
		}
		if want := permutationP(c[0], c[1]); !near(r.P, want, 1e-9) {
			t.Errorf("%v vs %v: p=%v, permutation p=%v", c[0], c[1], r.P, want)
		}
	}
}
