package plugin_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentcg/agentcg/enroll"
	"github.com/agentcg/agentcg/enroll/enrolltest"
	"github.com/agentcg/agentcg/plugin"
	"github.com/agentcg/agentcg/policy"
	"github.com/agentcg/agentcg/policy/mode"
	"github.com/containerd/nri/pkg/adaptation"
	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
	"github.com/prometheus/client_golang/prometheus"
)

// env is a plugin connected to NRI's real runtime side over a temp socket.
type env struct {
	tr      enrolltest.Tree
	pol     *enrolltest.Policy
	plugin  *plugin.Plugin
	metrics *plugin.Metrics
	rt      *adaptation.Adaptation
	log     *bytes.Buffer
	status  string // status file path
}

// settle waits until the plugin's queued work is done.
func (e *env) settle(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.plugin.Wait(ctx); err != nil {
		t.Fatalf("queued work never finished: %v\n%s", err, e.log)
	}
}

// registered reports the plugin count the runtime sees, so tests start
// sending events only once the plugin is in the runtime's list.
type registered struct {
	once sync.Once
	ch   chan struct{}
}

func (r *registered) RecordPluginInvocation(string, string, error)      {}
func (r *registered) RecordPluginLatency(string, string, time.Duration) {}
func (r *registered) RecordPluginAdjustments(string, string, *adaptation.ContainerAdjustment, int, int) {
}
func (r *registered) UpdatePluginCount(n int) {
	if n > 0 {
		r.once.Do(func() { close(r.ch) })
	}
}

type setup struct {
	failMode enroll.FailMode
	// sync is what the runtime reports at registration.
	pods []*api.PodSandbox
	ctrs []*api.Container
	// before runs on the enroller's state before the plugin connects.
	before func(*env)
	// policy replaces the fake policy (e.pol then only serves as a stand-in).
	policy policy.Policy
	// cfg edits the configuration.
	cfg func(*enroll.Config)
	// startWait is plugin.Options.StartWait.
	startWait time.Duration
}

