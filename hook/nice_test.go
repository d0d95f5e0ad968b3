package hook

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// threadNices reads the nice value (field 19 of stat) of every thread.
func threadNices(t *testing.T) map[string]int {
	t.Helper()
	stats, err := filepath.Glob("/proc/self/task/*/stat")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // the thread exited
		}
		// Fields after the command name, which ends at the last ')'.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		n, err := strconv.Atoi(f[16])
		if err != nil {
			t.Fatalf("%s: nice %q: %v", p, f[16], err)
		}
		out[p] = n
	}
	return out
}

// Lowering the priority needs no privilege, so the test sets a positive
// value and checks that every thread, not only the caller's, has it.
func TestSetNiceAllThreads(t *testing.T) {
	want := 7
	t.Cleanup(func() { SetNice(0) }) // as root; otherwise the rest runs at 7, which only slows it
	if err := SetNice(want); err != nil {
		t.Fatal(err)
	}
	nices := threadNices(t)
	if len(nices) < 2 {
		t.Fatalf("read %d threads; the Go runtime runs several", len(nices))
	}
	for p, n := range nices {
		if n != want {
			t.Errorf("%s: nice %d, want %d", p, n, want)
		}
	}
}
