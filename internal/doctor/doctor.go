// Package doctor checks one node the way an operator would before trusting
// agentcg on it: kernel feature, bpffs, privileges, cgroup v2 and driver,
// the runtimes' configuration, the plugin, the hook, the state dir. Every
// check reads files under a root (a fake tree in tests) and says, when it
// fails, what to change.
package doctor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/agentcg/agentcg/enroll"
	"github.com/agentcg/agentcg/hook"
	"github.com/agentcg/agentcg/internal/configure"
	"github.com/agentcg/agentcg/plugin"
	"github.com/agentcg/agentcg/policy"
	"github.com/pelletier/go-toml/v2"
	"golang.org/x/sys/unix"
)

// Status of one check.
type Status string

const (
	OK   Status = "ok"
	Warn Status = "warn" // works, but not as an operator would want
	Fail Status = "fail" // agentcg cannot work this way
	Skip Status = "skip" // not applicable on this node
)

// Result is one check's outcome.
type Result struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"` // what to change, for warn and fail
}

// Env is what the checks read. Root prefixes every absolute path.
type Env struct {
	Root       string
	ConfigPath string // the agentcg config ("" = default path if present)
	// Probe is bpf.Probe (the kernel BTF check) in production.
	Probe func() error
	// HTTPGet fetches a URL (the plugin's /readyz); nil means net/http.
	HTTPGet func(ctx context.Context, url string) (int, error)
	// ContainerdOptions are configure's minimum timeouts.
	ContainerdOptions configure.ContainerdOptions
}

func (e Env) path(p string) string { return filepath.Join(e.Root, p) }

// Capabilities the plugin and hook need (numbers from linux/capability.h).
const (
	capSysAdmin    = 21
	capDacOverride = 1
	capPerfmon     = 38
	capBPF         = 39
)

// Run performs every check in order.
func Run(ctx context.Context, e Env) []Result {
	if e.Root == "" {
		e.Root = "/"
	}
	cfg, cfgRes := e.config()
	mounts, mountErr := readMountinfo(e.path("/proc/self/mountinfo"))
	out := []Result{cfgRes, e.kernel(cfg), e.bpffs(cfg, mounts, mountErr), e.privileges(cfg), e.cgroupV2(cfg, mounts, mountErr)}
	cd, cdDoc := e.containerd()
	dk, dkDoc := e.docker()
	// The plugin's status file, read once: whether it runs, and which
	// runtime version it connected to.
	st, stErr := plugin.ReadStatus(e.path(plugin.StatusPath(cfg.StateDir)))
	out = append(out, e.cgroupDriver(cdDoc, dkDoc), cd, dk, e.plugin(ctx, cfg, cdDoc != nil, st, stErr), e.failMode(cfg, cd, cdDoc, st, stErr), e.hook(dkDoc), e.stateDir(cfg))
	return out
}

// Failed reports whether any result failed.
func Failed(rs []Result) bool {
	for _, r := range rs {
		if r.Status == Fail {
			return true
		}
	}
	return false
}

func (e Env) config() (enroll.Config, Result) {
	r := Result{Name: "config"}
	p := e.ConfigPath
	explicit := p != ""
	if !explicit {
		p = enroll.DefaultConfigPath
	}
	b, err := os.ReadFile(e.path(p))
	switch {
	case errors.Is(err, fs.ErrNotExist) && !explicit:
		r.Status, r.Detail = Warn, p+" absent: plugin and hook run with the defaults (nobody may claim high)"
		r.Fix = "write " + p + " (see plugin/config.example.yaml; the .deb installs one)"
		return enroll.DefaultConfig(), r
	case err != nil:
		r.Status, r.Detail, r.Fix = Fail, err.Error(), "make "+p+" readable"
		return enroll.DefaultConfig(), r
	}
	cfg, err := enroll.ParseConfig(bytes.NewReader(b))
	if err != nil {
		r.Status, r.Detail = Fail, fmt.Sprintf("%s: %v", p, err)
		r.Fix = "fix " + p + ": the hook and the plugin refuse it"
		return enroll.DefaultConfig(), r
	}
	r.Status, r.Detail = OK, fmt.Sprintf("%s valid: mode %s, fail_mode %s, state_dir %s", p, cfg.Mode, cfg.FailMode, cfg.StateDir)
	return cfg, r
}