func start(t *testing.T, s setup) *env {
	t.Helper()
	tr, err := enrolltest.NewTree(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := enroll.DefaultConfig()
	cfg.CgroupRoot, cfg.ProcRoot, cfg.StateDir = tr.CgroupRoot, tr.ProcRoot, filepath.Join(t.TempDir(), "state")
	cfg.High.Namespaces = []string{"prod"}
	if s.cfg != nil {
		s.cfg(&cfg)
	}
	if s.failMode != "" {
		cfg.FailMode = s.failMode
	}
	e := &env{tr: tr, pol: enrolltest.New(policy.ModeBPF), log: &bytes.Buffer{}}
	log := slog.New(slog.NewTextHandler(&syncWriter{w: e.log}, nil))
	var pol policy.Policy = e.pol
	if s.policy != nil {
		pol = s.policy
	}
	en, err := enroll.New(cfg, pol, log)
	if err != nil {
		t.Fatal(err)
	}
	e.metrics = plugin.NewMetrics(pol, plugin.BuildInfo{Version: "test"})
	e.status = plugin.StatusPath(cfg.StateDir)
	e.plugin = plugin.New(en, plugin.Options{Log: log, Metrics: e.metrics, Status: plugin.NewStatusFile(e.status, "test", string(pol.Mode()), log),
		StartWait: s.startWait})
	if s.before != nil {
		s.before(e)
	}

	// Unix socket paths are limited to 108 bytes: keep the dir short.
	dir, err := os.MkdirTemp("", "nri")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "nri.sock")
	reg := &registered{ch: make(chan struct{})}
	syncFn := func(ctx context.Context, cb adaptation.SyncCB) error {
		_, err := cb(ctx, s.pods, s.ctrs)
		return err
	}
	updateFn := func(context.Context, []*api.ContainerUpdate) ([]*api.ContainerUpdate, error) { return nil, nil }
	rt, err := adaptation.New("mock", "0.0", syncFn, updateFn,
		adaptation.WithPluginPath(filepath.Join(dir, "plugins")),
		adaptation.WithPluginConfigPath(filepath.Join(dir, "conf.d")),
		adaptation.WithSocketPath(sock),
		adaptation.WithMetrics(reg))
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rt.Stop)
	st, err := stub.New(e.plugin, stub.WithPluginName("agentcg"), stub.WithPluginIdx("10"), stub.WithSocketPath(sock))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := st.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Stop)
	select {
	case <-reg.ch:
	case <-time.After(30 * time.Second):
		t.Fatal("plugin never registered with the runtime")
	}
	e.rt = rt
	e.settle(t)
	return e
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// metric returns the value of the sample of name whose labels include want.
func metric(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if got[k] != v {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}

func pod(ns string) *api.PodSandbox {
	return &api.PodSandbox{Id: "pod-" + ns, Name: "p", Namespace: ns, Labels: map[string]string{"io.kubernetes.pod.namespace": ns}}
}

func TestEvents(t *testing.T) {
	tests := []struct {
		name     string
		ns       string
		ann      map[string]string
		cgroup   string // path written to /proc/<pid>/cgroup; "" leaves no proc entry
		mkdir    bool
		failMode enroll.FailMode
		attach   policy.Priority // expected attach, "" for none
		reason   enroll.Reason   // expected rejection reason
		startErr string          // expected StartContainer error substring
	}{
		{name: "high", ns: "prod", ann: map[string]string{"agentcg.priority": "high"}, cgroup: "/kubepods/c", mkdir: true, attach: policy.High},
		{name: "low", ns: "dev", ann: map[string]string{"agentcg.priority": "low"}, cgroup: "/kubepods/c", mkdir: true, attach: policy.Low},
		{name: "no annotation", ns: "prod", ann: nil, cgroup: "/kubepods/c", mkdir: true},
		{name: "invalid value", ns: "prod", ann: map[string]string{"agentcg.priority": "max"}, cgroup: "/kubepods/c", mkdir: true, reason: enroll.ReasonInvalidValue},
		{name: "invalid value fail-closed", ns: "prod", ann: map[string]string{"agentcg.priority": "max"}, cgroup: "/kubepods/c", mkdir: true, failMode: enroll.FailClosed, reason: enroll.ReasonInvalidValue, startErr: "allowed values are high, low"},
		{name: "high from other namespace", ns: "dev", ann: map[string]string{"agentcg.priority": "high"}, cgroup: "/kubepods/c", mkdir: true, reason: enroll.ReasonNotAllowed},
		{name: "unresolvable cgroup", ns: "prod", ann: map[string]string{"agentcg.priority": "low"}, reason: enroll.ReasonCgroupNotFound},
		{name: "cgroup outside root", ns: "prod", ann: map[string]string{"agentcg.priority": "low"}, cgroup: "/kubepods/../../../../../../tmp", reason: enroll.ReasonCgroupOutside},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t, setup{failMode: tc.failMode})
			ctx := context.Background()
			var dir string
			if tc.mkdir {
				d, err := e.tr.Cgroup(tc.cgroup)
				if err != nil {
					t.Fatal(err)
				}
				dir, _ = filepath.EvalSymlinks(d)
			}
			if tc.cgroup != "" {
				if err := e.tr.Proc(1234, tc.cgroup); err != nil {
					t.Fatal(err)
				}
			}
			ctr := &api.Container{Id: "ctr1", PodSandboxId: "pod-" + tc.ns, Name: "c", State: api.ContainerState_CONTAINER_CREATED, Pid: 1234, Annotations: tc.ann}
			err := e.rt.StartContainer(ctx, &api.StartContainerRequest{Pod: pod(tc.ns), Container: ctr})
			if tc.startErr == "" && err != nil {
				t.Fatalf("StartContainer: %v", err)
			}
			if tc.startErr != "" && (err == nil || !strings.Contains(err.Error(), tc.startErr)) {
				t.Fatalf("StartContainer err = %v, want %q", err, tc.startErr)
			}
			if _, err := e.rt.StopContainer(ctx, &api.StopContainerRequest{Pod: pod(tc.ns), Container: ctr}); err != nil {
				t.Fatal(err)
			}
			if err := e.rt.RemoveContainer(ctx, &api.RemoveContainerRequest{Pod: pod(tc.ns), Container: ctr}); err != nil {
				t.Fatal(err)
			}
			e.settle(t)

			calls := e.pol.Calls()
			var want []enrolltest.Call
			if tc.attach != "" {
				want = []enrolltest.Call{{Op: "attach", Dir: dir, Priority: tc.attach}, {Op: "detach", Dir: dir}}
			}
			if len(calls) != len(want) || (len(want) > 0 && (calls[0] != want[0] || calls[1] != want[1])) {
				t.Fatalf("policy calls %+v, want %+v", calls, want)
			}
			m := e.metrics.Registry
			if tc.attach != "" {
				if got := metric(t, m, "agentcg_attaches_total", map[string]string{"priority": string(tc.attach), "mode": "bpf"}); got != 1 {
					t.Fatalf("attaches = %v, want 1", got)
				}
				if got := metric(t, m, "agentcg_detaches_total", nil); got != 1 {
					t.Fatalf("detaches = %v, want 1 (stop detaches, remove finds nothing left)", got)
				}
				if got := metric(t, m, "agentcg_attach_latency_seconds", nil); got != 1 {
					t.Fatalf("latency samples = %v, want 1", got)
				}
				if !strings.Contains(e.log.String(), "attach latency") {
					t.Fatalf("no latency log line:\n%s", e.log)
				}
			}
			if tc.reason != "" {
				if got := metric(t, m, "agentcg_rejections_total", map[string]string{"reason": string(tc.reason)}); got != 1 {
					t.Fatalf("rejections{reason=%s} = %v, want 1\nlog:\n%s", tc.reason, got, e.log)
				}
				if !strings.Contains(e.log.String(), "reason="+string(tc.reason)) || !strings.Contains(e.log.String(), "container=ctr1") {
					t.Fatalf("log lacks reason or container id:\n%s", e.log)
				}
			} else if got := metric(t, m, "agentcg_rejections_total", nil); got != 0 {
				t.Fatalf("unexpected rejection counted:\n%s", e.log)
			}
		})
	}
}

