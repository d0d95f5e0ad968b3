//go:build vmtest

package plugin_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentcg/agentcg/enroll"
	"github.com/agentcg/agentcg/internal/vmtest"
)

// tolerateAnnotation is the pod annotation the test's runtime config names
// in tolerate_missing_plugins_annotation (for the plugin's own pod and
// static pods; see plugin/README.md).
const tolerateAnnotation = "agentcg.io/tolerate-missing-plugins"

// nextContainerd is the newer containerd (>= 2.2, NRI's default validator)
// that build-rootfs.sh puts beside the guest's Debian one.
type nextContainerd struct {
	version  string
	endpoint string // CRI socket, unix://
	nriSock  string
}

// startNextContainerd runs the newer containerd on its own root, state,
// sockets and NRI socket, with the default validator requiring the plugin
// named "agentcg", and imports the pause image into it.
func startNextContainerd(t *testing.T) *nextContainerd {
	t.Helper()
	bins, _ := filepath.Glob("/usr/local/lib/agentcg/containerd-v*/containerd")
	if len(bins) != 1 {
		t.Fatalf("the guest has %d newer containerds in /usr/local/lib/agentcg (want 1): the rootfs predates build-rootfs.sh's containerd_next; rebuild it", len(bins))
	}
	bin := bins[0]
	dir := filepath.Dir(bin)
	run := "/run/agentcg-next"
	c := &nextContainerd{version: strings.TrimPrefix(filepath.Base(dir), "containerd-"),
		endpoint: "unix://" + run + "/containerd.sock", nriSock: run + "/nri.sock"}
	cfg := `version = 3
root = '/var/lib/agentcg-next'
state = '` + run + `'
[grpc]
  address = '` + run + `/containerd.sock'
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = '` + vmtest.PauseImage + `'
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = 'io.containerd.runc.v2'
  pod_annotations = ['agentcg.*']
  container_annotations = ['agentcg.*']
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
    Root = '` + run + `/runc'
[plugins.'io.containerd.nri.v1.nri']
  disable = false
  socket_path = '` + c.nriSock + `'
  plugin_path = '` + run + `/nri-plugins'
  plugin_config_path = '` + run + `/nri-conf.d'
  plugin_registration_timeout = '30s'
  plugin_request_timeout = '30s'
  [plugins.'io.containerd.nri.v1.nri'.default_validator]
    enable = true
    required_plugins = ['agentcg']
    tolerate_missing_plugins_annotation = '` + tolerateAnnotation + `'
`
	cfgPath := filepath.Join(vmtest.ResultsDir(t), "containerd-next.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(vmtest.ResultsDir(t), "containerd-next.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", cfgPath)
	cmd.Env = append(os.Environ(), "PATH="+dir+":"+os.Getenv("PATH")) // its own shim first
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
	})
	sock := strings.TrimPrefix(c.endpoint, "unix://")
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			if out, err := exec.Command("ctr", "-a", sock, "version").CombinedOutput(); err == nil {
				t.Logf("containerd %s up: %s", c.version, strings.Join(strings.Fields(string(out)), " "))
				break
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("containerd %s did not come up in 60 s:\n%s", c.version, tail(string(b), 30))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if out, err := exec.Command("ctr", "-a", sock, "-n", "k8s.io", "images", "import", "--all-platforms", "/usr/local/share/agentcg/pause.tar").CombinedOutput(); err != nil {
		t.Fatalf("pause image import into containerd %s: %v\n%s", c.version, err, out)
	}
	return c
}

