package stats

import (
	"math"
	"testing"
)

func TestWorstForKilled(t *testing.T) {
	inf := math.Inf(1)
	cases := []struct {
		name   string
		x      []float64
		killed []bool
		dir    Direction
		want   []float64
	}{
		{"stall: killed is +Inf", []float64{5, 3, math.NaN(), 7}, []bool{false, true, true, false}, LowerIsBetter, []float64{5, inf, inf, 7}},
		{"work: killed is -Inf", []float64{5, 3}, []bool{true, false}, HigherIsBetter, []float64{-inf, 3}},
	}
	for _, c := range cases {
		got, err := WorstForKilled(c.x, c.killed, c.dir)
		if err != nil {
			t.Fatal(err)
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Errorf("%s: %v, want %v", c.name, got, c.want)
			}
		}
	}
	if _, err := WorstForKilled([]float64{math.NaN()}, []bool{false}, LowerIsBetter); err == nil {
		t.Error("NaN in a surviving session accepted")
	}
	if _, err := WorstForKilled([]float64{1}, nil, LowerIsBetter); err == nil {
		t.Error("length mismatch accepted")
	}
}

func TestRanksKilledTieAtTheTop(t *testing.T) {
	// Two killed sessions (+Inf) share the two worst ranks, 4.5 each, above
	// every measured value, however large.
	x := []float64{1e12, math.Inf(1), 2, math.Inf(1), 2}
	got, err := Ranks(x)
	if err != nil {
		t.Fatal(err)
	}
	want := []float64{3, 4.5, 1.5, 4.5, 1.5} // R: rank(c(1e12, Inf, 2, Inf, 2))
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("Ranks(%v) = %v, want %v", x, got, want)
		}
	}
	if _, err := Ranks([]float64{math.NaN()}); err == nil {
		t.Error("NaN accepted")
	}
}

func TestTimeWeightedMean(t *testing.T) {
	cases := []struct {
		name string
		t, v []float64
		want float64
	}{
		// A burst of fast samples at 100 must not outweigh 9 s at 0:
		// the sample mean would be 75, the time-weighted mean is 5.5.
		{"burst", []float64{0, 0.5, 0.9, 1, 10}, []float64{100, 100, 100, 100, 0}, (100*1 + 50*9) / 10.0},
		{"constant", []float64{0, 1, 3}, []float64{4, 4, 4}, 4},
		{"ramp", []float64{0, 2}, []float64{0, 2}, 1},
		{"one sample", []float64{7}, []float64{3}, 3},
	}
	for _, c := range cases {
		got, err := TimeWeightedMean(c.t, c.v)
		if err != nil || !near(got, c.want, 1e-12) {
			t.Errorf("%s: %v %v, want %v", c.name, got, err, c.want)
		}
	}
	bad := [][2][]float64{
		{{0, 1}, {1}},
		{{}, {}},
		{{0, 0}, {1, 2}},
		{{0, 1}, {1, math.NaN()}},
	}
	for _, b := range bad {
		if _, err := TimeWeightedMean(b[0], b[1]); err == nil {
			t.Errorf("TimeWeightedMean(%v, %v) accepted", b[0], b[1])
		}
	}
}

func TestFisherPower(t *testing.T) {
	cases := []struct {
		n1, n2 int
		p1, p2 float64
		want   float64
	}{
		// 3/3 vs 0/3 is the most extreme table and has p = 0.1 (Fisher
		// 1935's smallest attainable p for 3+3): power 0 at alpha 0.05.
		{3, 3, 1, 0, 0},
		// 5/5 vs 0/5: p = 2/252 = 0.0079, always rejected.
		{5, 5, 1, 0, 1},
		// Kill risk 0.5 vs 0: 5/10 vs 0/10 has p = 0.0325 and 4/10 vs 0/10
		// p = 0.0867, so power = P(Bin(10, 0.5) >= 5) = 638/1024.
		{10, 10, 0.5, 0, 638.0 / 1024},
		// Same enumeration in R (sum of dbinom products over tables with
		// fisher.test p <= 0.05).
		{10, 10, 0.5, 0.1, 0.295055047702},
		{20, 20, 0.5, 0.1, 0.742388783911},
	}
	for _, c := range cases {
		got, err := FisherPower(c.n1, c.n2, c.p1, c.p2, 0.05)
		if err != nil || !near(got, c.want, 1e-9) {
			t.Errorf("FisherPower(%d, %d, %v, %v) = %v %v, want %v", c.n1, c.n2, c.p1, c.p2, got, err, c.want)
		}
	}
	if _, err := FisherPower(0, 10, 0.5, 0.1, 0.05); err == nil {
		t.Error("n1 = 0 accepted")
	}
}

func TestSignedRankPower(t *testing.T) {
	a, err := SignedRankPower(10, 1, 0.05, 4000, 7)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := SignedRankPower(10, 1, 0.05, 4000, 7)
	if a != b {
		t.Fatalf("not deterministic: %v then %v", a, b)
	}
	// The paired t-test's power at n = 10, d = 1 is 0.8031 (Cohen 1988;
	// R: power.t.test(n=10, delta=1, type="one.sample")). The signed-rank
	// test's asymptotic efficiency is 3/pi = 0.955 of it, and at n = 10 its
	// exact level is 0.0488, so its power is a little lower (R simulation
	// of 20000: 0.781). SE of 4000 simulations: 0.0066.
	if a < 0.75 || a > 0.81 {
		t.Errorf("power at n=10, d=1: %v, want about 0.78", a)
	}
	// No effect: the rejection rate is the exact level, 2*psignrank(8, 10)
	// = 0.0488 (R), within Monte Carlo error.
	z, _ := SignedRankPower(10, 0, 0.05, 4000, 7)
	if z > 0.0488+3*0.0034 {
		t.Errorf("size at effect 0: %v", z)
	}
	if _, err := SignedRankPower(0, 1, 0.05, 10, 1); err == nil {
		t.Error("n = 0 accepted")
	}
}

func TestRankTestsTreatInfAsLargest(t *testing.T) {
	// Killed sessions enter the rank tests as +Inf. Every rank test must
	// give the same U, p and Cliff's delta as with a finite value larger
	// than all others (ties among the killed kept).
	inf := math.Inf(1)
	a := []float64{3, inf, 5, inf, 2, 8}
	b := []float64{4, 6, 7, 1, 9, inf}
	af := []float64{3, 1e9, 5, 1e9, 2, 8}
	bf := []float64{4, 6, 7, 1, 9, 1e9}
	u, err := MannWhitney{}.Compare(a, b)
	uf, errf := MannWhitney{}.Compare(af, bf)
	if err != nil || errf != nil || u.U != uf.U || !near(u.P, uf.P, 1e-12) {
		t.Errorf("Mann-Whitney with Inf %+v %v, with 1e9 %+v %v", u, err, uf, errf)
	}
	if want := permutationP(af, bf); !near(u.P, want, 1e-9) {
		t.Errorf("p %v, permutation %v", u.P, want)
	}
	s, err := TwoSampleShift(a, b, 0.95)
	sf, _ := TwoSampleShift(af, bf, 0.95)
	if err != nil || s.Cliff != sf.Cliff || !near(s.Cliff, 2*u.U/36-1, 1e-12) {
		t.Errorf("Cliff's delta %v (1e9: %v), U %v", s.Cliff, sf.Cliff, u.U)
	}
}
