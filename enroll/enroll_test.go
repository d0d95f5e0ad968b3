package enroll_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/agentcg/agentcg/enroll"
	"github.com/agentcg/agentcg/enroll/enrolltest"
	"github.com/agentcg/agentcg/policy"
)

func newTree(t *testing.T) enrolltest.Tree {
	t.Helper()
	tr, err := enrolltest.NewTree(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func mkdir(t *testing.T, tr enrolltest.Tree, rel string) string {
	t.Helper()
	d, err := tr.Cgroup(rel)
	if err != nil {
		t.Fatal(err)
	}
	real, err := filepath.EvalSymlinks(d)
	if err != nil {
		t.Fatal(err)
	}
	return real
}

func TestResolve(t *testing.T) {
	tr := newTree(t)
	kube := mkdir(t, tr, "kubepods.slice/kubepods-besteffort.slice/cri-containerd-abc.scope")
	docker := mkdir(t, tr, "docker/abc")
	bySlice := mkdir(t, tr, "system.slice/docker-abc.scope")
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(tr.CgroupRoot, "escape")); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(tr.Proc(10, "/docker/abc"))
	must(tr.Proc(11, "/../../../etc"))
	must(tr.Proc(12, "/escape"))
	must(tr.Proc(13, "/"))
	must(os.MkdirAll(filepath.Join(tr.ProcRoot, "14"), 0o755))
	must(os.WriteFile(filepath.Join(tr.ProcRoot, "14", "cgroup"), []byte("1:memory:/x\n"), 0o644))

	r := enroll.Resolver{Root: tr.CgroupRoot, ProcRoot: tr.ProcRoot}
	tests := []struct {
		name        string
		pid         int
		cgroupsPath string
		want        string
		wantErr     error
	}{
		{"proc 0:: line", 10, "", docker, nil},
		{"proc wins over cgroupsPath", 10, "system.slice:docker:abc", docker, nil},
		{"systemd form", 0, "kubepods-besteffort.slice:cri-containerd:abc", kube, nil},
		{"systemd empty slice", 0, ":docker:abc", bySlice, nil},
		{"cgroupfs form", 0, "/docker/abc", docker, nil},
		{"missing pid falls back", 99, "/docker/abc", docker, nil},
		{"v1-only proc falls back", 14, "/docker/abc", docker, nil},
		{"dotdot escape in proc", 11, "", "", enroll.ErrOutsideRoot},
		{"symlink escape in proc", 12, "", "", enroll.ErrOutsideRoot},
		{"root itself", 13, "", "", enroll.ErrOutsideRoot},
		{"dotdot escape in cgroupsPath", 0, "/../../..", "", enroll.ErrOutsideRoot},
		{"symlink escape in cgroupsPath", 0, "/escape", "", enroll.ErrOutsideRoot},
		{"nothing exists", 99, "/docker/nope", "", enroll.ErrCgroupUnresolved},
		{"nothing given", 0, "", "", enroll.ErrCgroupUnresolved},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := r.Resolve(tc.pid, tc.cgroupsPath)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Resolve = %q, %v; want error %v", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Resolve = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestFromCgroupsPath(t *testing.T) {
	tests := []struct{ in, want string }{
		{"system.slice:docker:abc", "/r/system.slice/docker-abc.scope"},
		{"a-b.slice:cri-containerd:x", "/r/a.slice/a-b.slice/cri-containerd-x.scope"},
		{"a.slice:p:child.slice", "/r/a.slice/child.slice"},
		{"/kubepods/pod1/x", "/r/kubepods/pod1/x"},
		{"-.slice:p:x", "/r/p-x.scope"},
	}
	for _, tc := range tests {
		got, err := enroll.FromCgroupsPath("/r", tc.in)
		if err != nil || got != tc.want {
			t.Errorf("FromCgroupsPath(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"noslice:p:x", "a--b.slice:p:x", "a/b.slice:p:x"} {
		if got, err := enroll.FromCgroupsPath("/r", bad); err == nil {
			t.Errorf("FromCgroupsPath(%q) = %q, want error", bad, got)
		}
	}
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name, in string
		check    func(enroll.Config) bool
		wantErr  string
	}{
		{"empty gives defaults", "", func(c enroll.Config) bool {
			return c.AnnotationKey == "agentcg.priority" && c.FailMode == enroll.FailOpen && c.Mode == policy.ModeAuto && c.Policy.PinDir == policy.DefaultPinDir
		}, ""},
		{"yaml", "annotation_key: x.prio\nfail_mode: closed\nmode: native\nhigh:\n  namespaces: [prod]\n  max_concurrent: 2\npolicy:\n  gate_pct: 70\n",
			func(c enroll.Config) bool {
				return c.AnnotationKey == "x.prio" && c.FailMode == enroll.FailClosed && c.Mode == policy.ModeNative &&
					c.High.Namespaces[0] == "prod" && c.High.MaxConcurrent == 2 && c.Policy.GatePct == 70 && c.Policy.DelayMaxMs == 200
			}, ""},
		{"json", `{"cgroup_root":"/x","high":{"labels":{"tier":"gold"}},"metrics_addr":":9100"}`,
			func(c enroll.Config) bool {
				return c.CgroupRoot == "/x" && c.High.Labels["tier"] == "gold" && c.MetricsAddr == ":9100"
			}, ""},
		{"unknown key", "annotation: x\n", nil, "not found"},
		{"bad fail mode", "fail_mode: maybe\n", nil, "fail_mode"},
		{"bad mode", "mode: ebpf\n", nil, "invalid mode"},
		{"relative root", "cgroup_root: sys\n", nil, "absolute"},
		{"bad policy", "policy: {delay_max_ms: 5000}\n", nil, "2000"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := enroll.ParseConfig(strings.NewReader(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !tc.check(c) {
				t.Fatalf("ParseConfig = %+v, %v", c, err)
			}
		})
	}
}

type fixture struct {
	tr  enrolltest.Tree
	pol *enrolltest.Policy
	cfg enroll.Config
}

func newFixture(t *testing.T) fixture {
	tr := newTree(t)
	cfg := enroll.DefaultConfig()
	cfg.CgroupRoot, cfg.ProcRoot, cfg.StateDir = tr.CgroupRoot, tr.ProcRoot, filepath.Join(t.TempDir(), "state")
	cfg.High.Namespaces = []string{"prod"}
	cfg.High.Labels = map[string]string{"agentcg/tier": "gold"}
	return fixture{tr: tr, pol: enrolltest.New(policy.ModeBPF), cfg: cfg}
}

func (f fixture) enroller(t *testing.T) *enroll.Enroller {
	e, err := enroll.New(f.cfg, f.pol, nil)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestEnroll(t *testing.T) {
	ann := func(v string) map[string]string { return map[string]string{"agentcg.priority": v} }
	tests := []struct {
		name     string
		c        enroll.Container
		failMode enroll.FailMode
		attachOK bool
		outcome  enroll.Outcome
		reason   enroll.Reason
		wantErr  bool
	}{
		{"high in allowed namespace", enroll.Container{Annotations: ann("high"), Namespace: "prod"}, enroll.FailOpen, true, enroll.Attached, "", false},
		{"high via label", enroll.Container{Annotations: ann("high"), Labels: map[string]string{"agentcg/tier": "gold"}}, enroll.FailOpen, true, enroll.Attached, "", false},
		{"high via namespace label", enroll.Container{Annotations: ann("high"), Labels: map[string]string{enroll.NamespaceKey: "prod"}}, enroll.FailOpen, true, enroll.Attached, "", false},
		{"low needs no allowlist", enroll.Container{Annotations: ann("low"), Namespace: "dev"}, enroll.FailOpen, true, enroll.Attached, "", false},
		{"no annotation", enroll.Container{Namespace: "prod"}, enroll.FailClosed, false, enroll.Skipped, "", false},
		{"invalid value open", enroll.Container{Annotations: ann("HIGH")}, enroll.FailOpen, false, enroll.Rejected, enroll.ReasonInvalidValue, false},
		{"invalid value closed", enroll.Container{Annotations: ann("urgent")}, enroll.FailClosed, false, enroll.Rejected, enroll.ReasonInvalidValue, true},
		{"high wrong namespace", enroll.Container{Annotations: ann("high"), Namespace: "dev"}, enroll.FailOpen, false, enroll.Rejected, enroll.ReasonNotAllowed, false},
		{"high wrong label value", enroll.Container{Annotations: ann("high"), Labels: map[string]string{"agentcg/tier": "silver"}}, enroll.FailClosed, false, enroll.Rejected, enroll.ReasonNotAllowed, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.cfg.FailMode = tc.failMode
			dir := mkdir(t, f.tr, "pods/c1")
			tc.c.ID, tc.c.CgroupsPath = "c1", "/pods/c1"
			res, err := f.enroller(t).Enroll(context.Background(), tc.c)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if res.Outcome != tc.outcome || res.Reason != tc.reason {
				t.Fatalf("result %s/%s (%v), want %s/%s", res.Outcome, res.Reason, res.Err, tc.outcome, tc.reason)
			}
			calls := f.pol.Calls()
			if tc.attachOK {
				if len(calls) != 1 || calls[0].Op != "attach" || calls[0].Dir != dir {
					t.Fatalf("calls %+v, want one attach to %s", calls, dir)
				}
			} else if len(calls) != 0 {
				t.Fatalf("calls %+v, want none", calls)
			}
			if tc.reason == enroll.ReasonInvalidValue && !strings.Contains(res.Err.Error(), "allowed values are high, low") {
				t.Fatalf("error %q does not name the allowed set", res.Err)
			}
		})
	}
}

func TestEnrollCgroupFailures(t *testing.T) {
	f := newFixture(t)
	e := f.enroller(t)
	c := enroll.Container{ID: "c1", CgroupsPath: "/gone", Annotations: map[string]string{"agentcg.priority": "low"}}
	res, err := e.Enroll(context.Background(), c)
	if err != nil || res.Outcome != enroll.Failed || res.Reason != enroll.ReasonCgroupNotFound {
		t.Fatalf("unresolvable: %+v, %v", res, err)
	}
	c.CgroupsPath = "/../../.."
	res, _ = e.Enroll(context.Background(), c)
	if res.Reason != enroll.ReasonCgroupOutside {
		t.Fatalf("outside: %+v", res)
	}
	if calls := f.pol.Calls(); len(calls) != 0 {
		t.Fatalf("calls %+v, want none", calls)
	}
}

func TestEnrollAttachFailure(t *testing.T) {
	for _, fm := range []enroll.FailMode{enroll.FailOpen, enroll.FailClosed} {
		f := newFixture(t)
		f.cfg.FailMode = fm
		mkdir(t, f.tr, "c1")
		f.pol.AttachErr = errors.New("no memcg_bpf_ops")
		e := f.enroller(t)
		res, err := e.Enroll(context.Background(), enroll.Container{ID: "c1", CgroupsPath: "/c1", Annotations: map[string]string{"agentcg.priority": "low"}})
		if res.Reason != enroll.ReasonAttachFailed || (err != nil) != (fm == enroll.FailClosed) {
			t.Fatalf("%s: %+v, %v", fm, res, err)
		}
		if recs, _ := e.Records().List(); len(recs) != 0 {
			t.Fatalf("%s: records left after failed attach: %+v", fm, recs)
		}
	}
}

func TestHighCap(t *testing.T) {
	f := newFixture(t)
	f.cfg.High.MaxConcurrent = 1
	e := f.enroller(t)
	ctx := context.Background()
	for _, id := range []string{"a", "b"} {
		mkdir(t, f.tr, id)
	}
	high := map[string]string{"agentcg.priority": "high"}
	if res, _ := e.Enroll(ctx, enroll.Container{ID: "a", CgroupsPath: "/a", Annotations: high, Namespace: "prod"}); res.Outcome != enroll.Attached {
		t.Fatalf("first high: %+v", res)
	}
	// Re-enrolling the same container does not count against the cap.
	if res, _ := e.Enroll(ctx, enroll.Container{ID: "a", CgroupsPath: "/a", Annotations: high, Namespace: "prod"}); res.Outcome != enroll.Attached {
		t.Fatalf("re-enroll: %+v", res)
	}
	if res, _ := e.Enroll(ctx, enroll.Container{ID: "b", CgroupsPath: "/b", Annotations: high, Namespace: "prod"}); res.Reason != enroll.ReasonHighCap {
		t.Fatalf("second high: %+v", res)
	}
	if _, err := e.Unenroll(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if res, _ := e.Enroll(ctx, enroll.Container{ID: "b", CgroupsPath: "/b", Annotations: high, Namespace: "prod"}); res.Outcome != enroll.Attached {
		t.Fatalf("high after unenroll: %+v", res)
	}
}

func TestUnenrollAfterCgroupGone(t *testing.T) {
	f := newFixture(t)
	dir := mkdir(t, f.tr, "c1")
	e := f.enroller(t)
	ctx := context.Background()
	if _, err := e.Enroll(ctx, enroll.Container{ID: "c1", CgroupsPath: "/c1", Annotations: map[string]string{"agentcg.priority": "low"}}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	// A second enroller (the poststop hook is another process) finds the record.
	res, err := f.enroller(t).Unenroll(ctx, "c1")
	if err != nil || res.Outcome != enroll.Detached || res.CgroupDir != dir {
		t.Fatalf("Unenroll = %+v, %v", res, err)
	}
	if res, err := e.Unenroll(ctx, "c1"); err != nil || res.Outcome != enroll.Skipped {
		t.Fatalf("second Unenroll = %+v, %v", res, err)
	}
	calls := f.pol.Calls()
	if len(calls) != 2 || calls[1] != (enrolltest.Call{Op: "detach", Dir: dir}) {
		t.Fatalf("calls %+v", calls)
	}
}

func TestReconcile(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	e := f.enroller(t)
	low := map[string]string{"agentcg.priority": "low"}
	var running []enroll.Container
	for _, id := range []string{"a", "b", "c"} {
		mkdir(t, f.tr, id)
		running = append(running, enroll.Container{ID: id, CgroupsPath: "/" + id, Annotations: low})
	}
	gone := mkdir(t, f.tr, "gone")
	if _, err := e.Enroll(ctx, enroll.Container{ID: "gone", CgroupsPath: "/gone", Annotations: low}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(gone); err != nil {
		t.Fatal(err)
	}
	f.pol.AddLink(policy.Link{CgroupID: 99, CgroupPath: filepath.Join(f.tr.CgroupRoot, "norecord"), Priority: policy.Low, Orphan: true})

	rep, err := e.Reconcile(ctx, running)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Enrolled) != 3 || len(rep.Stale) != 1 || len(rep.Orphans) != 1 {
		t.Fatalf("report %+v", rep)
	}
	links := f.pol.Links()
	if len(links) != 3 {
		t.Fatalf("links after reconcile: %+v", links)
	}
	recs, _ := e.Records().List()
	if len(recs) != 3 {
		t.Fatalf("records after reconcile: %+v", recs)
	}
}

// A Stop that arrives while a slow attach is in flight must not run before
// it: otherwise the attach pins after the detach and the link leaks.
func TestUnenrollWaitsForAttach(t *testing.T) {
	f := newFixture(t)
	mkdir(t, f.tr, "c1")
	f.pol.Block = make(chan struct{})
	e := f.enroller(t)
	ctx := context.Background()
	enrolled := make(chan error, 1)
	go func() {
		_, err := e.Enroll(ctx, enroll.Container{ID: "c1", CgroupsPath: "/c1", Annotations: map[string]string{"agentcg.priority": "low"}})
		enrolled <- err
	}()
	// Wait until the record exists, i.e. the attach is in flight.
	for {
		if _, ok, _ := e.Records().Get("c1"); ok {
			break
		}
		runtime.Gosched()
	}
	unenrolled := make(chan error, 1)
	go func() { _, err := e.Unenroll(ctx, "c1"); unenrolled <- err }()
	close(f.pol.Block)
	if err := <-enrolled; err != nil {
		t.Fatal(err)
	}
	if err := <-unenrolled; err != nil {
		t.Fatal(err)
	}
	if links := f.pol.Links(); len(links) != 0 {
		t.Fatalf("link leaked: %+v (calls %+v)", links, f.pol.Calls())
	}
}

// A config written with encoding/json (as the experiment does) must read
// back, durations included, and omitted fields keep their defaults.
func TestConfigJSONRoundTrip(t *testing.T) {
	in := enroll.DefaultConfig()
	in.HookTimeout = enroll.Duration(30 * time.Second)
	in.Policy.HighActiveWindowMs = 0 // explicit: throttle whatever HIGH does
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := enroll.ParseConfig(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if out.HookTimeout != in.HookTimeout || out.Policy.HighActiveWindowMs != 0 {
		t.Errorf("round trip: hook_timeout %v window %d", time.Duration(out.HookTimeout), out.Policy.HighActiveWindowMs)
	}
	omitted, err := enroll.ParseConfig(strings.NewReader("fail_mode: closed\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := policy.DefaultConfig().HighActiveWindowMs; omitted.Policy.HighActiveWindowMs != want {
		t.Errorf("omitted high_active_window_ms = %d, want the default %d", omitted.Policy.HighActiveWindowMs, want)
	}
}
