//go:build vmtest || vmtest_systemd

package vmtest_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentcg/agentcg/internal/vmtest"
)

// TestVMDeb installs the .deb that `make deb` built (make vmtest does) with
// dpkg -i: the binaries run, the conffile is the config the plugin loads,
// the hooks.d files point at the installed hook, and the plugin started the
// way the systemd unit starts it connects to containerd. The guest has no
// systemd as PID 1, so the unit's ExecStart is run by hand.
func TestVMDeb(t *testing.T) {
	vmtest.Require(t)
	debs, _ := filepath.Glob(filepath.Join(vmtest.Src(t), "build/deb/agentcg_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("want one build/deb/agentcg_*.deb (make deb), found %v", debs)
	}
	t.Logf("dpkg -i %s:\n%s", filepath.Base(debs[0]), run(t, "dpkg", "-i", debs[0]))
	t.Cleanup(func() { exec.Command("dpkg", "--purge", "agentcg").Run() })
	if out := run(t, "dpkg-query", "-W", "-f", "${Status}", "agentcg"); out != "install ok installed" {
		t.Fatalf("dpkg status %q", out)
	}
	for _, b := range []string{"agentcg", "agentcg-nri", "agentcg-hook", "agentcg-runc"} {
		p := "/usr/bin/" + b
		if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o755 {
			t.Errorf("%s: %v %v", p, st, err)
		}
	}
	t.Logf("agentcg --version: %s", run(t, "/usr/bin/agentcg", "--version"))
	if conf := run(t, "dpkg-query", "-W", "-f", "${Conffiles}", "agentcg"); !strings.Contains(conf, "/etc/agentcg/config.yaml") {
		t.Errorf("conffiles %q lack /etc/agentcg/config.yaml", conf)
	}
	for _, f := range []string{"agentcg-createruntime.json", "agentcg-poststop.json"} {
		b, err := os.ReadFile("/usr/share/containers/oci/hooks.d/" + f)
		if err != nil || !strings.Contains(string(b), `"/usr/bin/agentcg-hook"`) {
			t.Errorf("hooks.d %s: %v\n%s", f, err, b)
		}
	}
	// The installed config is valid (doctor's config check).
	rs, text := doctorJSON(t, "/usr/bin/agentcg", "/etc/agentcg/config.yaml")
	if r := find(rs, "config"); r.Status != "ok" {
		t.Errorf("installed config: %+v\n%s", r, text)
	}

	unit := "/lib/systemd/system/agentcg-nri.service"
	preload := "/lib/systemd/system/agentcg-hook-preload.service"
	for _, u := range []string{unit, preload} {
		if _, err := os.Stat(u); err != nil {
			t.Fatalf("the package ships no %s: %v", u, err)
		}
	}
	if underSystemd() {
		// The hook's boot-time preload: the installed config is mode auto
		// and this kernel has memcg_bpf_ops, so it pins the objects.
		run(t, "systemctl", "daemon-reload")
		run(t, "systemctl", "start", "agentcg-hook-preload.service")
		t.Cleanup(func() { exec.Command("systemctl", "stop", "agentcg-hook-preload.service").Run() })
		active, _ := exec.Command("systemctl", "is-active", "agentcg-hook-preload.service").Output()
		log, _ := exec.Command("journalctl", "-u", "agentcg-hook-preload.service", "--no-pager", "-o", "cat").CombinedOutput()
		if strings.TrimSpace(string(active)) != "active" || !strings.Contains(string(log), "objects ready") {
			t.Errorf("agentcg-hook-preload.service: is-active %q, journal:\n%s", strings.TrimSpace(string(active)), log)
		} else {
			t.Logf("agentcg-hook-preload.service: %s", strings.TrimSpace(string(log)))
		}
	}
	if underSystemd() {
		// The real thing: systemd starts the installed unit.
		run(t, "systemctl", "daemon-reload")
		run(t, "systemctl", "enable", "--now", "agentcg-nri.service")
		t.Cleanup(func() { exec.Command("systemctl", "disable", "--now", "agentcg-nri.service").Run() })
		waitFor(t, "agentcg-nri.service active and synchronized", 90*time.Second, func() error {
			active, _ := exec.Command("systemctl", "is-active", "agentcg-nri.service").Output()
			log, _ := exec.Command("journalctl", "-u", "agentcg-nri.service", "--no-pager", "-o", "cat").CombinedOutput()
			if strings.TrimSpace(string(active)) != "active" || !strings.Contains(string(log), "synchronized") {
				return fmt.Errorf("is-active %q, journal:\n%s", strings.TrimSpace(string(active)), log)
			}
			return nil
		})
		t.Logf("agentcg-nri.service: active under systemd")
		return
	}
	// Start the plugin as the unit does, with the installed config.
	execStart := []string{"/usr/bin/agentcg-nri", "--config", "/etc/agentcg/config.yaml"}
	f, err := os.Open(unit)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "ExecStart="); ok {
			execStart = strings.Fields(v)
		}
	}
	f.Close()
	t.Logf("%s: ExecStart=%s", unit, strings.Join(execStart, " "))
	if !underSystemd() {
		t.Logf("NOT PROVEN here: the unit under systemd (this guest's PID 1 is not systemd; the systemd profile runs that part)")
	}
	startNRI(t, execStart...)
}
