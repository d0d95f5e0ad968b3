package stats

import (
	"math"
	"testing"
)

// Reference values in this file come from published examples. Where the
// published source gives fewer digits than we test, the extra digits are R
// 4.2.2's output for the same call (R's own documentation runs these
// examples), noted as "R:".

func TestWilsonNewcombe1998(t *testing.T) {
	// Newcombe (1998), Statistics in Medicine 17:857-872, Table I, method 3
	// (Wilson score, no continuity correction), 4 d.p.; more digits from
	// R: prop.test(k, n, correct=FALSE)$conf.int.
	cases := []struct {
		k, n   int
		lo, hi float64
	}{
		{81, 263, 0.2552885199, 0.3662095770},
		{15, 148, 0.06238639953, 0.16048724172},
		{0, 20, 0, 0.1611251581},
		{1, 29, 0.006113214293, 0.171755218793},
		{0, 10, 0, 0.2775327999},
		{10, 10, 0.7224672001, 1},
	}
	for _, c := range cases {
		p, err := Wilson(c.k, c.n, 0.95)
		if err != nil {
			t.Fatal(err)
		}
		if !near(p.Lo, c.lo, 1e-9) || !near(p.Hi, c.hi, 1e-9) || p.P != float64(c.k)/float64(c.n) {
			t.Errorf("Wilson(%d/%d) = [%v, %v], want [%v, %v]", c.k, c.n, p.Lo, p.Hi, c.lo, c.hi)
		}
	}
	// The bounds are exact at the edges, never outside [0,1].
	for n := 1; n <= 60; n++ {
		lo0, _ := Wilson(0, n, 0.95)
		hiN, _ := Wilson(n, n, 0.95)
		if lo0.Lo != 0 || hiN.Hi != 1 || lo0.Hi <= 0 || hiN.Lo >= 1 {
			t.Fatalf("n=%d: 0/n=%+v n/n=%+v", n, lo0, hiN)
		}
	}
	for _, bad := range [][2]int{{1, 0}, {-1, 5}, {6, 5}} {
		if _, err := Wilson(bad[0], bad[1], 0.95); err == nil {
			t.Errorf("Wilson(%d, %d) accepted", bad[0], bad[1])
		}
	}
}

func TestFisherPublished(t *testing.T) {
	cases := []struct {
		name               string
		a, b, c, d         int
		two, less, greater float64
	}{
		// Fisher's tea-tasting experiment (Agresti 1990, p. 59-66; R's
		// ?fisher.test): one-sided "greater" p = 0.2429; two-sided 0.4857.
		{"tea tasting", 3, 1, 1, 3, 0.4857142857, 0.9857142857, 0.2428571429},
		// Convictions of like-sex twins of criminals (Fisher 1962, in R's
		// ?fisher.test): "less" p = 0.0004652.
		{"convictions", 2, 15, 10, 3, 0.0005367241191, 0.0004651809434, 0.9999845190187},
		// 0/10 vs 2/10 kills cannot be told apart (R: fisher.test).
		{"0/10 vs 2/10", 0, 10, 2, 8, 0.4736842105, 0.2368421053, 1},
		{"0/10 vs 10/10", 0, 10, 10, 0, 1.082508822e-05, 5.412544112e-06, 1},
	}
	for _, c := range cases {
		r, err := Fisher(c.a, c.b, c.c, c.d)
		if err != nil {
			t.Fatal(err)
		}
		if !near(r.P, c.two, 1e-9) || !near(r.PLess, c.less, 1e-9) || !near(r.PGreater, c.greater, 1e-9) {
			t.Errorf("%s: got two=%v less=%v greater=%v", c.name, r.P, r.PLess, r.PGreater)
		}
		if r.PValue(TwoSided) != r.P || r.PValue(Less) != r.PLess || r.PValue(Greater) != r.PGreater {
			t.Errorf("%s: PValue does not select the matching p", c.name)
		}
	}
	if _, err := Fisher(-1, 0, 0, 0); err == nil {
		t.Error("negative cell accepted")
	}
}

// Hollander & Wolfe (1973), p. 29f: Hamilton depression scale factor IV
// before (y) and after (x) the first tranquilizer visit; R's ?wilcox.test
// example gives V = 40, p-value = 0.01953 (alternative "greater").
var hwX = []float64{1.83, 0.50, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.30}
var hwY = []float64{0.878, 0.647, 0.598, 2.05, 1.06, 1.29, 1.06, 3.14, 1.29}