func (e Env) kernel(cfg enroll.Config) Result {
	r := Result{Name: "kernel"}
	release, _ := os.ReadFile(e.path("/proc/sys/kernel/osrelease"))
	rel := strings.TrimSpace(string(release))
	if e.Probe == nil {
		r.Status, r.Detail = Skip, "no probe"
		return r
	}
	if err := e.Probe(); err != nil {
		r.Detail = fmt.Sprintf("kernel %s: %v", rel, err)
		r.Fix = "boot a kernel with the memcg BPF struct_ops series (make kernel, scripts/kernel/README.md)"
		switch cfg.Mode {
		case policy.ModeNative:
			r.Status, r.Detail = Skip, "mode native: the BPF feature is not used ("+r.Detail+")"
			r.Fix = ""
		case policy.ModeAuto:
			r.Status = Warn
			r.Fix += "; until then mode auto uses the native fallback (memory.low / memory.high)"
		default:
			r.Status = Fail
		}
		return r
	}
	r.Status, r.Detail = OK, "memcg_bpf_ops available (kernel "+rel+")"
	return r
}

// mount is one line of /proc/self/mountinfo.
type mount struct{ point, fstype, options string }

func readMountinfo(file string) ([]mount, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mount
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root point options [optional...] - fstype source superoptions
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 6 || sep+1 >= len(fields) {
			continue
		}
		out = append(out, mount{point: unescapeMount(fields[4]), fstype: fields[sep+1], options: fields[5]})
	}
	return out, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountOf returns the mount that holds path (the longest matching point).
func mountOf(mounts []mount, path string) (mount, bool) {
	var best mount
	found := false
	for _, m := range mounts {
		if (path == m.point || m.point == "/" || strings.HasPrefix(path, m.point+"/")) && len(m.point) >= len(best.point) {
			best, found = m, true
		}
	}
	return best, found
}

func (e Env) bpffs(cfg enroll.Config, mounts []mount, err error) Result {
	r := Result{Name: "bpffs"}
	if cfg.Mode == policy.ModeNative {
		r.Status, r.Detail = Skip, "mode native pins nothing"
		return r
	}
	if err != nil {
		r.Status, r.Detail, r.Fix = Fail, err.Error(), "run doctor where /proc is mounted"
		return r
	}
	pin := cfg.Policy.PinDir
	if m, ok := mountOf(mounts, pin); ok && m.fstype == "bpf" {
		r.Status, r.Detail = OK, fmt.Sprintf("pin dir %s is on bpffs (mounted at %s)", pin, m.point)
		return r
	}
	r.Status, r.Detail = Fail, fmt.Sprintf("pin dir %s is not on a bpf filesystem: links could not outlive the process that made them", pin)
	r.Fix = "mount -t bpf bpf /sys/fs/bpf (fstab: bpf /sys/fs/bpf bpf defaults 0 0; systemd mounts it by default)"
	return r
}

