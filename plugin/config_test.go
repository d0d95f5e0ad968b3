package plugin_test

import (
	"strings"
	"testing"

	"github.com/agentcg/agentcg/enroll"
)

// The shipped example must stay a valid configuration, and one that an
// operator can copy as it is: no tenant-writable source (pod labels without
// an admission policy, everyone) may claim high.
func TestExampleConfigParses(t *testing.T) {
	c, err := enroll.LoadConfig("config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.High.Namespaces[0] != "agents-prod" || c.Policy.GatePct != 80 || c.High.Cap() != enroll.DefaultMaxHigh {
		t.Fatalf("example parsed as %+v", c)
	}
	if c.High.TrustPodLabels || len(c.High.PodLabels) != 0 || c.High.AllowAll {
		t.Fatalf("the example lets tenant-writable sources claim high: %+v", c.High)
	}
	if c.MetricsAddr != "" && !strings.HasPrefix(c.MetricsAddr, "127.0.0.1:") {
		t.Fatalf("the example serves unauthenticated metrics beyond loopback: %q", c.MetricsAddr)
	}
}