func TestSignedRankHollanderWolfe(t *testing.T) {
	d := make([]float64, len(hwX))
	for i := range d {
		d[i] = hwX[i] - hwY[i]
	}
	g, err := SignedRank(d, Greater, 0.95)
	if err != nil {
		t.Fatal(err)
	}
	if g.V != 40 || !near(g.P, 0.01953125, 1e-12) || !g.Exact || g.Method != MethodExact || g.N != 9 {
		t.Errorf("greater: %+v, want V=40 p=0.01953125 exact", g)
	}
	// R: wilcox.test(x, y, paired=TRUE, conf.int=TRUE): p = 0.0390625,
	// 95% CI [0.010, 0.786], (pseudo)median 0.46. The exact interval's
	// achieved level is 1 - 2*psignrank(5, 9) = 0.9609375 (R reports the
	// requested 0.95).
	r, err := SignedRank(d, TwoSided, 0.95)
	if err != nil {
		t.Fatal(err)
	}
	if !near(r.P, 0.0390625, 1e-12) || !near(r.Lo, 0.010, 1e-9) || !near(r.Hi, 0.786, 1e-9) ||
		!near(r.Estimate, 0.46, 1e-9) || !near(r.Conf, 0.9609375, 1e-12) {
		t.Errorf("two-sided: %+v", r)
	}
	// Same data, y − x, "less": V = 5, p = 0.01953 (R).
	for i := range d {
		d[i] = -d[i]
	}
	l, _ := SignedRank(d, Less, 0.95)
	if l.V != 5 || !near(l.P, 0.01953125, 1e-12) {
		t.Errorf("less: %+v", l)
	}
}

func TestSignedRankApproximation(t *testing.T) {
	// Ties and a zero force the normal approximation. R 4.2.2:
	// wilcox.test(d, conf.int=TRUE) gives V = 42, p = 0.02414053863, CI
	// [0.49995606, 3.00006477] (uniroot, tol 1e-4: the jumps are at the
	// Walsh averages 0.5 and 3), level 0.95.
	d := []float64{1.5, -0.5, 2, 2, 3, 0, 4, -1, 2.5, 3}
	r, err := SignedRank(d, TwoSided, 0.95)
	if err != nil {
		t.Fatal(err)
	}
	if r.Exact || r.Method != MethodNormal || r.Zeros != 1 || r.N != 9 || r.V != 42 {
		t.Errorf("%+v", r)
	}
	if !near(r.P, 0.02414053863, 1e-9) || !near(r.Lo, 0.5, 1e-3) || !near(r.Hi, 3, 1e-3) || r.Conf != 0.95 {
		t.Errorf("p=%v CI=[%v, %v] conf=%v", r.P, r.Lo, r.Hi, r.Conf)
	}
	// HL is the median of the Walsh averages (R's approximate branch reports
	// a root of the corrected statistic instead, 2.00001 here).
	if r.Estimate != 2 {
		t.Errorf("estimate %v, want 2", r.Estimate)
	}
}

func TestSignedRankKilledIsWorst(t *testing.T) {
	// An infinite difference (killed in one arm only) ranks like any value
	// larger than the rest: R with 1e9 in place of Inf gives V = 30.5,
	// p = 0.09209091593.
	withInf := []float64{math.Inf(1), 2, -1, 3, math.Inf(1), 0.5, 4, -2}
	big := []float64{1e9, 2, -1, 3, 1e9, 0.5, 4, -2}
	a, err := SignedRank(withInf, TwoSided, 0.95)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := SignedRank(big, TwoSided, 0.95)
	if a.V != 30.5 || a.V != b.V || !near(a.P, 0.09209091593, 1e-9) || a.P != b.P {
		t.Errorf("inf: %+v; 1e9: %+v", a, b)
	}
	if !math.IsInf(a.Hi, 1) && a.Hi < 4 {
		t.Errorf("upper CI bound %v should reach the killed sessions", a.Hi)
	}
	// Six blocks killed in the first arm only (-Inf) and four finite
	// differences: p as R with -1e9 in place of -Inf (0.07613301161). The
	// killed always rank worst, so the lower bound is -Inf and the upper
	// bound is where V first drops below the critical value: the Walsh
	// average 1.75 of 1.5 and 2 (V goes from 9 to 8, z from -1.88 to
	// -1.98). R with -1e9 instead reports -5e8 there, because a finite
	// stand-in stops being the most extreme once the shift is large.
	ninf := math.Inf(-1)
	k, err := SignedRank([]float64{ninf, ninf, ninf, ninf, ninf, ninf, 1.5, 2, 3.5, 5}, TwoSided, 0.95)
	if err != nil || !near(k.P, 0.07613301161, 1e-9) || !math.IsInf(k.Lo, -1) || k.Hi != 1.75 || !math.IsInf(k.Estimate, -1) || k.Conf != 0.95 {
		t.Errorf("six killed: %+v %v", k, err)
	}
	if _, err := SignedRank([]float64{1, math.NaN()}, TwoSided, 0.95); err == nil {
		t.Error("NaN accepted")
	}
	if r, err := SignedRank([]float64{0, 0, 0}, TwoSided, 0.95); err != nil || r.P != 1 || r.N != 0 {
		t.Errorf("all zero: %+v %v", r, err)
	}
}

// Hollander & Wolfe (1973), p. 69f (R's ?wilcox.test): permeability
// constants of the human chorioamnion at term (x) and 12-26 weeks (y);
// W = 35, p-value = 0.1272 (alternative "greater").
var hwTermX = []float64{0.80, 0.83, 1.89, 1.04, 1.45, 1.38, 1.91, 1.64, 0.73, 1.46}
var hwEarlyY = []float64{1.15, 0.88, 0.90, 0.74, 1.21}

