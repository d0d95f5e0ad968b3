package replay

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
	"unsafe"

	"github.com/agentcg/agentcg/replayimage/trace"
	"golang.org/x/sys/unix"
)

func mincore(t *testing.T, mem []byte) int {
	t.Helper()
	vec := make([]byte, (len(mem)+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&mem[0])), uintptr(len(mem)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatal(errno)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}

// Content pages carry random bytes in their first share of bytes and zeros
// after, and neighbouring pages differ.
func TestContentPages(t *testing.T) {
	ps := os.Getpagesize()
	a, err := NewArena(int64(8*ps), false)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	c, err := NewContent(0.25, ps, 7)
	if err != nil {
		t.Fatal(err)
	}
	a.SetContent(c)
	if err := a.Resize(context.Background(), 8); err != nil {
		t.Fatal(err)
	}
	if a.Populate() != PopulateContent || c.RandomBytes() != ps/4 {
		t.Fatalf("populate %s, random bytes %d", a.Populate(), c.RandomBytes())
	}
	for p := range 8 {
		page := a.mem[p*ps : (p+1)*ps]
		nonzero := 0
		for _, b := range page[:ps/4] {
			if b != 0 {
				nonzero++
			}
		}
		if nonzero < ps/4*9/10 {
			t.Errorf("page %d: %d of %d random bytes non-zero", p, nonzero, ps/4)
		}
		for i, b := range page[ps/4:] {
			if b != 0 {
				t.Fatalf("page %d byte %d: %d, want 0 after the random share", p, ps/4+i, b)
			}
		}
		if p > 0 && string(page[:64]) == string(a.mem[(p-1)*ps:(p-1)*ps+64]) {
			t.Errorf("page %d starts like page %d", p, p-1)
		}
	}
	for _, bad := range []float64{0, -0.1, 1.1} {
		if _, err := NewContent(bad, ps, 1); err == nil {
			t.Errorf("NewContent(%v) accepted", bad)
		}
	}
}

// The file arena holds exactly its target in the page cache, mapped.
func TestFileArenaIsPageExact(t *testing.T) {
	ps := os.Getpagesize()
	path := filepath.Join(t.TempDir(), "data")
	c, _ := NewContent(0.5, ps, 1)
	if err := WriteContentFile(path, int64(64*ps), c); err != nil {
		t.Fatal(err)
	}
	f, err := OpenFileArena(path, int64(64*ps))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, n := range []int{0, 10, 64, 3, 40, 0} {
		if err := f.Resize(context.Background(), n); err != nil {
			t.Fatal(err)
		}
		if got := mincore(t, f.mem[:n*ps+boolInt(n == 0)*ps]); n > 0 && got != n {
			t.Errorf("resize %d: %d pages mapped and cached", n, got)
		}
		if next := f.Retouch(0, 5); n > 0 && next != 5%n {
			t.Errorf("retouch from 0 over %d pages returned %d", n, next)
		}
	}
	if _, err := OpenFileArena(path, int64(65*ps)); err == nil {
		t.Error("a file smaller than the arena was accepted")
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// A windowed, looped, file-backed replay with re-reads: the split between
// anonymous and page-cache memory follows the share, the loop passes are
// counted, and the working set is re-read.
func TestRunRegimeOptions(t *testing.T) {
	ps := os.Getpagesize()
	tr := synthetic(t, []int64{8e6, 16e6, 24e6, 16e6, 8e6}, nil)
	path := filepath.Join(t.TempDir(), "data")
	if err := WriteContentFile(path, 32e6, nil); err != nil {
		t.Fatal(err)
	}
	res, err := Run(context.Background(), tr, Options{
		Speed: 5, MemScale: 1, RandomShare: 0.3, FileShare: 0.5, FilePath: path, RetouchPerS: 5,
		Window: trace.Window{From: 1, To: 4, Loop: true, Length: 7},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Complete || res.Passes != 3 {
		t.Fatalf("complete %v passes %d, want true 3", res.Complete, res.Passes)
	}
	want := int64(24e6+int64(ps)-1) / int64(ps) * int64(ps)
	if res.PeakBytes != want || res.FilePeakBytes < want/2-int64(ps) || res.FilePeakBytes > want/2+int64(ps) {
		t.Errorf("peak %d file peak %d, want %d and about half", res.PeakBytes, res.FilePeakBytes, want)
	}
	if res.IdealS != 7.0/5 || res.RetouchedBytes == 0 || res.RetouchS <= 0 || res.Populate != PopulateContent {
		t.Errorf("ideal %v retouched %d in %v s populate %s", res.IdealS, res.RetouchedBytes, res.RetouchS, res.Populate)
	}
	if res.PeakDueS != 1.0/5 || res.PeakReachedS < res.PeakDueS {
		t.Errorf("peak due %v reached %v", res.PeakDueS, res.PeakReachedS)
	}
}

// The start-file barrier: the replay says it is ready, waits for the start
// time to appear, and begins at that time plus its delay.
func TestStartFileBarrier(t *testing.T) {
	dir := t.TempDir()
	ready, start := filepath.Join(dir, "ready"), filepath.Join(dir, "go")
	done := make(chan *Result, 1)
	go func() {
		res, err := Run(context.Background(), synthetic(t, []int64{1e6, 2e6}, nil), Options{
			Speed: 100, MemScale: 1, ReadyFile: ready, StartFile: start, Delay: 100 * time.Millisecond})
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	for range 500 {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case <-done:
		t.Fatal("the replay started before the start file existed")
	case <-time.After(100 * time.Millisecond):
	}
	at := time.Now().Add(200 * time.Millisecond)
	if err := os.WriteFile(start, []byte(strconv.FormatFloat(float64(at.UnixNano())/1e9, 'f', 3, 64)), 0o644); err != nil {
		t.Fatal(err)
	}
	res := <-done
	if began := time.Unix(0, int64(res.StartUnix*1e9)); began.Before(at.Add(90 * time.Millisecond)) {
		t.Errorf("began %v, before the start %v plus the 100 ms delay", began, at)
	}
	if res.DelayS != 0.1 || !res.Complete {
		t.Errorf("delay %v complete %v", res.DelayS, res.Complete)
	}
}

// A looping replay ends, complete and marked stopped, when its stop file
// appears, long before its schedule ends.
func TestStopFile(t *testing.T) {
	stop := filepath.Join(t.TempDir(), "stop")
	go func() {
		time.Sleep(300 * time.Millisecond)
		os.WriteFile(stop, nil, 0o644)
	}()
	t0 := time.Now()
	res, err := Run(context.Background(), synthetic(t, []int64{1e6, 2e6, 3e6}, nil), Options{
		Speed: 1, MemScale: 1, StopFile: stop, Window: trace.Window{Loop: true, Length: 600}})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Complete || !res.Stopped || time.Since(t0) > 30*time.Second || res.Passes < 1 {
		t.Fatalf("complete %v stopped %v after %v, passes %d", res.Complete, res.Stopped, time.Since(t0), res.Passes)
	}
}