func (e Env) privileges(cfg enroll.Config) Result {
	r := Result{Name: "privileges"}
	b, err := os.ReadFile(e.path("/proc/self/status"))
	if err != nil {
		r.Status, r.Detail, r.Fix = Fail, err.Error(), "run doctor where /proc is mounted"
		return r
	}
	var eff uint64
	uid := -1
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "CapEff":
			eff, _ = strconv.ParseUint(v, 16, 64)
		case "Uid":
			if f := strings.Fields(v); len(f) > 1 {
				uid, _ = strconv.Atoi(f[1]) // effective uid
			}
		}
	}
	has := func(c uint) bool { return eff&(1<<c) != 0 }
	var missing []string
	if !has(capBPF) && !has(capSysAdmin) {
		missing = append(missing, "CAP_BPF")
	}
	if !has(capPerfmon) && !has(capSysAdmin) {
		missing = append(missing, "CAP_PERFMON")
	}
	if uid != 0 && !has(capDacOverride) {
		missing = append(missing, "uid 0 or CAP_DAC_OVERRIDE (bpffs, cgroup files and the NRI socket are root's)")
	}
	if len(missing) > 0 {
		r.Status = Fail
		r.Detail = fmt.Sprintf("this process (euid %d, CapEff %016x) lacks %s", uid, eff, strings.Join(missing, ", "))
		r.Fix = "run doctor, agentcg-nri and the hook as root with CAP_BPF and CAP_PERFMON (the chart's pod is privileged)"
		return r
	}
	r.Status, r.Detail = OK, fmt.Sprintf("euid %d with CAP_BPF and CAP_PERFMON", uid)
	if cfg.Mode == policy.ModeNative {
		return r
	}
	switch private, err := e.privateCgroupNS(cfg.CgroupRoot, string(b)); {
	case err != nil:
		r.Detail += fmt.Sprintf("; cgroup namespace not checked: %v", err)
	case private:
		r.Status = Fail
		r.Detail += "; but this process runs in a private cgroup namespace, where BPF_LINK_CREATE on a container's cgroup fails with ENOENT"
		r.Fix = "run agentcg-nri, the hook and doctor in the host's cgroup namespace: on the host, or in a privileged pod (the chart's)"
	default:
		r.Detail += ", in the host's cgroup namespace"
	}
	return r
}

// privateCgroupNS reports whether this process sees its cgroup through a
// private cgroup namespace: /proc/self/cgroup names its cgroup relative to
// the namespace's root, so under the host's cgroup2 mount that path does
// not list this process. status is /proc/self/status (for the Tgid).
func (e Env) privateCgroupNS(cgroupRoot, status string) (bool, error) {
	b, err := os.ReadFile(e.path("/proc/self/cgroup"))
	if err != nil {
		return false, err
	}
	rel, ok := "", false
	for _, line := range strings.Split(string(b), "\n") {
		if v, found := strings.CutPrefix(line, "0::"); found {
			rel, ok = v, true
		}
	}
	if !ok {
		return false, errors.New("no cgroup v2 line in /proc/self/cgroup")
	}
	tgid := ""
	for _, line := range strings.Split(status, "\n") {
		if v, found := strings.CutPrefix(line, "Tgid:"); found {
			tgid = strings.TrimSpace(v)
		}
	}
	if tgid == "" {
		return false, errors.New("no Tgid in /proc/self/status")
	}
	procs, err := os.ReadFile(e.path(filepath.Join(cgroupRoot, rel, "cgroup.procs")))
	if errors.Is(err, fs.ErrNotExist) {
		return true, nil // that path exists only inside the namespace
	}
	if err != nil {
		return false, err
	}
	return !slices.Contains(strings.Fields(string(procs)), tgid), nil
}

func (e Env) cgroupV2(cfg enroll.Config, mounts []mount, err error) Result {
	r := Result{Name: "cgroup v2"}
	if err != nil {
		r.Status, r.Detail, r.Fix = Fail, err.Error(), "run doctor where /proc is mounted"
		return r
	}
	root := cfg.CgroupRoot
	m, ok := mountOf(mounts, root)
	if !ok || m.fstype != "cgroup2" || m.point != root {
		var v1 []string
		for _, m := range mounts {
			if m.fstype == "cgroup" {
				v1 = append(v1, m.point)
			}
		}
		r.Status = Fail
		r.Detail = fmt.Sprintf("%s is not a cgroup2 mount", root)
		if len(v1) > 0 {
			r.Detail += fmt.Sprintf(" (cgroup v1 hierarchies: %s)", strings.Join(v1, " "))
		}
		r.Fix = "boot with the unified hierarchy (systemd.unified_cgroup_hierarchy=1, or cgroup_no_v1=all), or set cgroup_root to the cgroup2 mount"
		return r
	}
	ctrl, err := os.ReadFile(e.path(filepath.Join(root, "cgroup.controllers")))
	if err != nil {
		r.Status, r.Detail, r.Fix = Fail, err.Error(), "check that "+root+" is the cgroup2 root"
		return r
	}
	if !strings.Contains(" "+strings.TrimSpace(string(ctrl))+" ", " memory ") {
		r.Status, r.Detail = Fail, fmt.Sprintf("%s/cgroup.controllers lacks memory (%q)", root, strings.TrimSpace(string(ctrl)))
		r.Fix = "enable the memory controller (kernel cmdline cgroup_enable=memory; not disabled with cgroup_disable=memory)"
		return r
	}
	r.Status, r.Detail = OK, fmt.Sprintf("cgroup2 at %s with the memory controller", root)
	return r
}

