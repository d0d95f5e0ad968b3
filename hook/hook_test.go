package hook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentcg/agentcg/enroll"
	"github.com/agentcg/agentcg/enroll/enrolltest"
	"github.com/agentcg/agentcg/hook"
	"github.com/agentcg/agentcg/hook/hookstats"
	"github.com/agentcg/agentcg/policy"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

type fixture struct {
	tr      enrolltest.Tree
	pol     *enrolltest.Policy
	cfg     enroll.Config
	log     bytes.Buffer
	metrics string
}

func newFixture(t *testing.T) *fixture {
	tr, err := enrolltest.NewTree(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := enroll.DefaultConfig()
	cfg.CgroupRoot, cfg.ProcRoot, cfg.StateDir = tr.CgroupRoot, tr.ProcRoot, filepath.Join(t.TempDir(), "state")
	cfg.High.AllowAll = true
	return &fixture{tr: tr, pol: enrolltest.New(policy.ModeBPF), cfg: cfg, metrics: filepath.Join(t.TempDir(), "hook.prom")}
}

func (f *fixture) hook(timeout time.Duration) hook.Hook {
	return hook.Hook{
		Settings: hook.Settings{Config: f.cfg, FailModeKnown: true},
		Open:     func(context.Context, enroll.Config, bool) (policy.Policy, error) { return f.pol, nil },
		Timeout:  timeout,
		Log:      slog.New(slog.NewTextHandler(&f.log, nil)),
		Metrics:  f.metrics,
	}
}

func state(t *testing.T, id string, pid int, ann map[string]string) *bytes.Reader {
	t.Helper()
	b, err := json.Marshal(specs.State{Version: "1.2.0", ID: id, Status: specs.StateCreating, Pid: pid, Annotations: ann})
	if err != nil {
		t.Fatal(err)
	}
	return bytes.NewReader(b)
}

// runBounded fails the test instead of hanging if Run ignores its timeout.
func runBounded(t *testing.T, h hook.Hook, stage hook.Stage, in *bytes.Reader) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- h.Run(context.Background(), stage, in) }()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("hook did not return: its timeout does not bound it")
		return nil
	}
}

func TestAttachThenPoststop(t *testing.T) {
	f := newFixture(t)
	dir, err := f.tr.Cgroup("docker/c1")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.tr.Proc(42, "/docker/c1"); err != nil {
		t.Fatal(err)
	}
	h := f.hook(0)
	if err := runBounded(t, h, hook.CreateRuntime, state(t, "c1", 42, map[string]string{"agentcg.priority": "high"})); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(dir); err != nil { // poststop runs after the cgroup is gone
		t.Fatal(err)
	}
	if err := runBounded(t, h, hook.Poststop, state(t, "c1", 0, nil)); err != nil {
		t.Fatal(err)
	}
	real, _ := filepath.EvalSymlinks(filepath.Dir(dir))
	want := []enrolltest.Call{
		{Op: "attach", Dir: filepath.Join(real, "c1"), Priority: policy.High},
		{Op: "detach", Dir: filepath.Join(real, "c1")},
	}
	if got := f.pol.Calls(); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("calls %+v, want %+v", got, want)
	}
}

func TestOutsideRootRefused(t *testing.T) {
	for _, fm := range []enroll.FailMode{enroll.FailOpen, enroll.FailClosed} {
		t.Run(string(fm), func(t *testing.T) {
			f := newFixture(t)
			f.cfg.FailMode = fm
			outside := t.TempDir()
			if err := os.Symlink(outside, filepath.Join(f.tr.CgroupRoot, "evil")); err != nil {
				t.Fatal(err)
			}
			if err := f.tr.Proc(7, "/evil"); err != nil {
				t.Fatal(err)
			}
			err := runBounded(t, f.hook(0), hook.CreateRuntime, state(t, "c1", 7, map[string]string{"agentcg.priority": "low"}))
			if (err != nil) != (fm == enroll.FailClosed) {
				t.Fatalf("err = %v", err)
			}
			if fm == enroll.FailClosed && !errors.Is(err, enroll.ErrOutsideRoot) {
				t.Fatalf("err = %v, want ErrOutsideRoot", err)
			}
			if calls := f.pol.Calls(); len(calls) != 0 {
				t.Fatalf("policy called for a cgroup outside the root: %+v", calls)
			}
			if !strings.Contains(f.log.String(), "reason=cgroup_outside_root") {
				t.Fatalf("log does not give the reason:\n%s", f.log.String())
			}
		})
	}
}

