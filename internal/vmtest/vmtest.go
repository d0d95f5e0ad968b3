// Package vmtest is the contract between the VM harness (scripts/vm) and the
// tests that need the patched kernel, root, containerd or docker. Such tests
// live in *_vm_test.go files behind the "vmtest" build tag; scripts/vm/vmtest.sh
// compiles them on the host and runs them inside the guest.
package vmtest

import (
	"os"
	"path/filepath"
	"testing"
)

// Environment variables the guest init exports to every test binary.
const (
	EnvGuest   = "AGENTCG_GUEST"      // "1" inside the harness guest
	EnvSrc     = "AGENTCG_SRC"        // the project checkout, shared from the host
	EnvResults = "AGENTCG_RESULTS"    // a folder copied back to the host
	EnvProfile = "AGENTCG_VM_PROFILE" // the guest profile run.sh booted: "default" or "systemd"
)

// InGuest reports whether this process runs inside the harness guest.
func InGuest() bool { return os.Getenv(EnvGuest) == "1" }

// Require skips the test, loudly and with the reason, outside the guest.
func Require(t testing.TB) {
	t.Helper()
	if !InGuest() {
		t.Skip("SKIP vmtest: needs the agentcg VM guest (patched kernel 7.3.4-memcgbpf, root, containerd, docker); run `make vmtest`")
	}
}

// RequireSystemd skips the test, loudly, outside the guest's systemd profile
// (systemd as PID 1, containerd with SystemdCgroup = true, a standalone kubelet).
func RequireSystemd(t testing.TB) {
	t.Helper()
	Require(t)
	if p := os.Getenv(EnvProfile); p != "systemd" {
		t.Skipf("SKIP vmtest: needs the VM's systemd profile (this guest is %q); run `make vmtest-kube` or `scripts/vm/vmtest.sh --profile systemd`", p)
	}
}

// Src returns the path of the project checkout (the host's, or the guest's share).
func Src(t testing.TB) string {
	t.Helper()
	if s := os.Getenv(EnvSrc); s != "" {
		return s
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := wd; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
	}
	t.Fatalf("no go.mod above %s and %s unset", wd, EnvSrc)
	return ""
}

// ResultsDir returns a per-test folder that the harness copies back to the host.
func ResultsDir(t testing.TB) string {
	t.Helper()
	base := os.Getenv(EnvResults)
	if base == "" {
		base = t.TempDir()
	}
	d := filepath.Join(base, filepath.Base(t.Name()))
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}