// containerd reads containerd's config; doc is nil when containerd is not on this node.
func (e Env) containerd() (Result, []byte) {
	r := Result{Name: "containerd config"}
	file := configure.DefaultContainerdConfig
	doc, err := os.ReadFile(e.path(file))
	_, sockErr := os.Stat(e.path("/run/containerd/containerd.sock"))
	switch {
	case errors.Is(err, fs.ErrNotExist) && sockErr != nil:
		r.Status, r.Detail = Skip, "containerd not found (no "+file+", no socket)"
		return r, nil
	case errors.Is(err, fs.ErrNotExist):
		doc = []byte{} // containerd runs on its built-in defaults
	case err != nil:
		r.Status, r.Detail, r.Fix = Fail, err.Error(), "make "+file+" readable"
		return r, nil
	}
	opt := e.ContainerdOptions
	if opt.Version == 0 {
		opt = configure.DefaultContainerdOptions()
	}
	fs, err := configure.CheckContainerd(doc, opt)
	if err != nil {
		r.Status, r.Detail, r.Fix = Fail, fmt.Sprintf("%s: %v", file, err), "fix the file's syntax"
		return r, doc
	}
	if len(fs) > 0 {
		r.Status, r.Detail = Fail, file+": "+joinFindings(fs)
		r.Fix = "agentcg configure --runtime containerd, then restart containerd"
		return r, doc
	}
	// The file can be right while the running containerd predates it.
	if sockErr == nil {
		nriSock := "/var/run/nri/nri.sock"
		var m map[string]any
		if toml.Unmarshal(doc, &m) == nil {
			if p, ok := configure.Lookup(m, []string{"plugins", "io.containerd.nri.v1.nri", "socket_path"}); ok {
				if ps, ok := p.(string); ok && ps != "" {
					nriSock = ps
				}
			}
		}
		if _, err := os.Stat(e.path(nriSock)); err != nil {
			r.Status, r.Detail = Fail, fmt.Sprintf("%s is complete, but containerd runs and %s is absent: it was not restarted since", file, nriSock)
			r.Fix = "restart containerd (systemctl restart containerd)"
			return r, doc
		}
	}
	r.Status, r.Detail = OK, file+": NRI on, timeouts and agentcg.* annotation pass-through set"
	return r, doc
}

func joinFindings(fs []configure.Finding) string {
	parts := make([]string, len(fs))
	for i, f := range fs {
		parts[i] = f.String()
	}
	return strings.Join(parts, "; ")
}

// docker reads daemon.json; doc is nil when Docker is not on this node.
func (e Env) docker() (Result, map[string]any) {
	r := Result{Name: "docker config"}
	file := configure.DefaultDockerConfig
	b, err := os.ReadFile(e.path(file))
	_, sockErr := os.Stat(e.path("/run/docker.sock"))
	switch {
	case errors.Is(err, fs.ErrNotExist) && sockErr != nil:
		r.Status, r.Detail = Skip, "docker not found (no "+file+", no socket)"
		return r, nil
	case errors.Is(err, fs.ErrNotExist):
		b = []byte("{}")
	case err != nil:
		r.Status, r.Detail, r.Fix = Fail, err.Error(), "make "+file+" readable"
		return r, nil
	}
	var m map[string]any
	if len(bytes.TrimSpace(b)) == 0 {
		b = []byte("{}")
	}
	if err := json.Unmarshal(b, &m); err != nil || m == nil {
		r.Status, r.Detail, r.Fix = Fail, fmt.Sprintf("%s: not a JSON object: %v", file, err), "fix the file's syntax"
		return r, nil
	}
	rts, _ := m["runtimes"].(map[string]any)
	rt, _ := rts[configure.RuntimeName].(map[string]any)
	path, _ := rt["path"].(string)
	if path == "" {
		r.Status, r.Detail = Fail, file+": no \""+configure.RuntimeName+"\" runtime"
		r.Fix = "agentcg configure --runtime docker [--set-default], then restart dockerd"
		return r, m
	}
	r.Status, r.Detail = OK, fmt.Sprintf("%s: runtime %s -> %s", file, configure.RuntimeName, path)
	if m["default-runtime"] == configure.RuntimeName {
		r.Detail += " (the default runtime)"
	} else {
		r.Detail += " (use docker run --runtime agentcg, or configure --set-default)"
	}
	return r, m
}

