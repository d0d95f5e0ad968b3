package plugin_test

import (
	"testing"

	"github.com/agentcg/agentcg/enroll"
)

// The shipped example must stay a valid configuration.
func TestExampleConfigParses(t *testing.T) {
	c, err := enroll.LoadConfig("config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.High.Namespaces[0] != "agents-prod" || c.High.PodLabels["agentcg.io/tier"] != "gold" || c.Policy.GatePct != 80 {
		t.Fatalf("example parsed as %+v", c)
	}
}
