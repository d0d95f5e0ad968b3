package policycli

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentcg/agentcg/hook/hookstats"
)

// status shows the hook's counters: fail-open containers are visible.
func TestStatusShowsHookCounters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hook.prom")
	if hookStatus(path) != nil {
		t.Fatal("status for a hook that never ran")
	}
	for _, e := range []hookstats.Event{
		{Stage: "createRuntime", Outcome: "attached", Duration: time.Millisecond},
		{Stage: "createRuntime", Outcome: "failed", Reason: "timeout", WithoutPolicy: true, Duration: 5 * time.Second},
	} {
		if err := hookstats.Record(context.Background(), path, nil, e); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	if err := printStatus(&out, Status{Hook: hookStatus(path)}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"createRuntime attached 1;", "createRuntime failed/timeout 1;", "without policy 1, refused 0"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("status lacks %q:\n%s", want, out.String())
		}
	}
}