func (e Env) cgroupDriver(containerdDoc []byte, docker map[string]any) Result {
	r := Result{Name: "cgroup driver"}
	var drivers []string
	cdDriver := ""
	if containerdDoc != nil {
		var m map[string]any
		if toml.Unmarshal(containerdDoc, &m) == nil {
			cdDriver = "cgroupfs"
			for _, base := range [][]string{
				{"plugins", "io.containerd.cri.v1.runtime", "containerd", "runtimes", "runc", "options", "SystemdCgroup"},
				{"plugins", "io.containerd.grpc.v1.cri", "containerd", "runtimes", "runc", "options", "SystemdCgroup"},
			} {
				if v, ok := configure.Lookup(m, base); ok && v == true {
					cdDriver = "systemd"
				}
			}
			drivers = append(drivers, "containerd (runc) "+cdDriver)
		}
	}
	if docker != nil {
		d := "cgroupfs"
		if _, err := os.Stat(e.path("/run/systemd/system")); err == nil {
			d = "systemd" // dockerd's default under systemd on cgroup v2
		}
		if opts, ok := docker["exec-opts"].([]any); ok {
			for _, o := range opts {
				if s, ok := o.(string); ok && strings.HasPrefix(s, "native.cgroupdriver=") {
					d = strings.TrimPrefix(s, "native.cgroupdriver=")
				}
			}
		}
		drivers = append(drivers, "docker "+d)
	}
	kubelet := ""
	if b, err := os.ReadFile(e.path(e.kubeletConfig())); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "cgroupDriver:"); ok {
				kubelet = strings.Trim(strings.TrimSpace(v), `"'`)
			}
		}
		if kubelet == "" {
			kubelet = "cgroupfs" // the kubelet's default
		}
		drivers = append(drivers, "kubelet "+kubelet)
	}
	if len(drivers) == 0 {
		r.Status, r.Detail = Skip, "no runtime found"
		return r
	}
	r.Detail = strings.Join(drivers, ", ") + " (agentcg reads both path forms)"
	if kubelet != "" && cdDriver != "" && kubelet != cdDriver {
		r.Status = Fail
		r.Fix = fmt.Sprintf("make the kubelet's cgroupDriver (%s) and containerd's SystemdCgroup (%s) agree", kubelet, cdDriver)
		return r
	}
	r.Status = OK
	return r
}

// kubeletConfig is the running kubelet's --config file, else kubeadm's
// default path.
func (e Env) kubeletConfig() string {
	const kubeadm = "/var/lib/kubelet/config.yaml"
	ents, err := os.ReadDir(e.path("/proc"))
	if err != nil {
		return kubeadm
	}
	for _, d := range ents {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		comm, err := os.ReadFile(e.path(filepath.Join("/proc", d.Name(), "comm")))
		if err != nil || strings.TrimSpace(string(comm)) != "kubelet" {
			continue
		}
		cmdline, err := os.ReadFile(e.path(filepath.Join("/proc", d.Name(), "cmdline")))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		for i, a := range args {
			if v, ok := strings.CutPrefix(a, "--config="); ok {
				return v
			}
			if a == "--config" && i+1 < len(args) {
				return args[i+1]
			}
		}
	}
	return kubeadm
}

