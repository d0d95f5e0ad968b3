package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

const chart = "../../../helm/agentcg"

// TestStaticPod renders the chart and turns the DaemonSet into a static
// pod: same container, the ConfigMap replaced by a host directory, and the
// config written beside it.
func TestStaticPod(t *testing.T) {
	docs, err := render(chart, "agentcg", "agentcg", map[string]any{"hostNetwork": true})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := writeStaticPod(docs, dir, "/etc/agentcg"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "agentcg-nri.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var pod struct {
		Kind     string
		Metadata struct{ Name, Namespace string }
		Spec     struct {
			HostNetwork bool `json:"hostNetwork"`
			Containers  []struct {
				Name            string
				SecurityContext struct {
					Capabilities struct{ Add, Drop []string }
				} `json:"securityContext"`
			}
			Volumes []map[string]any
		}
	}
	if err := yaml.Unmarshal(b, &pod); err != nil {
		t.Fatal(err)
	}
	if pod.Kind != "Pod" || pod.Metadata.Name != "agentcg" || !pod.Spec.HostNetwork || len(pod.Spec.Containers) != 1 {
		t.Fatalf("pod %+v", pod)
	}
	if caps := pod.Spec.Containers[0].SecurityContext.Capabilities; strings.Join(caps.Add, ",") != "BPF,PERFMON" || strings.Join(caps.Drop, ",") != "ALL" {
		t.Errorf("capabilities %+v", caps)
	}
	for _, v := range pod.Spec.Volumes {
		if _, ok := v["configMap"]; ok {
			t.Errorf("static pod still mounts a ConfigMap: %v", v)
		}
	}
	cfg, err := os.ReadFile(filepath.Join(dir, "config.yaml"))
	if err != nil || !strings.Contains(string(cfg), "annotation_key: agentcg.priority") {
		t.Errorf("config.yaml: %v\n%s", err, cfg)
	}
}

// TestMetricsOff: without metrics_addr there is no port and no probe.
func TestMetricsOff(t *testing.T) {
	docs, err := render(chart, "agentcg", "agentcg", map[string]any{"config": map[string]any{"metrics_addr": ""}})
	if err != nil {
		t.Fatal(err)
	}
	text := join(docs, header(nil, []string{"config.metrics_addr="}))
	if !strings.HasPrefix(text, "# Rendered from deploy/helm/agentcg with --set config.metrics_addr=;") {
		t.Errorf("header does not name the override: %.100q", text)
	}
	for _, s := range []string{"livenessProbe", "containerPort"} {
		if strings.Contains(text, s) {
			t.Errorf("rendered %s with metrics off", s)
		}
	}
}
