// Package deploy_test checks that the files deploy/ ships stay valid as
// the code they configure changes.
package deploy_test

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/agentcg/agentcg/enroll"
	"go.yaml.in/yaml/v3"
)

// TestDefaultConfig: the config the .deb installs as /etc/agentcg/config.yaml
// parses with the same strict decoder as the plugin and the hook.
func TestDefaultConfig(t *testing.T) {
	f, err := os.Open("config/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg, err := enroll.ParseConfig(f)
	if err != nil {
		t.Fatalf("deploy/config/config.yaml: %v", err)
	}
	if cfg.FailMode != enroll.FailOpen || cfg.High.AllowAll || len(cfg.High.Namespaces) != 0 {
		t.Errorf("the default must fail open and let nobody claim high: %+v", cfg)
	}
	// On a host, metrics stay on loopback (or off): they are unauthenticated.
	if cfg.MetricsAddr != "" && !strings.HasPrefix(cfg.MetricsAddr, "127.0.0.1:") {
		t.Errorf("metrics_addr %q: the host config must bind loopback or nothing", cfg.MetricsAddr)
	}
}

// TestChartConfig: the config the Helm chart renders from values.yaml
// parses too.
func TestChartConfig(t *testing.T) {
	b, err := os.ReadFile("helm/agentcg/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var values struct {
		Config map[string]any `yaml:"config"`
	}
	if err := yaml.Unmarshal(b, &values); err != nil {
		t.Fatal(err)
	}
	cfg, err := yaml.Marshal(values.Config)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := enroll.ParseConfig(bytes.NewReader(cfg))
	if err != nil {
		t.Fatalf("values.yaml config: %v\n%s", err, cfg)
	}
	// ":9464" is all interfaces of the pod's own network namespace; with
	// hostNetwork it would be every interface of the node.
	var net struct {
		HostNetwork bool `yaml:"hostNetwork"`
	}
	if err := yaml.Unmarshal(b, &net); err != nil {
		t.Fatal(err)
	}
	if net.HostNetwork && parsed.MetricsAddr != "" && !strings.HasPrefix(parsed.MetricsAddr, "127.0.0.1:") {
		t.Errorf("values.yaml: hostNetwork with metrics_addr %q exposes unauthenticated metrics on the node", parsed.MetricsAddr)
	}
}
