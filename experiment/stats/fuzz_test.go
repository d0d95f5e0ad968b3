package stats

import (
	"encoding/binary"
	"math"
	"testing"
)

// floats decodes b into at most 40 values from a small grid (so that ties
// and zeros are common); a pair starting 0xff is +Inf and 0xfe is -Inf
// (killed in one arm).
func floats(b []byte) []float64 {
	var x []float64
	for i := 0; i+1 < len(b) && len(x) < 40; i += 2 {
		switch b[i] {
		case 0xff:
			x = append(x, math.Inf(1))
			continue
		case 0xfe:
			x = append(x, math.Inf(-1))
			continue
		}
		x = append(x, float64(int16(binary.LittleEndian.Uint16(b[i:])))/64)
	}
	return x
}

func FuzzSignedRank(f *testing.F) {
	f.Add([]byte{1, 0, 2, 0, 3, 0, 0xff, 0, 0, 0, 5, 0x80})
	f.Add([]byte{10, 0, 10, 0, 10, 0, 0xf0, 0xff, 0xfe, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		d := floats(b)
		r, err := SignedRank(d, TwoSided, 0.95)
		if len(d) == 0 {
			if err == nil {
				t.Fatal("empty input accepted")
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if !(r.P >= 0 && r.P <= 1) || r.N+r.Zeros != len(d) {
			t.Fatalf("%v: %+v", d, r)
		}
		if r.N > 0 && !(r.Lo <= r.Estimate && r.Estimate <= r.Hi) {
			t.Fatalf("%v: estimate outside its CI: %+v", d, r)
		}
	})
}

func FuzzTwoSampleShift(f *testing.F) {
	f.Add([]byte{1, 0, 2, 0, 3, 0}, []byte{0xff, 0, 2, 0})
	f.Fuzz(func(t *testing.T, a, b []byte) {
		x, y := floats(a), floats(b)
		s, err := TwoSampleShift(x, y, 0.95)
		if len(x) == 0 || len(y) == 0 {
			if err == nil {
				t.Fatal("empty sample accepted")
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if !(s.Lo <= s.Estimate && s.Estimate <= s.Hi) || s.Cliff < -1 || s.Cliff > 1 {
			t.Fatalf("%v vs %v: %+v", x, y, s)
		}
	})
}