func TestSynchronize(t *testing.T) {
	low := map[string]string{"agentcg.priority": "low"}
	running := func(id string) *api.Container {
		return &api.Container{Id: id, PodSandboxId: "pod-dev", State: api.ContainerState_CONTAINER_RUNNING, Annotations: low,
			Linux: &api.LinuxContainer{CgroupsPath: "/kubepods/" + id}}
	}
	var dirs []string
	e := start(t, setup{
		pods: []*api.PodSandbox{pod("dev")},
		ctrs: []*api.Container{running("a"), running("b"), running("c"),
			{Id: "stopped", PodSandboxId: "pod-dev", State: api.ContainerState_CONTAINER_STOPPED, Annotations: low}},
		before: func(e *env) {
			for _, id := range []string{"a", "b", "c", "stale"} {
				d, err := e.tr.Cgroup("kubepods/" + id)
				if err != nil {
					t.Fatal(err)
				}
				d, _ = filepath.EvalSymlinks(d)
				dirs = append(dirs, d)
			}
			// "a" was attached before the plugin was killed; "stale"
			// was removed while it was down; "ghost" has a pin but no record.
			en, err := enroll.New(enroll.Config{CgroupRoot: e.tr.CgroupRoot, ProcRoot: e.tr.ProcRoot, StateDir: stateDir(t, e)}, e.pol, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range []string{"a", "stale"} {
				if _, err := en.Enroll(context.Background(), enroll.Container{ID: id, Door: enroll.DoorNRI, CgroupsPath: "/kubepods/" + id, Annotations: low}); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Remove(dirs[3]); err != nil {
				t.Fatal(err)
			}
			e.pol.AddLink(policy.Link{CgroupID: 77, CgroupPath: filepath.Join(e.tr.CgroupRoot, "kubepods/ghost"), Priority: policy.High, Mode: policy.ModeBPF})
		},
	})
	e.settle(t)
	links := e.pol.Links()
	if len(links) != 3 {
		t.Fatalf("links after sync = %d (%v), want 3", len(links), links)
	}
	for _, d := range dirs[:3] {
		if _, ok := links[d]; !ok {
			t.Fatalf("no link for running container cgroup %s: %v", d, links)
		}
	}
	if got := metric(t, e.metrics.Registry, "agentcg_policy_links", map[string]string{"priority": "low"}); got != 3 {
		t.Fatalf("agentcg_policy_links{low} = %v, want 3", got)
	}
	if !strings.Contains(e.log.String(), "orphans_removed=1") || !strings.Contains(e.log.String(), "stale_records=1") || !strings.Contains(e.log.String(), "kept=1") {
		t.Fatalf("sync log:\n%s", e.log)
	}
}

// A container whose StartContainer was handled just before the plugin
// reconnected is still CREATED in the runtime's listing (containerd marks
// it running once its task starts): its record and link are not stale.
// One that is gone from the listing is.
func TestSynchronizeKeepsStartingContainer(t *testing.T) {
	low := map[string]string{"agentcg.priority": "low"}
	var dirs map[string]string
	e := start(t, setup{
		pods: []*api.PodSandbox{pod("dev")},
		ctrs: []*api.Container{{Id: "starting", PodSandboxId: "pod-dev", State: api.ContainerState_CONTAINER_CREATED, Annotations: low,
			Linux: &api.LinuxContainer{CgroupsPath: "/kubepods/starting"}}},
		before: func(e *env) {
			dirs = map[string]string{}
			for _, id := range []string{"starting", "gone"} {
				d, err := e.tr.Cgroup("kubepods/" + id)
				if err != nil {
					t.Fatal(err)
				}
				dirs[id], _ = filepath.EvalSymlinks(d)
				if _, err := e.plugin.Enroller().Enroll(context.Background(), enroll.Container{ID: id, Door: enroll.DoorNRI,
					CgroupsPath: "/kubepods/" + id, Annotations: low}); err != nil {
					t.Fatal(err)
				}
			}
		},
	})
	e.settle(t)
	links := e.pol.Links()
	if _, ok := links[dirs["starting"]]; !ok || len(links) != 1 {
		t.Fatalf("links after sync: %v, want only the starting container's\n%s", links, e.log)
	}
	if _, ok, err := e.plugin.Enroller().Records().Get("starting"); !ok || err != nil {
		t.Fatalf("starting container's record: %v, %v", ok, err)
	}
}

// stateDir digs the state dir out of the plugin's enroller config through
// the public API: the plugin was built from the same config in start.
func stateDir(t *testing.T, e *env) string {
	t.Helper()
	return e.plugin.Enroller().Config().StateDir
}

func TestPolicyMetrics(t *testing.T) {
	e := start(t, setup{})
	e.pol.AddLink(policy.Link{CgroupID: 1, CgroupPath: e.tr.CgroupRoot + "/h", Priority: policy.High})
	e.pol.AddLink(policy.Link{CgroupID: 2, CgroupPath: e.tr.CgroupRoot + "/l1", Priority: policy.Low})
	e.pol.AddLink(policy.Link{CgroupID: 3, CgroupPath: e.tr.CgroupRoot + "/l2", Priority: policy.Low})
	e.pol.SetTotals(policy.Low, policy.Counters{DelayCalls: 15, DelayNonZero: 5})
	e.pol.SetTotals(policy.High, policy.Counters{BelowLowTrue: 7})
	m := e.metrics.Registry
	fams, err := m.Gather()
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]string{}
	for _, f := range fams {
		types[f.GetName()] = f.GetType().String()
	}
	for name, want := range map[string]string{
		"agentcg_policy_delay_calls_total": "COUNTER", "agentcg_policy_below_low_calls_total": "COUNTER",
		"agentcg_policy_links": "GAUGE", "agentcg_build_info": "GAUGE", "agentcg_nri_connected": "GAUGE",
		"process_open_fds": "GAUGE", "go_goroutines": "GAUGE",
	} {
		if types[name] != want {
			t.Errorf("%s: type %q, want %s", name, types[name], want)
		}
	}
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"agentcg_policy_delay_calls_total", map[string]string{"priority": "low", "result": "nonzero"}, 5},
		{"agentcg_policy_below_low_calls_total", map[string]string{"priority": "high", "result": "true"}, 7},
		{"agentcg_policy_links", map[string]string{"priority": "low"}, 2},
		{"agentcg_build_info", map[string]string{"version": "test"}, 1},
		{"agentcg_nri_connected", nil, 1},
	}
	for _, c := range checks {
		if got := metric(t, m, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

// /healthz answers while the process runs; /readyz only while connected.
func TestHealthAndReady(t *testing.T) {
	e := start(t, setup{})
	h := e.metrics.Handler(func() bool { c, _ := e.plugin.Connected(); return c })
	get := func(path string) int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code
	}
	if get("/healthz") != 200 || get("/readyz") != 200 || get("/metrics") != 200 {
		t.Fatalf("connected: healthz %d readyz %d metrics %d", get("/healthz"), get("/readyz"), get("/metrics"))
	}
	st, err := plugin.ReadStatus(e.status)
	if err != nil || !st.Connected || st.Pid != os.Getpid() || st.Runtime != "mock" || st.Version != "test" {
		t.Fatalf("status %+v, %v", st, err)
	}
	e.plugin.Disconnected()
	if get("/healthz") != 200 || get("/readyz") != 503 {
		t.Fatalf("disconnected: healthz %d readyz %d", get("/healthz"), get("/readyz"))
	}
	if st, err := plugin.ReadStatus(e.status); err != nil || st.Connected {
		t.Fatalf("status after disconnect %+v, %v", st, err)
	}
	srv := plugin.NewServer("127.0.0.1:0", h)
	if srv.ReadHeaderTimeout <= 0 || srv.ReadTimeout <= 0 {
		t.Fatalf("server without header/read timeouts: %+v", srv)
	}
}

func TestAnnounceMode(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	plugin.AnnounceMode(log, policy.ModeAuto, enrolltest.New(policy.ModeNative), nil)
	if !strings.Contains(buf.String(), "native fallback") {
		t.Fatalf("auto→native not announced: %s", buf.String())
	}
	buf.Reset()
	plugin.AnnounceMode(log, policy.ModeAuto, enrolltest.New(policy.ModeBPF), nil)
	if strings.Contains(buf.String(), "fallback") {
		t.Fatalf("bpf mode announced as fallback: %s", buf.String())
	}
}

// An attach slower than the runtime's request budget must not get the
// plugin disconnected: StartContainer answers in time (by fail mode), the
// attach finishes in the background, and Stop still detaches it.
func TestSlowAttachKeepsPlugin(t *testing.T) {
	// The plugin answers after 200 ms, the runtime would wait 30 s: a wide
	// gap, so a loaded machine cannot turn this into a drop.
	adaptation.SetPluginRequestTimeout(30 * time.Second)
	t.Cleanup(func() { adaptation.SetPluginRequestTimeout(adaptation.DefaultPluginRequestTimeout) })
	for _, fm := range []enroll.FailMode{enroll.FailOpen, enroll.FailClosed} {
		t.Run(string(fm), func(t *testing.T) {
			e := start(t, setup{failMode: fm, startWait: 200 * time.Millisecond})
			ctx := context.Background()
			for _, id := range []string{"slow", "fast"} {
				if _, err := e.tr.Cgroup("k/" + id); err != nil {
					t.Fatal(err)
				}
			}
			block := make(chan struct{})
			e.pol.SetBlock(block)
			mk := func(id string) *api.Container {
				return &api.Container{Id: id, PodSandboxId: "pod-dev", Annotations: map[string]string{"agentcg.priority": "low"},
					Linux: &api.LinuxContainer{CgroupsPath: "/k/" + id}}
			}
			err := e.rt.StartContainer(ctx, &api.StartContainerRequest{Pod: pod("dev"), Container: mk("slow")})
			if (err != nil) != (fm == enroll.FailClosed) {
				t.Fatalf("slow StartContainer err = %v", err)
			}
			if fm == enroll.FailClosed && !strings.Contains(err.Error(), "did not finish") {
				t.Fatalf("err = %v", err)
			}
			close(block)
			e.settle(t)
			// Refused under closed: the attach that finished late is taken
			// off again; under open the container runs with it.
			if n := len(e.pol.Links()); n != map[enroll.FailMode]int{enroll.FailOpen: 1, enroll.FailClosed: 0}[fm] {
				t.Fatalf("%d links after the late attach\n%s", n, e.log)
			}
			// Still connected: the next container is attached.
			if err := e.rt.StartContainer(ctx, &api.StartContainerRequest{Pod: pod("dev"), Container: mk("fast")}); err != nil {
				t.Fatal(err)
			}
			for _, id := range []string{"slow", "fast"} {
				if err := e.rt.RemoveContainer(ctx, &api.RemoveContainerRequest{Pod: pod("dev"), Container: mk(id)}); err != nil {
					t.Fatal(err)
				}
			}
			e.settle(t)
			if links := e.pol.Links(); len(links) != 0 {
				t.Fatalf("links left: %v\n%s", links, e.log)
			}
			if n := strings.Count(e.log.String(), "msg=attached"); n != 2 {
				t.Fatalf("%d attaches logged, want 2:\n%s", n, e.log)
			}
			if got := metric(t, e.metrics.Registry, "agentcg_rejections_total", map[string]string{"reason": "timeout"}); got != 1 {
				t.Fatalf("timeout rejections = %v", got)
			}
		})
	}
}

// On a kernel without memcg_bpf_ops, mode auto gives the real native policy:
// StartContainer writes memory.high of a LOW container's cgroup and
// RemoveContainer restores the value it had.
func TestAutoWithoutKernelFeatureAppliesNative(t *testing.T) {
	noFeature := func() error { return errors.New("kernel BTF has no memcg_bpf_ops") }
	pol, err := mode.Open(context.Background(), mode.Options{Mode: policy.ModeAuto, Probe: noFeature,
		NativeRecordDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if pol.Mode() != policy.ModeNative {
		t.Fatalf("auto without the feature gave mode %s", pol.Mode())
	}
	var announced bytes.Buffer
	plugin.AnnounceMode(slog.New(slog.NewTextHandler(&announced, nil)), policy.ModeAuto, pol, noFeature())
	if !strings.Contains(announced.String(), "native fallback") {
		t.Fatalf("fallback not announced: %s", announced.String())
	}
	e := start(t, setup{policy: pol})
	dir, err := e.tr.Cgroup("/kubepods/low")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "memory.high"), []byte("max\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := e.tr.Proc(4321, "/kubepods/low"); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ctr := &api.Container{Id: "ctr-native", PodSandboxId: "pod-dev", Name: "c", State: api.ContainerState_CONTAINER_CREATED,
		Pid: 4321, Annotations: map[string]string{"agentcg.priority": "low"}}
	if err := e.rt.StartContainer(ctx, &api.StartContainerRequest{Pod: pod("dev"), Container: ctr}); err != nil {
		t.Fatal(err)
	}
	read := func() string {
		b, err := os.ReadFile(filepath.Join(dir, "memory.high"))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	if got, want := read(), strconv.FormatInt(policy.DefaultConfig().NativeHighBytes, 10); got != want {
		t.Fatalf("memory.high after StartContainer = %q, want %q", got, want)
	}
	if err := e.rt.RemoveContainer(ctx, &api.RemoveContainerRequest{Pod: pod("dev"), Container: ctr}); err != nil {
		t.Fatal(err)
	}
	e.settle(t)
	if got := read(); got != "max" {
		t.Fatalf("memory.high after RemoveContainer = %q, want the previous \"max\"", got)
	}
}