func TestTwoSampleShiftHollanderWolfe(t *testing.T) {
	// R: wilcox.test(x, y, conf.int=TRUE): difference in location 0.305,
	// 95% CI [-0.15, 0.76]; achieved level 1 - 2*pwilcox(8, 10, 5).
	s, err := TwoSampleShift(hwTermX, hwEarlyY, 0.95)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Exact || !near(s.Estimate, 0.305, 1e-9) || !near(s.Lo, -0.15, 1e-9) || !near(s.Hi, 0.76, 1e-9) || !near(s.Conf, 0.96003996, 1e-8) {
		t.Errorf("%+v", s)
	}
	// Cliff's delta = 2U/(n1 n2) − 1 with U = W = 35: 0.4.
	if !near(s.Cliff, 0.4, 1e-12) {
		t.Errorf("Cliff's delta %v, want 0.4", s.Cliff)
	}
	u, err := MannWhitney{}.Compare(hwTermX, hwEarlyY)
	if err != nil || u.U != 35 || !near(u.P, 0.2544122544, 1e-9) {
		t.Errorf("Mann-Whitney: %+v %v", u, err)
	}
}

func TestTwoSampleShiftAirquality(t *testing.T) {
	// R's ?wilcox.test: wilcox.test(Ozone ~ Month, data = airquality,
	// subset = Month %in% c(5, 8)) gives W = 127.5, p-value = 0.0001208
	// (ties: normal approximation). With conf.int=TRUE, R 4.2.2: CI
	// [-52.99999854, -14.99997898]; the median of the differences is -32.
	may := []float64{41, 36, 12, 18, 28, 23, 19, 8, 7, 16, 11, 14, 18, 14, 34, 6, 30, 11, 1, 11, 4, 32, 23, 45, 115, 37}
	aug := []float64{39, 9, 16, 78, 35, 66, 122, 89, 110, 44, 28, 65, 22, 59, 23, 31, 44, 21, 9, 45, 168, 73, 76, 118, 84, 85}
	s, err := TwoSampleShift(may, aug, 0.95)
	if err != nil {
		t.Fatal(err)
	}
	if s.Exact || s.Method != MethodNormal || s.Estimate != -32 || !near(s.Lo, -53, 1e-3) || !near(s.Hi, -15, 1e-3) || s.Conf != 0.95 {
		t.Errorf("%+v", s)
	}
	if !near(s.Cliff, 2*127.5/float64(26*26)-1, 1e-12) {
		t.Errorf("Cliff's delta %v", s.Cliff)
	}
}

func TestHolm(t *testing.T) {
	// Holm (1979), Scand. J. Statist. 6:65-70, step-down: the i-th smallest
	// of m p-values is multiplied by m-i+1, then made monotone. By hand and
	// R: p.adjust(c(0.01, 0.04, 0.03, 0.005), "holm") = 0.03 0.06 0.06 0.02.
	cases := []struct {
		in, want []float64
	}{
		{[]float64{0.01, 0.04, 0.03, 0.005}, []float64{0.03, 0.06, 0.06, 0.02}},
		// NaN does not count in m (R: p.adjust(c(0.02, NA, 0.5, 0.001, 0.04), "holm")).
		{[]float64{0.02, math.NaN(), 0.5, 0.001, 0.04}, []float64{0.06, math.NaN(), 0.5, 0.004, 0.08}},
		{[]float64{0.3, 0.6}, []float64{0.6, 0.6}},
		{[]float64{0.9}, []float64{0.9}},
		{nil, []float64{}},
	}
	for _, c := range cases {
		got := Holm(c.in)
		if len(got) != len(c.want) {
			t.Fatalf("Holm(%v) = %v", c.in, got)
		}
		for i := range got {
			if !(near(got[i], c.want[i], 1e-12) || math.IsNaN(got[i]) && math.IsNaN(c.want[i])) {
				t.Errorf("Holm(%v) = %v, want %v", c.in, got, c.want)
				break
			}
		}
	}
}

func TestDiffCINewcombe1998b(t *testing.T) {
	// Newcombe (1998b), Statistics in Medicine 17:873-890, Table II,
	// method 10 (hybrid score), 4 d.p.
	cases := []struct {
		k1, n1, k2, n2 int
		lo, hi         float64
	}{
		{56, 70, 48, 80, 0.0524, 0.3339},
		{9, 10, 3, 10, 0.1705, 0.8090},
		{0, 10, 0, 20, -0.1611, 0.2775},
		{10, 10, 0, 10, 0.6075, 1.0000},
	}
	for _, c := range cases {
		a, _ := Wilson(c.k1, c.n1, 0.95)
		b, _ := Wilson(c.k2, c.n2, 0.95)
		lo, hi := DiffCI(a, b)
		if !near(lo, c.lo, 5e-5) || !near(hi, c.hi, 5e-5) {
			t.Errorf("%d/%d - %d/%d: [%.5f, %.5f], want [%v, %v]", c.k1, c.n1, c.k2, c.n2, lo, hi, c.lo, c.hi)
		}
	}
}