// plugin checks the status file agentcg-nri keeps in the state dir (is it
// alive, is it connected to the NRI socket), and asks its /readyz when the
// config names a metrics address. st and err are plugin.ReadStatus of that
// file.
func (e Env) plugin(ctx context.Context, cfg enroll.Config, containerd bool, st plugin.Status, err error) Result {
	r := Result{Name: "plugin"}
	if !containerd {
		r.Status, r.Detail = Skip, "no containerd: the NRI plugin is not needed"
		return r
	}
	statusPath := plugin.StatusPath(cfg.StateDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		r.Status, r.Detail = Fail, fmt.Sprintf("no agentcg-nri status file (%s): the plugin is not running, so containerd starts annotated containers without the policy", statusPath)
		r.Fix = "systemctl enable --now agentcg-nri (deb), or deploy the Helm chart, or link agentcg-nri into /opt/nri/plugins"
		return r
	case err != nil:
		r.Status, r.Detail, r.Fix = Fail, err.Error(), "restart agentcg-nri (it rewrites the file)"
		return r
	}
	// The pid may be another pid namespace's (the chart's pod), so whether
	// the plugin lives is read from its instance lock, which it holds for
	// as long as it runs, in whatever namespace.
	lockPath := plugin.LockPath(cfg.StateDir)
	if held, err := lockHeld(e.path(lockPath)); err != nil || !held {
		r.Status, r.Detail = Fail, fmt.Sprintf("%s names pid %d, but nothing holds %s: agentcg-nri is not running", statusPath, st.Pid, lockPath)
		if err != nil {
			r.Detail += fmt.Sprintf(" (%v)", err)
		}
		r.Fix = "systemctl restart agentcg-nri (journalctl -u agentcg-nri says why it stopped), or see the pod's log"
		return r
	}
	r.Detail = fmt.Sprintf("agentcg-nri %s (pid %d, mode %s)", st.Version, st.Pid, st.Mode)
	if !st.Connected {
		r.Status = Fail
		r.Detail += fmt.Sprintf(" is not connected to the NRI socket (since %s)", st.Since.Format(time.RFC3339))
		r.Fix = "check that containerd runs with NRI on (agentcg configure --runtime containerd, restart containerd) and the plugin's log"
		return r
	}
	r.Detail += fmt.Sprintf(" connected to %s %s since %s", st.Runtime, st.RuntimeVersion, st.Since.Format(time.RFC3339))
	if cfg.MetricsAddr == "" {
		r.Status = OK
		return r
	}
	url := "http://" + dialAddr(cfg.MetricsAddr) + "/readyz"
	get := e.HTTPGet
	if get == nil {
		get = httpGet
	}
	code, err := get(ctx, url)
	switch {
	case err != nil:
		// The chart's pod serves metrics_addr in its own network
		// namespace, out of reach from the node's loopback.
		r.Status = Warn
		r.Detail += fmt.Sprintf("; %s not reachable from here (%v)", url, err)
		r.Fix = "where the plugin runs in a pod without hostNetwork, ask the pod's /readyz (kubectl get pods shows its readiness); else check the plugin's log"
		return r
	case code != http.StatusOK:
		r.Status = Fail
		r.Detail += fmt.Sprintf("; but %s answers %d", url, code)
		r.Fix = "check the plugin's log (journalctl -u agentcg-nri, or the pod's log)"
		return r
	}
	r.Status = OK
	r.Detail += "; " + url + " ready"
	return r
}

// pluginName is the name agentcg-nri registers with NRI (its --name).
const pluginName = "agentcg"

