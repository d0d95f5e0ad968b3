package doctor

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentcg/agentcg/internal/configure"
	"golang.org/x/sys/unix"
)

const (
	mountsV2 = `22 1 0:21 / / rw,relatime - ext4 /dev/vda rw
24 22 0:23 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
25 22 0:24 / /sys/fs/bpf rw,nosuid - bpf bpf rw,mode=700
`
	mountsV1 = `22 1 0:21 / / rw,relatime - ext4 /dev/vda rw
31 22 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
`
	statusRoot = "Name:\tagentcg\nTgid:\t4242\nUid:\t0\t0\t0\t0\nCapEff:\t000001ffffffffff\n"
	statusUser = "Name:\tagentcg\nUid:\t1000\t1000\t1000\t1000\nCapEff:\t0000000000000000\n"
)

// node is a fake filesystem root: path -> content (mode 0755 for /usr/bin).
type node map[string]string

func (n node) write(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for p, c := range n {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if strings.HasPrefix(p, "/usr/bin/") {
			mode = 0o755
		}
		if strings.HasSuffix(p, "/") {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(c), mode); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// good is a configured node: containerd and Docker, plugin running, hook installed.
func good(t *testing.T) node {
	stock, err := os.ReadFile("../configure/testdata/containerd-2.1.9-default.toml")
	if err != nil {
		t.Fatal(err)
	}
	cd, _, err := configure.Containerd(stock, configure.DefaultContainerdOptions())
	if err != nil {
		t.Fatal(err)
	}
	dk, _, err := configure.Docker(nil, configure.DockerOptions{WrapperPath: "/usr/bin/agentcg-runc", SetDefault: true})
	if err != nil {
		t.Fatal(err)
	}
	return node{
		"/proc/self/mountinfo": mountsV2,
		"/proc/self/status":    statusRoot,
		"/proc/self/cgroup":    "0::/system.slice/agentcg.service\n",
		"/sys/fs/cgroup/system.slice/agentcg.service/cgroup.procs": "4242\n",
		"/sys/fs/cgroup/cgroup.procs":                              "1\n",
		"/proc/sys/kernel/osrelease":                               "7.3.4-memcgbpf\n",
		pluginLock:                                                 lockHeldMarker,
		"/run/agentcg/containers/agentcg-nri.status":               `{"pid":412,"version":"v1","mode":"bpf","connected":true,"since":"2026-11-30T08:00:00Z","runtime":"containerd","runtime_version":"2.1.9"}`,
		"/proc/1/comm":                                             "systemd\n",
		"/sys/fs/cgroup/cgroup.controllers":                        "cpuset cpu io memory pids\n",
		"/etc/agentcg/config.yaml":                                 "mode: bpf\nmetrics_addr: 127.0.0.1:9464\n",
		"/etc/containerd/config.toml":                              string(cd),
		"/etc/docker/daemon.json":                                  string(dk),
		"/usr/bin/agentcg-runc":                                    "#!",
		"/usr/bin/agentcg-hook":                                    "#!",
		"/run/agentcg/containers/":                                 "",
		"/run/containerd/containerd.sock":                          "",
		"/var/run/nri/nri.sock":                                    "",
	}
}

// pluginLock is agentcg-nri's instance lock; with content lockHeldMarker,
// runDoctor holds it as a running plugin would.
const (
	pluginLock     = "/run/agentcg/containers/agentcg-nri.lock"
	lockHeldMarker = "held by the test"
)

// runDoctor runs every check on the fake node n. ready is what /readyz
// answers; a negative one makes it unreachable.
func runDoctor(t *testing.T, n node, probe error, ready int) map[string]Result {
	t.Helper()
	root := n.write(t)
	if n[pluginLock] == lockHeldMarker {
		f, err := os.Open(filepath.Join(root, pluginLock))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			t.Fatal(err)
		}
	}
	env := Env{
		Root:  root,
		Probe: func() error { return probe },
		HTTPGet: func(context.Context, string) (int, error) {
			if ready < 0 {
				return 0, errors.New("connect: connection refused")
			}
			return ready, nil
		},
		ContainerdOptions: configure.DefaultContainerdOptions(),
	}
	out := map[string]Result{}
	for _, r := range Run(context.Background(), env) {
		out[r.Name] = r
	}
	return out
}

func TestAllGreen(t *testing.T) {
	rs := runDoctor(t, good(t), nil, 200)
	for name, r := range rs {
		if r.Status != OK {
			t.Errorf("%s: %s %s (fix %s)", name, r.Status, r.Detail, r.Fix)
		}
	}
	var buf bytes.Buffer
	list := make([]Result, 0, len(rs))
	for _, r := range rs {
		list = append(list, r)
	}
	Print(&buf, list)
	if !strings.Contains(buf.String(), "12 ok, 0 warn, 0 fail, 0 skip") {
		t.Errorf("summary:\n%s", buf.String())
	}
}

// TestEachCheck breaks one thing at a time: that check (and only the
// expected ones) fails, with a fix.
func TestEachCheck(t *testing.T) {
	missing := errors.New("no BTF type")
	tests := []struct {
		name   string
		change func(n node)
		probe  error
		ready  int
		check  string
		status Status
		detail string // substring of the detail
		fix    string // substring of the fix
	}{
		{name: "kernel lacks feature, mode bpf", probe: missing, check: "kernel", status: Fail, detail: "no BTF type", fix: "make kernel"},
		{name: "kernel lacks feature, mode auto", change: func(n node) { n["/etc/agentcg/config.yaml"] = "mode: auto\n" }, probe: missing, check: "kernel", status: Warn, fix: "native fallback"},
		{name: "kernel unused in native", change: func(n node) { n["/etc/agentcg/config.yaml"] = "mode: native\n" }, probe: missing, check: "kernel", status: Skip},
		{name: "bad config", change: func(n node) { n["/etc/agentcg/config.yaml"] = "mode: turbo\n" }, check: "config", status: Fail, detail: "turbo", fix: "fix /etc/agentcg/config.yaml"},
		{name: "no config", change: func(n node) { delete(n, "/etc/agentcg/config.yaml") }, check: "config", status: Warn, fix: "write"},
		{name: "no bpffs", change: func(n node) { n["/proc/self/mountinfo"] = strings.ReplaceAll(mountsV2, " - bpf bpf", " - tmpfs tmpfs") }, check: "bpffs", status: Fail, fix: "mount -t bpf"},
		{name: "private cgroup namespace", change: func(n node) { n["/proc/self/cgroup"] = "0::/\n" }, check: "privileges", status: Fail, detail: "private cgroup namespace", fix: "privileged pod"},
		{name: "private cgroup namespace, deeper", change: func(n node) { n["/proc/self/cgroup"] = "0::/sub\n" }, check: "privileges", status: Fail, detail: "private cgroup namespace"},
		{name: "private cgroup namespace, native", change: func(n node) {
			n["/proc/self/cgroup"] = "0::/\n"
			n["/etc/agentcg/config.yaml"] = "mode: native\n"
		}, check: "privileges", status: OK},
		{name: "not root", change: func(n node) { n["/proc/self/status"] = statusUser }, check: "privileges", status: Fail, detail: "CAP_BPF, CAP_PERFMON, uid 0", fix: "root"},
		{name: "cgroup v1", change: func(n node) { n["/proc/self/mountinfo"] = mountsV1 }, check: "cgroup v2", status: Fail, detail: "cgroup v1 hierarchies: /sys/fs/cgroup/memory", fix: "unified"},
		{name: "no memory controller", change: func(n node) { n["/sys/fs/cgroup/cgroup.controllers"] = "cpu io\n" }, check: "cgroup v2", status: Fail, detail: "lacks memory"},
		{name: "driver mismatch", change: func(n node) { n["/var/lib/kubelet/config.yaml"] = "cgroupDriver: systemd\n" }, check: "cgroup driver", status: Fail, fix: "agree"},
		{name: "driver mismatch, kubelet --config", change: func(n node) {
			n["/proc/77/comm"] = "kubelet\n"
			n["/proc/77/cmdline"] = "/usr/local/bin/kubelet\x00--config=/etc/kubernetes/kubelet.yaml\x00--v=1\x00"
			n["/etc/kubernetes/kubelet.yaml"] = "kind: KubeletConfiguration\ncgroupDriver: systemd\n"
		}, check: "cgroup driver", status: Fail, detail: "kubelet systemd", fix: "agree"},
		{name: "stock containerd", change: func(n node) {
			b, _ := os.ReadFile("../configure/testdata/containerd-2.1.9-default.toml")
			n["/etc/containerd/config.toml"] = string(b)
		}, check: "containerd config", status: Fail, detail: "container_annotations", fix: "agentcg configure --runtime containerd"},
		{name: "containerd not restarted", change: func(n node) { delete(n, "/var/run/nri/nri.sock") }, check: "containerd config", status: Fail, detail: "not restarted", fix: "restart containerd"},
		{name: "no docker runtime", change: func(n node) { n["/etc/docker/daemon.json"] = `{"storage-driver": "overlay2"}` }, check: "docker config", status: Fail, fix: "agentcg configure --runtime docker"},
		{name: "no docker runtime, hook", change: func(n node) { n["/etc/docker/daemon.json"] = `{}` }, check: "hook", status: Fail},
		{name: "wrapper missing", change: func(n node) { delete(n, "/usr/bin/agentcg-runc") }, check: "hook", status: Fail, detail: "/usr/bin/agentcg-runc is missing"},
		{name: "plugin not running", change: func(n node) { delete(n, "/run/agentcg/containers/agentcg-nri.status") }, check: "plugin", status: Fail, fix: "systemctl enable --now agentcg-nri"},
		{name: "plugin died", change: func(n node) { n[pluginLock] = "" }, check: "plugin", status: Fail, detail: "nothing holds /run/agentcg/containers/agentcg-nri.lock"},
		{name: "plugin never locked", change: func(n node) { delete(n, pluginLock) }, check: "plugin", status: Fail, detail: "not running"},
		{name: "plugin in a pod's network namespace", ready: -1, check: "plugin", status: Warn, detail: "not reachable from here", fix: "hostNetwork"},
		{name: "plugin not connected", change: func(n node) {
			n["/run/agentcg/containers/agentcg-nri.status"] = `{"pid":412,"connected":false,"since":"2026-11-30T08:00:00Z"}`
		}, check: "plugin", status: Fail, detail: "not connected", fix: "NRI on"},
		{name: "plugin status corrupt", change: func(n node) { n["/run/agentcg/containers/agentcg-nri.status"] = "{" }, check: "plugin", status: Fail, fix: "restart"},
		{name: "plugin not ready", ready: 503, check: "plugin", status: Fail, detail: "answers 503"},
		{name: "no containerd, no plugin needed", change: func(n node) {
			delete(n, "/etc/containerd/config.toml")
			delete(n, "/run/containerd/containerd.sock")
			delete(n, "/run/agentcg/containers/agentcg-nri.status")
		}, check: "plugin", status: Skip},
		{name: "state dir unreadable", change: func(n node) {
			delete(n, "/run/agentcg/containers/")
			delete(n, "/run/agentcg/containers/agentcg-nri.status")
			delete(n, pluginLock)
			n["/run/agentcg/containers"] = "a file"
		}, check: "state dir", status: Fail, fix: "readable"},
		{name: "hook log folder missing", change: func(n node) {
			n["/etc/agentcg/config.yaml"] = "mode: bpf\nmetrics_addr: 127.0.0.1:9464\nhook_log: /nonexistent-dir/hook.log\n"
		}, check: "hook", status: Fail, detail: "hook_log", fix: "check-config"},
		{name: "hooks.d timeout below hook_timeout", change: func(n node) {
			n["/etc/containers/oci/hooks.d/agentcg-createruntime.json"] = `{"version": "1.0.0", "hook": {"path": "/usr/bin/agentcg-hook", "timeout": 2}, "when": {"annotations": {"^agentcg\\.priority": ".*"}}, "stages": ["createRuntime"]}`
		}, check: "hook", status: Fail, detail: "kills the hook after 2 s"},
		{name: "closed on containerd 2.1", change: func(n node) { n["/etc/agentcg/config.yaml"] = closedConfig },
			check: "fail mode", status: Warn, detail: "containerd 2.1.9 cannot", fix: "upgrade containerd to >= 2.2, then set"},
		{name: "closed on containerd 2.1 with required plugins", change: func(n node) {
			n["/etc/agentcg/config.yaml"] = closedConfig
			n["/etc/containerd/config.toml"] += requirePlugin("agentcg")
		}, check: "fail mode", status: Warn, detail: "is ignored", fix: "upgrade containerd"},
		{name: "closed on containerd 2.2 without required plugins", change: func(n node) {
			n["/etc/agentcg/config.yaml"] = closedConfig
			n[statusFile] = strings.Replace(n[statusFile], `"2.1.9"`, `"2.2.9"`, 1)
		}, check: "fail mode", status: Warn, detail: "does not require the plugin", fix: "on containerd >= 2.2 set"},
		{name: "closed on containerd 2.2 with required plugins", change: func(n node) {
			n["/etc/agentcg/config.yaml"] = closedConfig
			n[statusFile] = strings.Replace(n[statusFile], `"2.1.9"`, `"2.2.9"`, 1)
			n["/etc/containerd/config.toml"] += requirePlugin("50-agentcg")
		}, check: "fail mode", status: OK, detail: "requires agentcg"},
		{name: "closed, required plugins, version unknown", change: func(n node) {
			n["/etc/agentcg/config.yaml"] = closedConfig
			n[statusFile] = strings.Replace(n[statusFile], `"2.1.9"`, `""`, 1)
			n["/etc/containerd/config.toml"] += requirePlugin("agentcg")
		}, check: "fail mode", status: OK, detail: "version is unknown"},
		{name: "closed, another plugin required", change: func(n node) {
			n["/etc/agentcg/config.yaml"] = closedConfig
			n[statusFile] = strings.Replace(n[statusFile], `"2.1.9"`, `"2.2.9"`, 1)
			n["/etc/containerd/config.toml"] += requirePlugin("foo-agentcg")
		}, check: "fail mode", status: Warn, detail: "does not require"},
		{name: "closed with required plugins disabled", change: func(n node) {
			n["/etc/agentcg/config.yaml"] = closedConfig
			n[statusFile] = strings.Replace(n[statusFile], `"2.1.9"`, `"2.2.9"`, 1)
			n["/etc/containerd/config.toml"] += strings.Replace(requirePlugin("agentcg"), "enable = true", "enable = false", 1)
		}, check: "fail mode", status: Warn, detail: "does not require"},
		{name: "closed, hook only", change: func(n node) {
			n["/etc/agentcg/config.yaml"] = "mode: bpf\nfail_mode: closed\n"
			delete(n, "/etc/containerd/config.toml")
			delete(n, "/run/containerd/containerd.sock")
		}, check: "fail mode", status: OK, detail: "the hook refuses"},
		{name: "closed, containerd config broken", change: func(n node) {
			n["/etc/agentcg/config.yaml"] = closedConfig
			n["/etc/containerd/config.toml"] = "version = \n"
		}, check: "fail mode", status: Skip, detail: "does not parse"},
		{name: "hooks.d broken", change: func(n node) { n["/etc/containers/oci/hooks.d/agentcg-poststop.json"] = `{"hook": {}}` }, check: "hook", status: Fail, detail: "no hook.path"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := good(t)
			if tc.change != nil {
				tc.change(n)
			}
			ready := tc.ready
			if ready == 0 {
				ready = 200
			}
			rs := runDoctor(t, n, tc.probe, ready)
			r := rs[tc.check]
			if r.Status != tc.status || !strings.Contains(r.Detail, tc.detail) || !strings.Contains(r.Fix, tc.fix) {
				t.Errorf("%s: %s %q fix %q; want %s, detail ~%q, fix ~%q", tc.check, r.Status, r.Detail, r.Fix, tc.status, tc.detail, tc.fix)
			}
			if (r.Status == Fail || r.Status == Warn) && r.Fix == "" {
				t.Errorf("%s: %s without a fix", tc.check, r.Status)
			}
		})
	}
}

