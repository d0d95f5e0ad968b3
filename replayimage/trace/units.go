package trace

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// unitBytes is the strict unit table. podman prints go-units decimal sizes
// (kB = 1000 B); the binary spellings are accepted because other collectors
// use them, and anything else is rejected rather than guessed.
var unitBytes = map[string]float64{
	"B":   1,
	"kB":  1e3,
	"KB":  1e3,
	"MB":  1e6,
	"GB":  1e9,
	"TB":  1e12,
	"KiB": 1 << 10,
	"MiB": 1 << 20,
	"GiB": 1 << 30,
}

// ParseSize parses one size such as "147.9MB" or "0B" into bytes, rounded to
// the nearest byte. The number must be plain decimal (no sign, exponent, hex,
// or Inf/NaN) and the unit must be in the table above.
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	n := numberPrefix(s)
	if n == 0 {
		return 0, fmt.Errorf("size %q: no number", s)
	}
	unit := strings.TrimSpace(s[n:])
	mult, ok := unitBytes[unit]
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit %q (want B, kB, KB, MB, GB, TB, KiB, MiB or GiB)", s, unit)
	}
	v, err := strconv.ParseFloat(s[:n], 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	b := math.Round(v * mult)
	if b >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return int64(b), nil
}

// numberPrefix returns the length of the leading "digits[.digits]" in s, or 0
// when s does not start with one.
func numberPrefix(s string) int {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0
	}
	if i < len(s) && s[i] == '.' {
		j := i + 1
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		if j == i+1 {
			return 0 // "12." is not a number
		}
		i = j
	}
	return i
}

// ParseUsage splits podman's "<used> / <limit>" into two byte counts.
func ParseUsage(s string) (used, limit int64, err error) {
	u, l, ok := strings.Cut(s, "/")
	if !ok {
		return 0, 0, fmt.Errorf("%q: want \"<used> / <limit>\"", s)
	}
	if used, err = ParseSize(u); err != nil {
		return 0, 0, fmt.Errorf("used: %w", err)
	}
	if limit, err = ParseSize(l); err != nil {
		return 0, 0, fmt.Errorf("limit: %w", err)
	}
	return used, limit, nil
}

// ParsePercent parses podman's "88.56%" into 88.56.
func ParsePercent(s string) (float64, error) {
	t := strings.TrimSpace(s)
	num, ok := strings.CutSuffix(t, "%")
	if !ok {
		return 0, fmt.Errorf("%q: want a number followed by %%", s)
	}
	num = strings.TrimSpace(num)
	if n := numberPrefix(num); n == 0 || n != len(num) {
		return 0, fmt.Errorf("%q: not a plain decimal percentage", s)
	}
	return strconv.ParseFloat(num, 64)
}