// failMode checks that fail_mode closed also holds while the plugin is
// absent, which only the runtime can enforce: containerd >= 2.2 with NRI's
// default validator requiring the plugin (plugin/README.md, "Fail modes").
// cd and containerdDoc are the containerd check's result and the file; st
// and stErr the plugin's status.
func (e Env) failMode(cfg enroll.Config, cd Result, containerdDoc []byte, st plugin.Status, stErr error) Result {
	r := Result{Name: "fail mode"}
	switch {
	case cfg.FailMode != enroll.FailClosed:
		r.Status, r.Detail = OK, fmt.Sprintf("%s: a container whose attach fails runs without the policy (logged and counted)", cfg.FailMode)
		return r
	case cd.Status == Skip:
		r.Status, r.Detail = OK, "closed: no containerd here; the hook refuses on its own path"
		return r
	case containerdDoc == nil:
		r.Status, r.Detail = Skip, "containerd's config is unreadable (see the containerd config check)"
		return r
	}
	var m map[string]any
	if err := toml.Unmarshal(containerdDoc, &m); err != nil {
		r.Status, r.Detail = Skip, "containerd's config does not parse (see the containerd config check)"
		return r
	}
	validator := []string{"plugins", "io.containerd.nri.v1.nri", "default_validator"}
	enabled, _ := configure.Lookup(m, append(validator, "enable"))
	required, _ := configure.Lookup(m, append(validator, "required_plugins"))
	names, _ := required.([]any)
	requires := enabled == true && slices.ContainsFunc(names, func(v any) bool {
		s, _ := v.(string)
		return isPluginName(s)
	})
	// The running containerd's version, as the plugin saw it at connect.
	version := ""
	if stErr == nil && st.Runtime == "containerd" {
		version = st.RuntimeVersion
	}
	newEnough, known := versionAtLeast(version, 2, 2)
	set := "set [plugins.'io.containerd.nri.v1.nri'.default_validator] enable = true, required_plugins = ['" + pluginName + "'] (plugin/README.md, \"Fail modes\")"
	switch {
	case known && !newEnough:
		r.Status = Warn
		r.Detail = fmt.Sprintf("closed refuses on every path the plugin sees, but containerd %s cannot refuse while agentcg-nri is down: NRI's required plugins need containerd >= 2.2", version)
		if requires {
			r.Detail += " (the default_validator in " + configure.DefaultContainerdConfig + " is ignored)"
		}
		r.Fix = "upgrade containerd to >= 2.2, then " + set
	case !requires:
		r.Status = Warn
		r.Detail = "closed refuses on every path the plugin sees, but containerd does not require the plugin: while agentcg-nri is down, annotated containers start without the policy"
		r.Fix = "on containerd >= 2.2 " + set
	default:
		r.Status = OK
		r.Detail = "closed, and containerd's NRI default validator requires " + pluginName + ": while the plugin is down, containers are refused (before NRI 0.12.5, except a create that is the runtime's first NRI call after the drop)"
		if !known {
			r.Detail += "; containerd's version is unknown until the plugin connects (this needs >= 2.2)"
		}
	}
	return r
}

// isPluginName reports whether an NRI plugin name ("agentcg" or the
// indexed "50-agentcg") names agentcg-nri.
func isPluginName(s string) bool {
	idx, name, ok := strings.Cut(s, "-")
	if !ok {
		return s == pluginName
	}
	_, err := strconv.ParseUint(idx, 10, 8)
	return len(idx) == 2 && err == nil && name == pluginName
}

// versionAtLeast reports whether version ("2.1.9", "v2.2.0-rc.1") is at
// least major.minor, and whether it parsed at all.
func versionAtLeast(version string, major, minor int) (atLeast, parsed bool) {
	parts := strings.SplitN(strings.TrimPrefix(version, "v"), ".", 3)
	if len(parts) < 2 {
		return false, false
	}
	maj, err1 := strconv.Atoi(parts[0])
	mnr, err2 := strconv.Atoi(strings.TrimRightFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	if err1 != nil || err2 != nil {
		return false, false
	}
	return maj > major || maj == major && mnr >= minor, true
}

// lockHeld reports whether some process holds a flock on the file at path.
// It tries a shared lock without waiting and drops it at once, so it never
// keeps a starting plugin from its exclusive one for more than an instant.
func lockHeld(path string) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	switch err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); {
	case err == nil:
		return false, nil
	case errors.Is(err, unix.EWOULDBLOCK):
		return true, nil
	default:
		return false, fmt.Errorf("flock %s: %w", path, err)
	}
}

// dialAddr turns a listen address (":9464") into one to dial.
func dialAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