// TestVMClosedModeRequiredPlugins is fail_mode closed with the plugin
// stopped, on a runtime that can refuse: containerd >= 2.2 with NRI's
// default validator requiring "agentcg". While the plugin is absent an
// annotated container is refused at create; a pod carrying the toleration
// annotation (the plugin's own pod, static pods) still starts; once the
// plugin is back, annotated containers start and get their links.
func TestVMClosedModeRequiredPlugins(t *testing.T) {
	vmtest.Require(t)
	next := startNextContainerd(t) // its cleanup runs after the env's
	e := newVMEnvCfg(t, "required", func(c *enroll.Config) { c.FailMode = enroll.FailClosed })
	e.endpoint = next.endpoint
	e.startNRI("--socket", next.nriSock, "--name", "agentcg")
	pod, podJSON := e.runPod("required")

	id, dir := e.startCtr(pod, podJSON, "present", "high")
	e.wantPins(dir)
	e.removeCtr(id)
	e.wantPins()

	e.stopNRI()
	// create creates (not starts) a container: its id, or crictl's error
	// output.
	create := func(name, prio string) (string, error) {
		var stderr strings.Builder
		cmd := e.crictlCmd("create", pod, e.ctrJSON(name, prio, vmImage), podJSON)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return stderr.String(), err
		}
		return strings.TrimSpace(string(out)), nil
	}
	missing := func(out string) bool {
		return strings.Contains(out, "required plugin") && strings.Contains(out, "agentcg") && strings.Contains(out, "not present")
	}
	// NRI before 0.12.5 drops a closed plugin from its list only at the end
	// of the runtime's next NRI call, and counts it as present if that call
	// is a create (no containerd release through 2.4.2 has the fix): record
	// what this first create does, and require the refusal from the next.
	first, firstErr := create("first", "low")
	if firstErr == nil {
		t.Logf("containerd %s created the first container after the plugin dropped (NRI < 0.12.5 counts a closed plugin until the end of the next call)", next.version)
		e.crictl("rm", first)
	} else if !missing(first) {
		t.Fatalf("the first create failed, but not for the missing plugin: %s", first)
	}
	out, err := create("absent", "low")
	plain, plainErr := create("plain", "") // required_plugins is for every container
	e.writeJSON("closed-mode-required-plugins.json", map[string]any{
		"runtime": "containerd " + next.version, "first_create_refused": firstErr != nil, "first_create": first,
		"refused_without_plugin": err != nil, "crictl": out, "unannotated_refused": plainErr != nil})
	if err == nil {
		t.Fatalf("containerd %s created an annotated container while the required plugin was absent: %s", next.version, out)
	}
	if !missing(out) {
		t.Fatalf("refused, but not for the missing plugin: %s", out)
	}
	if plainErr == nil || !missing(plain) {
		t.Fatalf("an unannotated container while the required plugin was absent: %v %s", plainErr, plain)
	}
	t.Logf("refused while the plugin was absent: %s", strings.TrimSpace(out))
	fmt.Printf("AGENTCG closed mode, plugin stopped, containerd %s with required_plugins: first create refused=%v, then refused=%v\n", next.version, firstErr != nil, err != nil)
	if pins := e.pins(); len(pins) != 0 {
		t.Fatalf("pins without a plugin: %v", pins)
	}

	// The toleration (for the plugin's own pod) lets a pod start without it.
	tolJSON := e.writeJSON("pod-tolerated.json", map[string]any{
		"metadata":      map[string]any{"name": "tolerated", "namespace": vmTenant, "uid": "tolerated-uid"},
		"annotations":   map[string]string{tolerateAnnotation: "true"},
		"linux":         map[string]any{"cgroup_parent": e.parent, "security_context": map[string]any{"namespace_options": map[string]any{"network": 2}}},
		"log_directory": "/tmp/agentcg-nri-pods/tolerated",
	})
	tolPod := e.crictl("runp", tolJSON)
	tol, _ := e.createCtr(tolPod, tolJSON, "tolerated", "", vmImage)
	e.crictl("start", tol)
	e.removeCtr(tol)

	e.startNRI("--socket", next.nriSock, "--name", "agentcg")
	id, dir = e.startCtr(pod, podJSON, "back", "low")
	e.wantPins(dir)
	e.removeCtr(id)
	e.wantPins()
}
