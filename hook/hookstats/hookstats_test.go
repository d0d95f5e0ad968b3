package hookstats_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentcg/agentcg/hook/hookstats"
	"github.com/agentcg/agentcg/internal/dirlock"
)

func TestRecordConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hook.prom")
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := hookstats.Event{Stage: "createRuntime", Outcome: "attached", Duration: time.Duration(i) * time.Millisecond}
			if i%4 == 0 {
				e = hookstats.Event{Stage: "createRuntime", Outcome: "failed", Reason: "timeout", WithoutPolicy: true, Duration: 6 * time.Second}
			}
			errs <- hookstats.Record(context.Background(), path, nil, e)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	c, err := hookstats.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Total("createRuntime", "attached"); got != 30 {
		t.Fatalf("attached %d, want 30", got)
	}
	if c.WithoutPolicy["timeout"] != 10 || c.Duration["createRuntime"].Count != n {
		t.Fatalf("counts %+v", c)
	}
	h := c.Duration["createRuntime"]
	// 30 runs of 0..39 ms (none at 6 s) are within 60 s, 30 within 0.05 s.
	if h.Buckets[len(h.Buckets)-1] != n || h.Buckets[3] != 30 {
		t.Fatalf("buckets %v", h.Buckets)
	}
}

// A run that cannot get the lock in time is not lost and does not wait:
// its event stays pending, Read counts it, and the next run folds it.
func TestRecordBusyLockKeepsTheEvent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hook.prom")
	unlock, err := dirlock.LockContext(context.Background(), filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := hookstats.Record(ctx, path, nil, hookstats.Event{Stage: "poststop", Outcome: "detached"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("file written without the lock: %v", err)
	}
	if c, err := hookstats.Read(path); err != nil || c.Total("poststop", "detached") != 1 {
		t.Fatalf("pending event not read: %+v, %v", c.RunList(), err)
	}
	unlock()
	if err := hookstats.Record(context.Background(), path, nil, hookstats.Event{Stage: "poststop", Outcome: "detached"}); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(hookstats.EventsDir(path)); len(ents) != 0 {
		t.Fatalf("events left after a fold: %v", ents)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := hookstats.Parse(f) // the file alone, as node_exporter reads it
	if err != nil || c.Total("poststop", "detached") != 2 {
		t.Fatalf("folded file: %+v, %v", c.RunList(), err)
	}
}

// A fold that wrote the file but died before deleting the events it
// counted does not make the next fold count them again.
func TestFoldCrashDoesNotDoubleCount(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hook.prom")
	if err := hookstats.Record(context.Background(), path, nil, hookstats.Event{Stage: "createRuntime", Outcome: "attached"}); err != nil {
		t.Fatal(err)
	}
	// Put back an event file the fold counted, as a crash before the
	// delete would have left it.
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var name string
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "# agentcg_folded_events "); ok {
			name = strings.Fields(rest)[0]
		}
	}
	if name == "" {
		t.Fatalf("no folded-events line:\n%s", b)
	}
	if err := os.WriteFile(filepath.Join(hookstats.EventsDir(path), name), []byte(`{"stage":"createRuntime","outcome":"attached"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if c, _ := hookstats.Read(path); c.Total("createRuntime", "attached") != 1 {
		t.Fatalf("Read counts a folded event twice: %+v", c.RunList())
	}
	if err := hookstats.Record(context.Background(), path, nil, hookstats.Event{Stage: "poststop", Outcome: "detached"}); err != nil {
		t.Fatal(err)
	}
	c, err := hookstats.Read(path)
	if err != nil || c.Total("createRuntime", "attached") != 1 || c.Total("poststop", "detached") != 1 {
		t.Fatalf("after the next fold: %+v, %v", c.RunList(), err)
	}
}

func TestCorruptFileStartsAnew(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hook.prom")
	if err := os.WriteFile(path, []byte("agentcg_hook_runs_total{stage=\"x\" 3 garbage\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := hookstats.Record(context.Background(), path, nil, hookstats.Event{Stage: "poststop", Outcome: "detached"})
	if err == nil || !strings.Contains(err.Error(), "started anew") {
		t.Fatalf("err = %v", err)
	}
	c, err := hookstats.Read(path)
	if err != nil || c.Total("poststop", "detached") != 1 {
		t.Fatalf("after restart: %+v, %v", c, err)
	}
}

func TestRoundTrip(t *testing.T) {
	var c hookstats.Counts
	c, _ = hookstats.Parse(strings.NewReader(""))
	c.Add(hookstats.Event{Stage: "createRuntime", Outcome: "rejected", Reason: "weird \"reason\"\n", Refused: true, Duration: time.Second})
	c.Add(hookstats.Event{Stage: "poststop", Outcome: "detached", Duration: time.Millisecond})
	var a, b bytes.Buffer
	if err := c.Write(&a); err != nil {
		t.Fatal(err)
	}
	d, err := hookstats.Parse(bytes.NewReader(a.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Write(&b); err != nil {
		t.Fatal(err)
	}
	if a.String() != b.String() {
		t.Fatalf("round trip differs:\n%s\n---\n%s", a.String(), b.String())
	}
	if d.Refused["weird \"reason\"\n"] != 1 {
		t.Fatalf("refused %v", d.Refused)
	}
}

// FuzzParse: any input either fails to parse or round-trips through Write.
func FuzzParse(f *testing.F) {
	var c hookstats.Counts
	c, _ = hookstats.Parse(strings.NewReader(""))
	c.Add(hookstats.Event{Stage: "createRuntime", Outcome: "failed", Reason: "timeout", WithoutPolicy: true, Duration: 7 * time.Second})
	var seed bytes.Buffer
	c.Write(&seed)
	f.Add(seed.String())
	f.Add("agentcg_hook_runs_total{stage=\"a\",outcome=\"b\",reason=\"\"} 1e3\n")
	f.Add("agentcg_hook_refused_total{reason=\"x\"} -1\n")
	f.Fuzz(func(t *testing.T, in string) {
		c, err := hookstats.Parse(strings.NewReader(in))
		if err != nil {
			return
		}
		var a bytes.Buffer
		if err := c.Write(&a); err != nil {
			t.Fatal(err)
		}
		d, err := hookstats.Parse(bytes.NewReader(a.Bytes()))
		if err != nil {
			t.Fatalf("Write output does not parse: %v\n%s", err, a.String())
		}
		var b bytes.Buffer
		d.Write(&b)
		if a.String() != b.String() {
			t.Fatalf("not stable:\n%s\n---\n%s", a.String(), b.String())
		}
	})
}