func httpGet(ctx context.Context, url string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func (e Env) hook(docker map[string]any) Result {
	r := Result{Name: "hook"}
	var paths []string
	if docker != nil {
		rts, _ := docker["runtimes"].(map[string]any)
		rt, _ := rts[configure.RuntimeName].(map[string]any)
		if p, _ := rt["path"].(string); p != "" {
			paths = append(paths, p, filepath.Join(filepath.Dir(p), "agentcg-hook"))
		}
	}
	type hooksdFile struct {
		dir, name string
		timeout   int // seconds; 0 = none set
	}
	var hooksd []hooksdFile
	for _, dir := range []string{"/etc/containers/oci/hooks.d", "/usr/share/containers/oci/hooks.d"} {
		for _, f := range []string{"agentcg-createruntime.json", "agentcg-poststop.json"} {
			b, err := os.ReadFile(e.path(filepath.Join(dir, f)))
			if err != nil {
				continue
			}
			var h struct {
				Hook struct {
					Path    string
					Timeout int
				} `json:"hook"`
			}
			if err := json.Unmarshal(b, &h); err != nil || h.Hook.Path == "" {
				r.Status, r.Detail, r.Fix = Fail, fmt.Sprintf("%s/%s: no hook.path (%v)", dir, f, err), "reinstall the hooks.d files from the package"
				return r
			}
			paths = append(paths, h.Hook.Path)
			hooksd = append(hooksd, hooksdFile{dir, f, h.Hook.Timeout})
		}
	}
	if len(paths) == 0 {
		if docker == nil {
			r.Status, r.Detail = Skip, "no Docker and no OCI hooks.d files: the hook is not installed (fine on containerd-only nodes)"
		} else {
			r.Status, r.Detail, r.Fix = Fail, "Docker has no agentcg runtime", "agentcg configure --runtime docker"
		}
		return r
	}
	var seen []string
	for _, p := range paths {
		if slices.Contains(seen, p) {
			continue
		}
		seen = append(seen, p)
		st, err := os.Stat(e.path(p))
		if err != nil || st.Mode()&0o111 == 0 {
			r.Status, r.Detail = Fail, fmt.Sprintf("%s is missing or not executable", p)
			r.Fix = "install agentcg-runc and agentcg-hook (the .deb puts them in /usr/bin) or fix the path"
			return r
		}
	}
	// The hook reads the config on every run: check it the way the hook will.
	cfgPath := e.ConfigPath
	if cfgPath == "" {
		cfgPath = enroll.DefaultConfigPath
	}
	if _, err := os.Stat(e.path(cfgPath)); err == nil {
		cfg, err := hook.CheckConfig(e.path(cfgPath))
		if err != nil {
			r.Status, r.Detail = Fail, fmt.Sprintf("installed (%s), but its config fails: %v", strings.Join(seen, ", "), err)
			r.Fix = "fix " + cfgPath + " (agentcg-hook check-config names the field)"
			return r
		}
		// The runtime kills a hook at the file's timeout, which fails the
		// container even under fail_mode open: it must cover hook_timeout.
		want := hook.RuntimeTimeoutSeconds(hook.EffectiveTimeout(cfg))
		for _, h := range hooksd {
			if h.timeout > 0 && h.timeout < want {
				r.Status = Fail
				r.Detail = fmt.Sprintf("%s/%s: the runtime kills the hook after %d s, before hook_timeout %s runs out (wants %d s): the container would fail even under fail_mode open",
					h.dir, h.name, h.timeout, hook.EffectiveTimeout(cfg), want)
				r.Fix = "agentcg-hook hooks-d --out " + h.dir
				return r
			}
		}
	}
	r.Status, r.Detail = OK, "installed: "+strings.Join(seen, ", ")+"; config valid for the hook"
	return r
}

func (e Env) stateDir(cfg enroll.Config) Result {
	r := Result{Name: "state dir"}
	dir := cfg.StateDir
	ents, err := os.ReadDir(e.path(dir))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		r.Status, r.Detail = OK, dir+" absent (created on the first enrolled container)"
	case err != nil:
		r.Status, r.Detail, r.Fix = Fail, err.Error(), "make "+dir+" readable by root (plugin and hook keep their records there)"
	default:
		r.Status, r.Detail = OK, fmt.Sprintf("%s readable (%d entries)", dir, len(ents))
	}
	return r
}