// closedConfig is the good node's config with fail_mode closed.
const (
	closedConfig = "mode: bpf\nfail_mode: closed\nmetrics_addr: 127.0.0.1:9464\n"
	statusFile   = "/run/agentcg/containers/agentcg-nri.status"
)

// requirePlugin is a containerd config.toml fragment requiring plugin name.
func requirePlugin(name string) string {
	return "\n[plugins.'io.containerd.nri.v1.nri'.default_validator]\n  enable = true\n  required_plugins = ['" + name + "']\n"
}

func TestVersionAtLeast(t *testing.T) {
	for _, tc := range []struct {
		version        string
		atLeast, known bool
	}{
		{"2.1.9", false, true}, {"2.2.0", true, true}, {"v2.2.9", true, true}, {"2.2.0-rc.1", true, true}, {"2.10.1", true, true},
		{"3.0", true, true}, {"1.7.27", false, true}, {"", false, false}, {"2", false, false}, {"x.y", false, false},
	} {
		if got, known := versionAtLeast(tc.version, 2, 2); got != tc.atLeast || known != tc.known {
			t.Errorf("versionAtLeast(%q, 2, 2) = %v, %v; want %v, %v", tc.version, got, known, tc.atLeast, tc.known)
		}
	}
}

func TestIsPluginName(t *testing.T) {
	for s, want := range map[string]bool{"agentcg": true, "50-agentcg": true, "05-agentcg": true, "foo-agentcg": false, "500-agentcg": false, "50-other": false, "": false, "-agentcg": false} {
		if got := isPluginName(s); got != want {
			t.Errorf("isPluginName(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestMountinfo(t *testing.T) {
	f := filepath.Join(t.TempDir(), "mountinfo")
	os.WriteFile(f, []byte("36 25 0:32 / /mnt/with\\040space rw shared:1 - bpf bpf rw\ngarbage\n"), 0o644)
	ms, err := readMountinfo(f)
	if err != nil || len(ms) != 1 || ms[0].point != "/mnt/with space" || ms[0].fstype != "bpf" {
		t.Fatalf("%+v %v", ms, err)
	}
	if m, ok := mountOf(ms, "/mnt/with space/agentcg"); !ok || m.fstype != "bpf" {
		t.Errorf("mountOf: %+v %v", m, ok)
	}
	if _, ok := mountOf(ms, "/mnt/with spaceX"); ok {
		t.Error("prefix without a slash matched")
	}
}

func TestCommandJSON(t *testing.T) {
	root := good(t).write(t)
	cmd := Command()
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--root", root, "--json"})
	err := cmd.Execute()
	// The real probe runs here: on a machine without the feature the
	// kernel check fails (mode bpf) and the command says so.
	if err != nil && err != ErrFailed {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"name": "privileges"`) {
		t.Errorf("json output:\n%s", out.String())
	}
}
