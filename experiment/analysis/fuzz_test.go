package analysis

import (
	"bytes"
	"encoding/csv"
	"testing"
)

// FuzzAnalyze builds a valid experiment from bytes (arms, kills, missing
// metrics, ties, missing runs) and checks that Analyze never fails on valid
// input, that the CSVs are well formed and that every HIGH session counts.
func FuzzAnalyze(f *testing.F) {
	f.Add([]byte{3, 0x1f, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
	f.Add([]byte{1, 0x05, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < 2 {
			return
		}
		next := func() byte {
			if len(b) == 0 {
				return 0
			}
			v := b[0]
			b = b[1:]
			return v
		}
		blocks, mask := int(next()%6)+1, next()
		var arms []string
		for i, a := range []string{ArmSolo, ArmUncontended, ArmStatic, ArmNoLimit, ArmHighOnly, ArmBPF, ArmBPFSeed} {
			if mask&(1<<i) != 0 {
				arms = append(arms, a)
			}
		}
		if len(arms) == 0 {
			return
		}
		var obs []Observation
		highs := map[string]int{}
		for blk := range blocks {
			for _, a := range arms {
				c := next()
				if c&0x80 != 0 { // run missing
					continue
				}
				m := map[string]float64{}
				if c&0x40 == 0 {
					m[MStallSome] = float64(c & 0x7)
				}
				obs = append(obs, Observation{Block: blk, Arm: a, Regime: "swap", Session: "high", Role: RoleHigh, Killed: c&0x20 != 0, Metrics: m})
				highs[a]++
				if a != ArmSolo {
					obs = append(obs, Observation{Block: blk, Arm: a, Regime: "swap", Session: "low", Role: RoleLow, Trace: []string{"A", "B"}[c>>3&1],
						Killed: c&0x10 != 0, Metrics: map[string]float64{MStallSome: float64(c & 0x3)}})
				}
			}
		}
		if len(obs) == 0 {
			return
		}
		r, err := Analyze(obs, Options{PowerSims: 50})
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range r.Groups[0].Headline {
			if h.Survived.N != highs[h.Arm] {
				t.Fatalf("%s: %d HIGH sessions counted, %d given", h.Arm, h.Survived.N, highs[h.Arm])
			}
		}
		for name, data := range r.CSV() {
			rows, err := csv.NewReader(bytes.NewReader(data)).ReadAll()
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			for i, row := range rows {
				if len(row) != len(Headers[name]) {
					t.Fatalf("%s row %d: %d columns", name, i, len(row))
				}
			}
		}
		if Narrative(r) == "" {
			t.Fatal("empty narrative")
		}
	})
}
