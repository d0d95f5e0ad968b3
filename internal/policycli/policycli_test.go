package policycli

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/agentcg/agentcg/internal/vmtest"
)

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	for _, c := range Commands() {
		if c.Name() != args[0] {
			continue
		}
		c.SetOut(&out)
		c.SetErr(&out)
		c.SetArgs(args[1:])
		err := c.ExecuteContext(context.Background())
		return out.String(), err
	}
	t.Fatalf("no command %q", args[0])
	return "", nil
}

func TestProbeOnHostFails(t *testing.T) {
	if vmtest.InGuest() {
		t.Skip("SKIP: host-only check")
	}
	out, err := run(t, "probe")
	if err == nil || !strings.Contains(err.Error(), "memcg_bpf_ops") {
		t.Fatalf("probe error = %v, want one naming memcg_bpf_ops", err)
	}
	if !strings.Contains(out, "memcg_bpf_ops: missing") || !strings.Contains(out, "kernel: ") {
		t.Errorf("probe output %q", out)
	}
}

func TestArgumentErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"attach"}, "nothing to attach"},
		{[]string{"attach", "--high", "/x", "--mode", "fast"}, "allowed values"},
		{[]string{"attach", "--high", "/x", "--gate-pct", "150"}, "gate_pct"},
		{[]string{"detach"}, "--all"},
		{[]string{"detach", "--all", "/x"}, "--all"},
	} {
		_, err := run(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want %q", tc.args, err, tc.want)
		}
	}
}
