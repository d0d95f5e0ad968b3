package main

import "testing"

func TestDebVersion(t *testing.T) {
	for in, want := range map[string]string{
		"v1.2.3":           "1.2.3",
		"1.2.3-4-gabc1234": "1.2.3+4.gabc1234",
		"v0.1.0-dirty":     "0.1.0+dirty",
		"9452303-dirty":    "0.0.0~9452303.dirty",
		"bb81d22":          "0.0.0~bb81d22",
		"dev":              "0.0.0~dev",
	} {
		if got := debVersion(in); got != want {
			t.Errorf("debVersion(%q) = %q, want %q", in, got, want)
		}
	}
}
