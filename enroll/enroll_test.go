package enroll_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
	must(tr.Proc(15, "/docker/../../etc"))

	r := enroll.Resolver{Root: tr.CgroupRoot, ProcRoot: tr.ProcRoot}
	tests := []struct {
		name        string
		pid         int
		cgroupsPath string
		want        string
		wantErr     error
	}{
		{"proc 0:: line", 10, "", docker, nil},
		{"cgroupsPath wins over proc", 10, "system.slice:docker:abc", bySlice, nil},
		{"a pid of another pid namespace cannot redirect", 10, "kubepods-besteffort.slice:cri-containerd:abc", kube, nil},
		{"missing cgroupsPath falls back to proc", 10, "/docker/nope", docker, nil},
		{"systemd form", 0, "kubepods-besteffort.slice:cri-containerd:abc", kube, nil},
		{"systemd empty slice", 0, ":docker:abc", bySlice, nil},
		{"cgroupfs form", 0, "/docker/abc", docker, nil},
		{"missing pid falls back", 99, "/docker/abc", docker, nil},
		{"v1-only proc falls back", 14, "/docker/abc", docker, nil},
		{"proc line of another cgroup namespace falls back", 11, "/docker/abc", docker, nil},
		{"proc line of another cgroup namespace alone", 11, "", "", enroll.ErrCgroupUnresolved},
		{"dotdot inside a proc line", 15, "/docker/nope", "", enroll.ErrOutsideRoot},
		{"symlink escape in proc", 12, "", "", enroll.ErrOutsideRoot},
		{"root itself", 13, "", "", enroll.ErrOutsideRoot},
		{"dotdot escape in cgroupsPath", 0, "/../../..", "", enroll.ErrOutsideRoot},
		{"symlink escape in cgroupsPath", 0, "/escape", "", enroll.ErrOutsideRoot},
		{"dotdot in systemd name", 0, "system.slice:docker:../../x", "", enroll.ErrOutsideRoot},
		{"dotdot in systemd prefix", 0, "system.slice:..:abc", "", enroll.ErrOutsideRoot},
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
		{"kubepods//pod1/./x", "/r/kubepods/pod1/x"},
		{"-.slice:p:x", "/r/p-x.scope"},
	}
	for _, tc := range tests {
		got, err := enroll.FromCgroupsPath("/r", tc.in)
		if err != nil || got != tc.want {
			t.Errorf("FromCgroupsPath(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	escapes := []string{"a.slice:..:x", "a.slice:p:..", "a.slice:p:../x", "a.slice:p/q:x", "../a.slice:p:x", "a.slice:p:x/..", "..:p:x", "/a/../../b", "/", ""}
	for _, bad := range escapes {
		if got, err := enroll.FromCgroupsPath("/r", bad); !errors.Is(err, enroll.ErrOutsideRoot) {
			t.Errorf("FromCgroupsPath(%q) = %q, %v; want ErrOutsideRoot", bad, got, err)
		}
	}
	for _, bad := range []string{"noslice:p:x", "a--b.slice:p:x", "a.slice:p:"} {
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
			return c.AnnotationKey == "agentcg.priority" && c.FailMode == enroll.FailOpen && c.Mode == policy.ModeAuto &&
				c.Policy.PinDir == policy.DefaultPinDir && c.High.Cap() == enroll.DefaultMaxHigh
		}, ""},
		{"yaml", "annotation_key: x.prio\nfail_mode: closed\nmode: native\nhigh:\n  namespaces: [prod]\n  max_concurrent: 2\npolicy:\n  gate_pct: 70\n",
			func(c enroll.Config) bool {
				return c.AnnotationKey == "x.prio" && c.FailMode == enroll.FailClosed && c.Mode == policy.ModeNative &&
					c.High.Namespaces[0] == "prod" && c.High.Cap() == 2 && c.Policy.GatePct == 70 && c.Policy.DelayMaxMs == 200
			}, ""},
		{"explicit zero cap means none", "high: {max_concurrent: 0}\n", func(c enroll.Config) bool { return c.High.Cap() == 0 }, ""},
		{"omitted cap keeps the default", "high: {namespaces: [a]}\n", func(c enroll.Config) bool { return c.High.Cap() == enroll.DefaultMaxHigh }, ""},
		{"json", `{"cgroup_root":"/x","high":{"pod_labels":{"tier":"gold"},"trust_pod_labels":true,"cgroup_parents":["agents-high.slice","user.slice/user-1001.slice"]},"metrics_addr":"127.0.0.1:9100"}`,
			func(c enroll.Config) bool {
				return c.CgroupRoot == "/x" && c.High.PodLabels["tier"] == "gold" && c.High.TrustPodLabels &&
					len(c.High.CgroupParents) == 2 && c.MetricsAddr == "127.0.0.1:9100"
			}, ""},
		{"old labels allowlist", `{"high":{"labels":{"tier":"gold"}}}`, nil, "high.labels is no longer accepted"},
		{"pod labels without trust", "high: {pod_labels: {tier: gold}}\n", nil, "trust_pod_labels"},
		{"absolute cgroup parent", "high: {cgroup_parents: [/agents.slice]}\n", nil, "high.cgroup_parents[0]"},
		{"dotdot cgroup parent", "high: {cgroup_parents: [a.slice, ../x]}\n", nil, "high.cgroup_parents[1]"},
		{"negative cap", "high: {max_concurrent: -1}\n", nil, "must not be negative"},
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

func TestEffectiveAnnotation(t *testing.T) {
	const k = "agentcg.priority"
	ann := map[string]string{k: "low", k + "/pod": "low", k + "/container.agent": "high"}
	tests := []struct {
		name    string
		ann     map[string]string
		ctr     string
		want    string
		wantKey string
	}{
		{"container key wins", ann, "agent", "high", k + "/container.agent"},
		{"other container gets the pod key", ann, "sidecar", "low", k + "/pod"},
		{"no name skips the container key", ann, "", "low", k + "/pod"},
		{"plain key last", map[string]string{k: "low", k + "/container.agent": "high"}, "sidecar", "low", k},
		{"none", map[string]string{"other": "x"}, "agent", "", ""},
	}
	for _, tc := range tests {
		v, key, ok := enroll.EffectiveAnnotation(tc.ann, k, tc.ctr)
		if v != tc.want || key != tc.wantKey || ok != (tc.wantKey != "") {
			t.Errorf("%s: = %q, %q, %v; want %q, %q", tc.name, v, key, ok, tc.want, tc.wantKey)
		}
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
	cfg.High.CgroupParents = []string{"agents-high.slice"}
	return fixture{tr: tr, pol: enrolltest.New(policy.ModeBPF), cfg: cfg}
}

func (f fixture) enroller(t *testing.T, opts ...enroll.Option) *enroll.Enroller {
	e, err := enroll.New(f.cfg, f.pol, nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func ann(v string) map[string]string { return map[string]string{"agentcg.priority": v} }

func TestEnroll(t *testing.T) {
	tests := []struct {
		name      string
		c         enroll.Container
		cgroup    string // relative; default pods/c1
		trust     bool   // high.trust_pod_labels with pod_labels {agentcg/tier: gold}
		failMode  enroll.FailMode
		attachOK  bool
		outcome   enroll.Outcome
		reason    enroll.Reason
		wantErr   bool
		errSubstr string
	}{
		{name: "high in allowed namespace", c: enroll.Container{Door: enroll.DoorNRI, Annotations: ann("high"), Namespace: "prod"}, attachOK: true, outcome: enroll.Attached},
		{name: "low needs no allowlist", c: enroll.Container{Door: enroll.DoorNRI, Annotations: ann("low"), Namespace: "dev"}, attachOK: true, outcome: enroll.Attached},
		{name: "no annotation", c: enroll.Container{Door: enroll.DoorNRI, Namespace: "prod"}, failMode: enroll.FailClosed, outcome: enroll.Skipped},
		{name: "invalid value open", c: enroll.Container{Door: enroll.DoorNRI, Annotations: ann("HIGH")}, outcome: enroll.Rejected, reason: enroll.ReasonInvalidValue, errSubstr: "allowed values are high, low"},
		{name: "invalid value closed", c: enroll.Container{Door: enroll.DoorNRI, Annotations: ann("urgent")}, failMode: enroll.FailClosed, outcome: enroll.Rejected, reason: enroll.ReasonInvalidValue, wantErr: true},
		{name: "huge invalid value is truncated", c: enroll.Container{Door: enroll.DoorNRI, Annotations: ann(strings.Repeat("x", 256<<10))}, outcome: enroll.Rejected, reason: enroll.ReasonInvalidValue, errSubstr: "(262144 bytes)"},
		{name: "no door", c: enroll.Container{Annotations: ann("low")}, outcome: enroll.Rejected, reason: enroll.ReasonInvalidID},
		{name: "high wrong namespace", c: enroll.Container{Door: enroll.DoorNRI, Annotations: ann("high"), Namespace: "dev"}, outcome: enroll.Rejected, reason: enroll.ReasonNotAllowed},

		// Forgeries (issue 10): none of these may yield high.
		{name: "forged namespace annotation (NRI)", failMode: enroll.FailClosed, wantErr: true, outcome: enroll.Rejected, reason: enroll.ReasonNotAllowed,
			c: enroll.Container{Door: enroll.DoorNRI, Namespace: "tenant", Annotations: map[string]string{"agentcg.priority": "high", "io.kubernetes.pod.namespace": "prod"}}},
		{name: "forged namespace annotation, no kubelet namespace", outcome: enroll.Rejected, reason: enroll.ReasonNotAllowed,
			c: enroll.Container{Door: enroll.DoorNRI, Annotations: map[string]string{"agentcg.priority": "high", "io.kubernetes.pod.namespace": "prod"}}},
		{name: "forged namespace annotation through the hook (docker run --annotation)", outcome: enroll.Rejected, reason: enroll.ReasonNotAllowed, cgroup: "system.slice/docker-c1.scope",
			c: enroll.Container{Door: enroll.DoorHook, Annotations: map[string]string{"agentcg.priority": "high", "io.kubernetes.pod.namespace": "prod"}}},
		{name: "hook ignores a Namespace field", outcome: enroll.Rejected, reason: enroll.ReasonNotAllowed, cgroup: "system.slice/docker-c1.scope",
			c: enroll.Container{Door: enroll.DoorHook, Namespace: "prod", Annotations: ann("high")}},
		{name: "pod label not trusted", outcome: enroll.Rejected, reason: enroll.ReasonNotAllowed,
			c: enroll.Container{Door: enroll.DoorNRI, Namespace: "tenant", Annotations: ann("high"), PodLabels: map[string]string{"agentcg/tier": "gold"}}},
		{name: "pod label trusted (admission policy)", trust: true, attachOK: true, outcome: enroll.Attached,
			c: enroll.Container{Door: enroll.DoorNRI, Namespace: "tenant", Annotations: ann("high"), PodLabels: map[string]string{"agentcg/tier": "gold"}}},
		{name: "pod label trusted, wrong value", trust: true, outcome: enroll.Rejected, reason: enroll.ReasonNotAllowed,
			c: enroll.Container{Door: enroll.DoorNRI, Namespace: "tenant", Annotations: ann("high"), PodLabels: map[string]string{"agentcg/tier": "silver"}}},
		{name: "pod labels never count at the hook", trust: true, outcome: enroll.Rejected, reason: enroll.ReasonNotAllowed, cgroup: "system.slice/docker-c1.scope",
			c: enroll.Container{Door: enroll.DoorHook, Annotations: ann("high"), PodLabels: map[string]string{"agentcg/tier": "gold"}}},

		// The hook's identity: the resolved cgroup.
		{name: "hook high under an allowed cgroup parent", attachOK: true, outcome: enroll.Attached, cgroup: "agents-high.slice/docker-c1.scope",
			c: enroll.Container{Door: enroll.DoorHook, Annotations: ann("high")}},
		{name: "hook high under the allowed slice, Docker's systemd driver", attachOK: true, outcome: enroll.Attached, cgroup: "agents.slice/agents-high.slice/docker-c1.scope",
			c: enroll.Container{Door: enroll.DoorHook, Annotations: ann("high")}},
		{name: "hook high under the slice's parent only", outcome: enroll.Rejected, reason: enroll.ReasonNotAllowed, cgroup: "agents.slice/docker-c1.scope",
			c: enroll.Container{Door: enroll.DoorHook, Annotations: ann("high")}},
		{name: "hook high under a nested look-alike slice", outcome: enroll.Rejected, reason: enroll.ReasonNotAllowed, cgroup: "user.slice/agents.slice/agents-high.slice/c1",
			c: enroll.Container{Door: enroll.DoorHook, Annotations: ann("high")}},
		{name: "hook high on the parent itself", outcome: enroll.Rejected, reason: enroll.ReasonNotAllowed, cgroup: "agents-high.slice",
			c: enroll.Container{Door: enroll.DoorHook, Annotations: ann("high")}},
		{name: "hook high under a look-alike parent", outcome: enroll.Rejected, reason: enroll.ReasonNotAllowed, cgroup: "agents-high.slice-evil/c1",
			c: enroll.Container{Door: enroll.DoorHook, Annotations: ann("high")}},
		{name: "hook low anywhere", attachOK: true, outcome: enroll.Attached, cgroup: "system.slice/docker-c1.scope",
			c: enroll.Container{Door: enroll.DoorHook, Annotations: ann("low")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			if tc.failMode != "" {
				f.cfg.FailMode = tc.failMode
			}
			if tc.trust {
				f.cfg.High.PodLabels, f.cfg.High.TrustPodLabels = map[string]string{"agentcg/tier": "gold"}, true
			}
			rel := tc.cgroup
			if rel == "" {
				rel = "pods/c1"
			}
			dir := mkdir(t, f.tr, rel)
			tc.c.ID, tc.c.CgroupsPath = "c1", "/"+rel
			res, err := f.enroller(t).Enroll(context.Background(), tc.c)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if res.Outcome != tc.outcome || res.Reason != tc.reason {
				t.Fatalf("result %s/%s (%v), want %s/%s", res.Outcome, res.Reason, res.Err, tc.outcome, tc.reason)
			}
			calls := f.pol.Calls()
			if tc.attachOK {
				if len(calls) != 1 || calls[0].Op != "attach" || calls[0].Dir != dir || f.pol.ViaFD() != 1 {
					t.Fatalf("calls %+v (via fd %d), want one attach through the fd of %s", calls, f.pol.ViaFD(), dir)
				}
			} else if len(calls) != 0 {
				t.Fatalf("calls %+v, want none", calls)
			}
			if tc.errSubstr != "" && !strings.Contains(res.Err.Error(), tc.errSubstr) {
				t.Fatalf("error %q does not contain %q", res.Err, tc.errSubstr)
			}
			if res.Err != nil && len(res.Err.Error()) > 1024 {
				t.Fatalf("error is %d bytes long; untrusted values must be truncated", len(res.Err.Error()))
			}
		})
	}
}

// A policy without DirAttacher is attached by path.
func TestEnrollPathOnlyPolicy(t *testing.T) {
	f := newFixture(t)
	dir := mkdir(t, f.tr, "c1")
	e, err := enroll.New(f.cfg, enrolltest.PathOnly{P: f.pol}, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.Enroll(context.Background(), enroll.Container{ID: "c1", Door: enroll.DoorNRI, CgroupsPath: "/c1", Annotations: ann("low")})
	if err != nil || res.Outcome != enroll.Attached || f.pol.ViaFD() != 0 || f.pol.Calls()[0].Dir != dir {
		t.Fatalf("%+v, %v, via fd %d", res, err, f.pol.ViaFD())
	}
}

func TestEnrollCgroupFailures(t *testing.T) {
	f := newFixture(t)
	e := f.enroller(t)
	c := enroll.Container{ID: "c1", Door: enroll.DoorNRI, CgroupsPath: "/gone", Annotations: ann("low")}
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
		res, err := e.Enroll(context.Background(), enroll.Container{ID: "c1", Door: enroll.DoorNRI, CgroupsPath: "/c1", Annotations: ann("low")})
		if res.Reason != enroll.ReasonAttachFailed || (err != nil) != (fm == enroll.FailClosed) {
			t.Fatalf("%s: %+v, %v", fm, res, err)
		}
		if recs, _, _ := e.Records().List(); len(recs) != 0 {
			t.Fatalf("%s: records left after failed attach: %+v", fm, recs)
		}
	}
}

func TestHighCap(t *testing.T) {
	f := newFixture(t)
	f.cfg.High.MaxConcurrent = new(1)
	e := f.enroller(t)
	ctx := context.Background()
	for _, id := range []string{"a", "b"} {
		mkdir(t, f.tr, id)
	}
	c := func(id string) enroll.Container {
		return enroll.Container{ID: id, Door: enroll.DoorNRI, CgroupsPath: "/" + id, Annotations: ann("high"), Namespace: "prod"}
	}
	if res, _ := e.Enroll(ctx, c("a")); res.Outcome != enroll.Attached {
		t.Fatalf("first high: %+v", res)
	}
	// Re-enrolling the same container does not count against the cap.
	if res, _ := e.Enroll(ctx, c("a")); res.Outcome != enroll.Attached {
		t.Fatalf("re-enroll: %+v", res)
	}
	if res, _ := e.Enroll(ctx, c("b")); res.Reason != enroll.ReasonHighCap {
		t.Fatalf("second high: %+v", res)
	}
	if _, err := e.Unenroll(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if res, _ := e.Enroll(ctx, c("b")); res.Outcome != enroll.Attached {
		t.Fatalf("high after unenroll: %+v", res)
	}
}

// A high record whose cgroup is gone (its poststop hook timed out, so the
// record was never removed) does not hold a place under the cap; a live
// one does.
func TestHighCapSkipsGoneCgroups(t *testing.T) {
	f := newFixture(t)
	f.cfg.High.MaxConcurrent = new(1)
	f.cfg.High.AllowAll = true
	e := f.enroller(t)
	ctx := context.Background()
	dirs := map[string]string{}
	for _, id := range []string{"a", "b", "c"} {
		dirs[id] = mkdir(t, f.tr, id)
	}
	c := func(id string) enroll.Container {
		return enroll.Container{ID: id, Door: enroll.DoorHook, CgroupsPath: "/" + id, Annotations: ann("high")}
	}
	if res, _ := e.Enroll(ctx, c("a")); res.Outcome != enroll.Attached {
		t.Fatalf("a: %+v", res)
	}
	if res, _ := e.Enroll(ctx, c("b")); res.Reason != enroll.ReasonHighCap {
		t.Fatalf("b while a runs: %+v", res)
	}
	if err := os.Remove(dirs["a"]); err != nil { // a is gone, its record stays
		t.Fatal(err)
	}
	if res, _ := e.Enroll(ctx, c("b")); res.Outcome != enroll.Attached {
		t.Fatalf("b after a's cgroup is gone: %+v", res)
	}
	if res, _ := e.Enroll(ctx, c("c")); res.Reason != enroll.ReasonHighCap {
		t.Fatalf("c while b runs: %+v", res)
	}
}

// With no cap configured, the default (DefaultMaxHigh) applies; the cap
// counts both doors.
func TestHighCapDefaultAcrossDoors(t *testing.T) {
	f := newFixture(t)
	f.cfg.High.MaxConcurrent = nil
	f.cfg.High.AllowAll = true
	e := f.enroller(t)
	ctx := context.Background()
	n := enroll.DefaultMaxHigh + 1
	for i := range n {
		id := fmt.Sprintf("c%d", i)
		mkdir(t, f.tr, id)
		door := enroll.DoorNRI
		if i%2 == 1 {
			door = enroll.DoorHook
		}
		res, _ := e.Enroll(ctx, enroll.Container{ID: id, Door: door, CgroupsPath: "/" + id, Annotations: ann("high")})
		want := enroll.Attached
		if i == n-1 {
			want = enroll.Rejected
		}
		if res.Outcome != want {
			t.Fatalf("container %d: %+v, want %s", i, res, want)
		}
	}
}

// Concurrent enrollers (hook processes beside the plugin) agree on the cap.
func TestHighCapConcurrent(t *testing.T) {
	f := newFixture(t)
	f.cfg.High.MaxConcurrent = new(3)
	ctx := context.Background()
	const n = 12
	results := make(chan enroll.Result, n)
	for i := range n {
		id := fmt.Sprintf("c%d", i)
		mkdir(t, f.tr, id)
		e := f.enroller(t) // one per "process"
		go func() {
			res, _ := e.Enroll(ctx, enroll.Container{ID: id, Door: enroll.DoorNRI, CgroupsPath: "/" + id, Annotations: ann("high"), Namespace: "prod"})
			results <- res
		}()
	}
	attached := 0
	for range n {
		res := <-results
		switch {
		case res.Outcome == enroll.Attached:
			attached++
		case res.Reason != enroll.ReasonHighCap:
			t.Errorf("unexpected %+v", res)
		}
	}
	if attached != 3 {
		t.Fatalf("%d attached, want exactly the cap 3", attached)
	}
}

func TestUnenrollAfterCgroupGone(t *testing.T) {
	f := newFixture(t)
	dir := mkdir(t, f.tr, "c1")
	e := f.enroller(t)
	ctx := context.Background()
	if _, err := e.Enroll(ctx, enroll.Container{ID: "c1", Door: enroll.DoorHook, CgroupsPath: "/c1", Annotations: ann("low")}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	// A second enroller (the poststop hook is another process) finds the record.
	res, err := f.enroller(t).Unenroll(ctx, "c1")
	if err != nil || res.Outcome != enroll.Detached || res.CgroupDir != dir || res.Door != enroll.DoorHook {
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

// Detach goes through the mode that attached, not the running one.
func TestUnenrollUsesRecordedMode(t *testing.T) {
	f := newFixture(t)
	dir := mkdir(t, f.tr, "c1")
	ctx := context.Background()
	if _, err := f.enroller(t).Enroll(ctx, enroll.Container{ID: "c1", Door: enroll.DoorNRI, CgroupsPath: "/c1", Annotations: ann("low")}); err != nil {
		t.Fatal(err)
	}
	// The node switched to native; the record says bpf.
	native := enrolltest.New(policy.ModeNative)
	e, err := enroll.New(f.cfg, native, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := e.Unenroll(ctx, "c1"); err == nil || res.Reason != enroll.ReasonDetachFailed {
		t.Fatalf("without an opener: %+v, %v; want a detach failure naming the mode", res, err)
	}
	var opened []policy.Mode
	e, err = enroll.New(f.cfg, native, nil, enroll.WithOpener(func(_ context.Context, m policy.Mode) (policy.Policy, error) {
		opened = append(opened, m)
		return f.pol, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if res, err := e.Unenroll(ctx, "c1"); err != nil || res.Outcome != enroll.Detached {
		t.Fatalf("with an opener: %+v, %v", res, err)
	}
	if len(opened) != 1 || opened[0] != policy.ModeBPF || len(native.Calls()) != 0 || len(f.pol.Links()) != 0 {
		t.Fatalf("opened %v, native calls %+v, bpf links %+v", opened, native.Calls(), f.pol.Links())
	}
	_ = dir
}

func writeCorrupt(t *testing.T, e *enroll.Enroller, id string) {
	t.Helper()
	if err := os.MkdirAll(e.Records().Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.Records().Dir, id+".json"), []byte(`{"id": "`+id+`", "cgroup_dir": 17`), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestReconcile(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	e := f.enroller(t)
	var running []enroll.Container
	for _, id := range []string{"a", "b", "c"} {
		mkdir(t, f.tr, id)
		running = append(running, enroll.Container{ID: id, Door: enroll.DoorNRI, CgroupsPath: "/" + id, Annotations: ann("low")})
	}
	// "a" is already attached: the reconcile leaves it alone.
	if _, err := e.Enroll(ctx, running[0]); err != nil {
		t.Fatal(err)
	}
	gone := mkdir(t, f.tr, "gone")
	if _, err := e.Enroll(ctx, enroll.Container{ID: "gone", Door: enroll.DoorNRI, CgroupsPath: "/gone", Annotations: ann("low")}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(gone); err != nil {
		t.Fatal(err)
	}
	// A Docker container enrolled by the hook: NRI never lists it, and its
	// cgroup lives on. The NRI reconcile must not touch it.
	docker := mkdir(t, f.tr, "docker-x")
	if _, err := e.Enroll(ctx, enroll.Container{ID: "docker-x", Door: enroll.DoorHook, CgroupsPath: "/docker-x", Annotations: ann("low")}); err != nil {
		t.Fatal(err)
	}
	writeCorrupt(t, e, "corrupt")
	f.pol.AddLink(policy.Link{CgroupID: 99, CgroupPath: filepath.Join(f.tr.CgroupRoot, "norecord"), Priority: policy.Low, Orphan: true})

	rep, err := e.Reconcile(ctx, enroll.DoorNRI, running)
	if err != nil {
		t.Fatal(err)
	}
	p := rep.Plan
	if len(p.Attach) != 2 || p.Kept != 1 || len(p.Stale) != 1 || p.Foreign != 1 || len(p.Unreadable) != 1 || len(rep.Orphans) != 1 {
		t.Fatalf("report %+v", rep)
	}
	if !errors.Is(p.Unreadable[0].Err, enroll.ErrBadRecord) || p.Unreadable[0].ID != "corrupt" {
		t.Fatalf("unreadable %+v", p.Unreadable)
	}
	links := f.pol.Links()
	if _, ok := links[docker]; !ok || len(links) != 4 {
		t.Fatalf("links after reconcile (want a, b, c and the hook's docker-x): %+v", links)
	}
	recs, _, _ := e.Records().List()
	if len(recs) != 4 {
		t.Fatalf("records after reconcile: %+v", recs)
	}
	// The hook's own reconcile with no Docker container running removes
	// only the hook's record.
	rep, err = e.Reconcile(ctx, enroll.DoorHook, nil)
	if err != nil || len(rep.Stale) != 1 || rep.Stale[0].ID != "docker-x" || rep.Plan.Foreign != 3 {
		t.Fatalf("hook reconcile %+v, %v", rep, err)
	}
}

// One corrupt record never stops the others from detaching, and Unenroll
// of the corrupt one moves it aside.
func TestCorruptRecord(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	e := f.enroller(t)
	for _, id := range []string{"a", "b"} {
		mkdir(t, f.tr, id)
		if _, err := e.Enroll(ctx, enroll.Container{ID: id, Door: enroll.DoorNRI, CgroupsPath: "/" + id, Annotations: ann("low")}); err != nil {
			t.Fatal(err)
		}
	}
	writeCorrupt(t, e, "bad")
	recs, bad, err := e.Records().List()
	if err != nil || len(recs) != 2 || len(bad) != 1 {
		t.Fatalf("List = %+v, %+v, %v", recs, bad, err)
	}
	for _, id := range []string{"a", "b"} {
		if res, err := e.Unenroll(ctx, id); err != nil || res.Outcome != enroll.Detached {
			t.Fatalf("Unenroll %s = %+v, %v", id, res, err)
		}
	}
	res, err := e.Unenroll(ctx, "bad")
	if err == nil || res.Reason != enroll.ReasonRecordUnreadable {
		t.Fatalf("Unenroll of the corrupt record = %+v, %v", res, err)
	}
	if _, err := os.Stat(filepath.Join(e.Records().Dir, ".corrupt-bad.json")); err != nil {
		t.Fatalf("corrupt record not moved aside: %v", err)
	}
	if recs, bad, _ := e.Records().List(); len(recs) != 0 || len(bad) != 0 {
		t.Fatalf("after: %+v %+v", recs, bad)
	}
}

// A Stop that arrives while a slow attach is in flight must not run before
// it (otherwise the attach pins after the detach and the link leaks), while
// other containers are not held up by it.
func TestUnenrollWaitsForAttachOfItsContainerOnly(t *testing.T) {
	f := newFixture(t)
	mkdir(t, f.tr, "c1")
	mkdir(t, f.tr, "c2")
	e := f.enroller(t)
	ctx := context.Background()
	entered := f.pol.Entered()
	if _, err := e.Enroll(ctx, enroll.Container{ID: "c2", Door: enroll.DoorNRI, CgroupsPath: "/c2", Annotations: ann("low")}); err != nil {
		t.Fatal(err)
	}
	<-entered // c2's attach
	block := make(chan struct{})
	f.pol.SetBlock(block)
	enrolled := make(chan error, 1)
	go func() {
		_, err := e.Enroll(ctx, enroll.Container{ID: "c1", Door: enroll.DoorNRI, CgroupsPath: "/c1", Annotations: ann("low")})
		enrolled <- err
	}()
	<-entered // c1's attach is in flight and blocked
	// Another container detaches while c1 is blocked.
	if res, err := e.Unenroll(ctx, "c2"); err != nil || res.Outcome != enroll.Detached {
		t.Fatalf("c2 detach behind a blocked attach: %+v, %v", res, err)
	}
	unenrolled := make(chan error, 1)
	go func() { _, err := e.Unenroll(ctx, "c1"); unenrolled <- err }()
	close(block)
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
	in.High.MaxConcurrent = new(0)
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := enroll.ParseConfig(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if out.HookTimeout != in.HookTimeout || out.Policy.HighActiveWindowMs != 0 || out.High.Cap() != 0 {
		t.Errorf("round trip: hook_timeout %v window %d cap %d", time.Duration(out.HookTimeout), out.Policy.HighActiveWindowMs, out.High.Cap())
	}
	omitted, err := enroll.ParseConfig(strings.NewReader("fail_mode: closed\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := policy.DefaultConfig().HighActiveWindowMs; omitted.Policy.HighActiveWindowMs != want {
		t.Errorf("omitted high_active_window_ms = %d, want the default %d", omitted.Policy.HighActiveWindowMs, want)
	}
}