func TestTimeout(t *testing.T) {
	stuck := make(chan struct{}) // never closed: a kernel call that never returns
	t.Cleanup(func() { close(stuck) })
	tests := []struct {
		name string
		open hook.OpenFunc
	}{
		{"policy open hangs", func(context.Context, enroll.Config, bool) (policy.Policy, error) {
			<-stuck
			return nil, errors.New("unreachable")
		}},
		{"attach hangs", nil},
	}
	for _, tc := range tests {
		for _, fm := range []enroll.FailMode{enroll.FailOpen, enroll.FailClosed} {
			t.Run(tc.name+"/"+string(fm), func(t *testing.T) {
				f := newFixture(t)
				f.cfg.FailMode = fm
				if _, err := f.tr.Cgroup("c1"); err != nil {
					t.Fatal(err)
				}
				if err := f.tr.Proc(9, "/c1"); err != nil {
					t.Fatal(err)
				}
				f.pol.Block = make(chan struct{})
				h := f.hook(50 * time.Millisecond)
				if tc.open != nil {
					h.Open = tc.open
				}
				err := runBounded(t, h, hook.CreateRuntime, state(t, "c1", 9, map[string]string{"agentcg.priority": "low"}))
				if fm == enroll.FailOpen && err != nil {
					t.Fatalf("fail-open hook returned %v", err)
				}
				if fm == enroll.FailClosed && (err == nil || !strings.Contains(err.Error(), "gave up") && !errors.Is(err, context.DeadlineExceeded)) {
					t.Fatalf("fail-closed hook returned %v, want a timeout error", err)
				}
				if !strings.Contains(f.log.String(), "deadline exceeded") {
					t.Fatalf("log does not say why:\n%s", f.log.String())
				}
			})
		}
	}
}

func TestNoAnnotationSkipsPolicy(t *testing.T) {
	f := newFixture(t)
	h := f.hook(0)
	h.Open = func(context.Context, enroll.Config, bool) (policy.Policy, error) {
		t.Error("policy opened for a container without the annotation")
		return f.pol, nil
	}
	if err := runBounded(t, h, hook.CreateRuntime, state(t, "c1", 1, map[string]string{"other": "x"})); err != nil {
		t.Fatal(err)
	}
}

func TestBadState(t *testing.T) {
	f := newFixture(t)
	f.cfg.FailMode = enroll.FailClosed
	if err := runBounded(t, f.hook(0), hook.CreateRuntime, bytes.NewReader([]byte("{not json"))); err == nil {
		t.Fatal("bad state accepted under fail_mode closed")
	}
	f.cfg.FailMode = enroll.FailOpen
	if err := runBounded(t, f.hook(0), hook.CreateRuntime, bytes.NewReader([]byte("{not json"))); err != nil {
		t.Fatalf("fail-open hook returned %v", err)
	}
}

func TestParseStage(t *testing.T) {
	for in, want := range map[string]hook.Stage{"createRuntime": hook.CreateRuntime, "prestart": hook.CreateRuntime, "attach": hook.CreateRuntime, "poststop": hook.Poststop, "detach": hook.Poststop} {
		if got, err := hook.ParseStage(in); err != nil || got != want {
			t.Errorf("ParseStage(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := hook.ParseStage("poststart"); err == nil {
		t.Error("poststart accepted")
	}
}

func TestPoststop(t *testing.T) {
	f := newFixture(t)
	if _, err := f.tr.Cgroup("c1"); err != nil {
		t.Fatal(err)
	}
	if err := f.tr.Proc(5, "/c1"); err != nil {
		t.Fatal(err)
	}
	f.pol = enrolltest.New(policy.ModeNative)
	var opened []bool
	h := f.hook(0)
	h.Settings.Config.Mode = policy.ModeAuto
	h.Open = func(_ context.Context, cfg enroll.Config, recorded bool) (policy.Policy, error) {
		opened = append(opened, recorded)
		if recorded && cfg.Mode != policy.ModeNative {
			t.Errorf("poststop opened mode %s, want the recorded native", cfg.Mode)
		}
		return f.pol, nil
	}
	// Never enrolled: poststop must not even open the policy.
	if err := runBounded(t, h, hook.Poststop, state(t, "other", 0, nil)); err != nil {
		t.Fatal(err)
	}
	if len(opened) != 0 {
		t.Fatalf("policy opened for a container that was never enrolled")
	}
	if err := runBounded(t, h, hook.CreateRuntime, state(t, "c1", 5, map[string]string{"agentcg.priority": "low"})); err != nil {
		t.Fatal(err)
	}
	if err := runBounded(t, h, hook.Poststop, state(t, "c1", 0, nil)); err != nil {
		t.Fatal(err)
	}
	if len(opened) != 2 || opened[0] || !opened[1] {
		t.Fatalf("opens (recorded flag) = %v, want [false true]", opened)
	}
	if calls := f.pol.Calls(); len(calls) != 2 || calls[1].Op != "detach" {
		t.Fatalf("calls %+v", calls)
	}
}

func TestTimeoutFromConfig(t *testing.T) {
	f := newFixture(t)
	f.cfg.FailMode = enroll.FailClosed
	f.cfg.HookTimeout = enroll.Duration(30 * time.Millisecond)
	h := f.hook(0)
	stuck := make(chan struct{})
	defer close(stuck)
	h.Open = func(context.Context, enroll.Config, bool) (policy.Policy, error) {
		<-stuck
		return nil, errors.New("unreachable")
	}
	err := runBounded(t, h, hook.CreateRuntime, state(t, "c1", 1, map[string]string{"agentcg.priority": "low"}))
	if err == nil || !strings.Contains(err.Error(), "gave up after 30ms") {
		t.Fatalf("err = %v, want the configured 30ms timeout", err)
	}
}

func (f *fixture) counts(t *testing.T) hookstats.Counts {
	t.Helper()
	c, err := hookstats.Read(f.metrics)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Every run is counted; a container that asked for a priority and runs
// without it is counted as such, and so is one the runtime was told to refuse.
func TestOutcomesCounted(t *testing.T) {
	f := newFixture(t)
	if _, err := f.tr.Cgroup("c1"); err != nil {
		t.Fatal(err)
	}
	if err := f.tr.Proc(5, "/c1"); err != nil {
		t.Fatal(err)
	}
	h := f.hook(0)
	run := func(h hook.Hook, stage hook.Stage, id string, ann map[string]string) error {
		return runBounded(t, h, stage, state(t, id, 5, ann))
	}
	if err := run(h, hook.CreateRuntime, "c1", map[string]string{"agentcg.priority": "low"}); err != nil {
		t.Fatal(err)
	}
	if err := run(h, hook.CreateRuntime, "c2", map[string]string{"agentcg.priority": "urgent"}); err != nil {
		t.Fatal(err)
	}
	if err := run(h, hook.CreateRuntime, "c3", nil); err != nil {
		t.Fatal(err)
	}
	h.Settings.Config.FailMode = enroll.FailClosed
	if err := run(h, hook.CreateRuntime, "c4", map[string]string{"agentcg.priority": "urgent"}); err == nil {
		t.Fatal("fail_mode closed: invalid value accepted")
	}
	if err := run(h, hook.Poststop, "c1", nil); err != nil {
		t.Fatal(err)
	}
	c := f.counts(t)
	want := map[hookstats.Key]uint64{
		{Stage: "createRuntime", Outcome: "attached"}:                          1,
		{Stage: "createRuntime", Outcome: "rejected", Reason: "invalid_value"}: 2,
		{Stage: "createRuntime", Outcome: "skipped"}:                           1,
		{Stage: "poststop", Outcome: "detached"}:                               1,
	}
	if len(c.Runs) != len(want) {
		t.Fatalf("runs %v, want %v", c.Runs, want)
	}
	for k, n := range want {
		if c.Runs[k] != n {
			t.Fatalf("runs %v, want %v", c.Runs, want)
		}
	}
	if c.WithoutPolicy["invalid_value"] != 1 || hookstats.Sum(c.WithoutPolicy) != 1 || c.Refused["invalid_value"] != 1 || hookstats.Sum(c.Refused) != 1 {
		t.Fatalf("without policy %v, refused %v", c.WithoutPolicy, c.Refused)
	}
	if d := c.Duration["createRuntime"]; d == nil || d.Count != 4 || d.Buckets[len(d.Buckets)-1] != 4 {
		t.Fatalf("duration histogram %+v", d)
	}
	if !strings.Contains(f.log.String(), "container runs without policy") || !strings.Contains(f.log.String(), "duration_ms=") {
		t.Fatalf("log:\n%s", f.log.String())
	}
}

func TestTimeoutCountedWithoutPolicy(t *testing.T) {
	f := newFixture(t)
	stuck := make(chan struct{})
	defer close(stuck)
	h := f.hook(20 * time.Millisecond)
	h.Open = func(context.Context, enroll.Config, bool) (policy.Policy, error) {
		<-stuck
		return nil, errors.New("unreachable")
	}
	if err := runBounded(t, h, hook.CreateRuntime, state(t, "c1", 1, map[string]string{"agentcg.priority": "low"})); err != nil {
		t.Fatal(err)
	}
	if c := f.counts(t); c.WithoutPolicy["timeout"] != 1 || c.Runs[hookstats.Key{Stage: "createRuntime", Outcome: "failed", Reason: "timeout"}] != 1 {
		t.Fatalf("counts %+v", c)
	}
}

// The hook door authorises high only by the container's resolved cgroup
// (high.cgroup_parents), never by an annotation: any caller of
// `docker run --annotation` can write io.kubernetes.pod.namespace.
func TestHighOnlyUnderCgroupParents(t *testing.T) {
	f := newFixture(t)
	f.cfg.High.AllowAll = false
	f.cfg.High.Namespaces = []string{"agents-prod"}
	f.cfg.High.CgroupParents = []string{"trusted"}
	for pid, cg := range map[int]string{5: "docker/forged", 6: "trusted/ok"} {
		if _, err := f.tr.Cgroup(cg); err != nil {
			t.Fatal(err)
		}
		if err := f.tr.Proc(pid, "/"+cg); err != nil {
			t.Fatal(err)
		}
	}
	forged := map[string]string{"agentcg.priority": "high", "io.kubernetes.pod.namespace": "agents-prod"}
	if err := runBounded(t, f.hook(0), hook.CreateRuntime, state(t, "forged", 5, forged)); err != nil {
		t.Fatal(err)
	}
	if calls := f.pol.Calls(); len(calls) != 0 {
		t.Fatalf("forged namespace annotation got an attach: %+v", calls)
	}
	if err := runBounded(t, f.hook(0), hook.CreateRuntime, state(t, "ok", 6, map[string]string{"agentcg.priority": "high"})); err != nil {
		t.Fatal(err)
	}
	if calls := f.pol.Calls(); len(calls) != 1 || calls[0].Priority != policy.High || filepath.Base(calls[0].Dir) != "ok" {
		t.Fatalf("calls %+v, want high on trusted/ok", calls)
	}
	c := f.counts(t)
	if c.Runs[hookstats.Key{Stage: "createRuntime", Outcome: "rejected", Reason: "not_allowed"}] != 1 || c.Total("createRuntime", "attached") != 1 {
		t.Fatalf("counts %+v", c.Runs)
	}
}

// With a config that cannot be used nothing is attached. An annotated
// container is refused unless the file says fail_mode: open explicitly;
// an unannotated one is never affected; poststop still detaches.
func TestBrokenConfig(t *testing.T) {
	f := newFixture(t)
	if _, err := f.tr.Cgroup("c1"); err != nil {
		t.Fatal(err)
	}
	if err := f.tr.Proc(5, "/c1"); err != nil {
		t.Fatal(err)
	}
	// Enroll c1 with the good config first, for the poststop case.
	if err := runBounded(t, f.hook(0), hook.CreateRuntime, state(t, "c1", 5, map[string]string{"agentcg.priority": "low"})); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	base := "state_dir: " + f.cfg.StateDir + "\n"
	tests := []struct {
		name   string
		body   string
		refuse bool
	}{
		{"unknown key, fail_mode unknown", base + "fail_mod: open\n", true},
		{"bad value of a known key, fail_mode closed", base + "fail_mode: closed\nmode: fast\n", true},
		{"typo elsewhere, fail_mode open said explicitly", base + "fail_mode: open\nhook_timout: 5s\n", false},
		{"bad fail_mode value", base + "fail_mode: opne\n", true},
		{"not YAML", "fail_mode: [open\n", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := hook.LoadSettings(write(tc.body))
			if s.Err == nil {
				t.Fatal("broken config accepted")
			}
			h := f.hook(0)
			h.Settings = s
			h.Open = func(context.Context, enroll.Config, bool) (policy.Policy, error) {
				t.Error("policy opened at createRuntime under a broken config")
				return f.pol, nil
			}
			err := runBounded(t, h, hook.CreateRuntime, state(t, "c9", 5, map[string]string{"agentcg.priority": "low"}))
			if (err != nil) != tc.refuse {
				t.Fatalf("annotated container: err = %v, want refused %v", err, tc.refuse)
			}
			if err != nil && !strings.Contains(err.Error(), "config") {
				t.Fatalf("refusal does not name the config: %v", err)
			}
			if err := runBounded(t, h, hook.CreateRuntime, state(t, "c8", 5, map[string]string{"other": "x"})); err != nil {
				t.Fatalf("unannotated container refused: %v", err)
			}
		})
	}
	// poststop under a broken config (state_dir still readable) detaches.
	s := hook.LoadSettings(write(base + "fail_mod: open\n"))
	h := f.hook(0)
	h.Settings = s
	if err := runBounded(t, h, hook.Poststop, state(t, "c1", 0, nil)); err != nil {
		t.Fatal(err)
	}
	if calls := f.pol.Calls(); len(calls) != 2 || calls[1].Op != "detach" {
		t.Fatalf("calls %+v, want attach then detach", calls)
	}
	c := f.counts(t)
	if c.Refused[string(hook.ReasonConfig)] != 4 || c.WithoutPolicy[string(hook.ReasonConfig)] != 1 {
		t.Fatalf("refused %v, without policy %v", c.Refused, c.WithoutPolicy)
	}
}

// A corrupt record does not wedge poststop: it is moved aside and counted.
func TestPoststopCorruptRecord(t *testing.T) {
	f := newFixture(t)
	if err := os.MkdirAll(f.cfg.StateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.cfg.StateDir, "c1.json"), []byte("{half"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := runBounded(t, f.hook(0), hook.Poststop, state(t, "c1", 0, nil)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(f.cfg.StateDir, "c1.json")); !os.IsNotExist(err) {
		t.Fatalf("corrupt record still in place: %v", err)
	}
	if c := f.counts(t); c.Runs[hookstats.Key{Stage: "poststop", Outcome: "failed", Reason: "record_unreadable"}] != 1 {
		t.Fatalf("counts %+v", c.Runs)
	}
}

// The timeout counts from the process start the runtime measures, not from
// Run: a hook that started (Start) longer ago than its timeout gives up on
// the policy at once, fails open, and is counted.
func TestTimeoutCountsFromStart(t *testing.T) {
	f := newFixture(t)
	if _, err := f.tr.Cgroup("c1"); err != nil {
		t.Fatal(err)
	}
	if err := f.tr.Proc(3, "/c1"); err != nil {
		t.Fatal(err)
	}
	h := f.hook(time.Second)
	h.Start = time.Now().Add(-time.Minute)
	if err := runBounded(t, h, hook.CreateRuntime, state(t, "c1", 3, map[string]string{"agentcg.priority": "low"})); err != nil {
		t.Fatal(err)
	}
	if c := f.counts(t); c.WithoutPolicy["timeout"] != 1 {
		t.Fatalf("counts %+v %v\n%s", c.RunList(), c.WithoutPolicy, f.log.String())
	}
}
