// Command render-chart renders deploy/helm/agentcg with Helm's own
// libraries (the same engine as `helm template`), so that the plain
// manifests in deploy/manifests/ can be checked against the chart, and a
// kubelet without an API server can run the DaemonSet's pod as a static pod.
//
//	render-chart [--chart DIR] [--values FILE]... [--set K=V]... [--out FILE] [--check] [--lint]
//	render-chart --static-pod DIR [--static-config-dir /etc/agentcg] ...
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	"helm.sh/helm/v3/pkg/strvals"
	"sigs.k8s.io/yaml"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	var valueFiles, sets multi
	chartDir := flag.String("chart", "deploy/helm/agentcg", "chart directory")
	name := flag.String("name", "agentcg", "release name")
	namespace := flag.String("namespace", "agentcg", "release namespace")
	out := flag.String("out", "", "write the manifests here (default stdout)")
	check := flag.Bool("check", false, "compare with --out instead of writing it; exit 1 if they differ")
	doLint := flag.Bool("lint", false, "also run helm lint on the chart")
	staticPod := flag.String("static-pod", "", "write the DaemonSet's pod as a static pod (agentcg-nri.yaml) and its config.yaml into this directory")
	staticCfg := flag.String("static-config-dir", "/etc/agentcg", "static pod: host directory holding config.yaml (replaces the ConfigMap)")
	flag.Var(&valueFiles, "values", "values file (repeatable)")
	flag.Var(&sets, "set", "value override key=value (repeatable, helm --set syntax)")
	flag.Parse()
	if err := run(*chartDir, *name, *namespace, valueFiles, sets, *out, *check, *doLint, *staticPod, *staticCfg); err != nil {
		fmt.Fprintln(os.Stderr, "render-chart:", err)
		os.Exit(1)
	}
}

func run(chartDir, name, namespace string, valueFiles, sets []string, out string, check, doLint bool, staticPod, staticCfg string) error {
	vals := map[string]any{}
	for _, f := range valueFiles {
		v, err := chartutil.ReadValuesFile(f)
		if err != nil {
			return fmt.Errorf("--values %s: %w", f, err)
		}
		vals = chartutil.CoalesceTables(v.AsMap(), vals)
	}
	for _, s := range sets {
		if err := strvals.ParseInto(s, vals); err != nil {
			return fmt.Errorf("--set %s: %w", s, err)
		}
	}
	if doLint {
		l := lint.All(chartDir, vals, namespace, false)
		for _, m := range l.Messages {
			if m.Severity >= support.WarningSev {
				fmt.Fprintln(os.Stderr, "lint:", m)
			}
		}
		if l.HighestSeverity >= support.WarningSev {
			return errors.New("helm lint found problems")
		}
	}
	docs, err := render(chartDir, name, namespace, vals)
	if err != nil {
		return err
	}
	if staticPod != "" {
		return writeStaticPod(docs, staticPod, staticCfg)
	}
	text := join(docs, header(valueFiles, sets))
	switch {
	case check:
		if out == "" {
			return errors.New("--check needs --out")
		}
		have, err := os.ReadFile(out)
		if err != nil {
			return err
		}
		if !bytes.Equal(have, []byte(text)) {
			return fmt.Errorf("%s does not match the chart %s: run `make manifests` and commit the result", out, chartDir)
		}
		fmt.Fprintf(os.Stderr, "render-chart: %s matches %s\n", out, chartDir)
		return nil
	case out != "":
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return err
		}
		return os.WriteFile(out, []byte(text), 0o644)
	}
	_, err = os.Stdout.WriteString(text)
	return err
}

// doc is one rendered template.
type doc struct{ source, body string }

func render(chartDir, name, namespace string, vals map[string]any) ([]doc, error) {
	ch, err := loader.Load(chartDir)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", chartDir, err)
	}
	opts := chartutil.ReleaseOptions{Name: name, Namespace: namespace, Revision: 1, IsInstall: true}
	rv, err := chartutil.ToRenderValues(ch, vals, opts, chartutil.DefaultCapabilities)
	if err != nil {
		return nil, err
	}
	files, err := engine.Render(ch, rv)
	if err != nil {
		return nil, fmt.Errorf("render %s: %w", chartDir, err)
	}
	var docs []doc
	for _, src := range slices.Sorted(maps.Keys(files)) {
		body := strings.TrimSpace(files[src])
		if body == "" || !strings.HasSuffix(src, ".yaml") {
			continue // NOTES.txt, helpers, conditionally empty templates
		}
		docs = append(docs, doc{source: src, body: body})
	}
	return docs, nil
}

// header is the first line of the rendered file: which values made it.
func header(valueFiles, sets []string) string {
	if len(valueFiles) == 0 && len(sets) == 0 {
		return "# Rendered from deploy/helm/agentcg with its default values (make manifests); do not edit."
	}
	var with []string
	for _, f := range valueFiles {
		with = append(with, "--values "+f)
	}
	for _, s := range sets {
		with = append(with, "--set "+s)
	}
	return "# Rendered from deploy/helm/agentcg with " + strings.Join(with, " ") + "; do not edit."
}

func join(docs []doc, header string) string {
	var b strings.Builder
	b.WriteString(header + "\n")
	for _, d := range docs {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", d.source, d.body)
	}
	return b.String()
}

// writeStaticPod turns the DaemonSet's pod template into a Pod manifest a
// kubelet runs from its staticPodPath, with the ConfigMap replaced by a
// host directory (static pods cannot reference API objects), and writes
// the ConfigMap's config.yaml beside it.
func writeStaticPod(docs []doc, dir, cfgDir string) error {
	var ds, cm map[string]any
	for _, d := range docs {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(d.body), &m); err != nil {
			return fmt.Errorf("%s: %w", d.source, err)
		}
		switch m["kind"] {
		case "DaemonSet":
			ds = m
		case "ConfigMap":
			cm = m
		}
	}
	if ds == nil || cm == nil {
		return errors.New("the chart rendered no DaemonSet or no ConfigMap")
	}
	tmpl, _ := dig(ds, "spec", "template").(map[string]any)
	spec, _ := tmpl["spec"].(map[string]any)
	meta, _ := tmpl["metadata"].(map[string]any)
	if spec == nil || meta == nil {
		return errors.New("DaemonSet has no pod template")
	}
	vols, _ := spec["volumes"].([]any)
	replaced := false
	for i, v := range vols {
		vm, _ := v.(map[string]any)
		if _, ok := vm["configMap"]; ok {
			vols[i] = map[string]any{"name": vm["name"], "hostPath": map[string]any{"path": cfgDir, "type": "Directory"}}
			replaced = true
		}
	}
	if !replaced {
		return errors.New("DaemonSet pod mounts no ConfigMap")
	}
	// Static pods cannot use priority classes other than the system ones
	// without an API server; system-node-critical is fine. Drop nothing else.
	md := dig(ds, "metadata").(map[string]any)
	meta["name"], meta["namespace"] = md["name"], md["namespace"]
	pod := map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
	b, err := yaml.Marshal(pod)
	if err != nil {
		return err
	}
	cfg, _ := dig(cm, "data", "config.yaml").(string)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	header := "# Static pod rendered from deploy/helm/agentcg (render-chart --static-pod); config.yaml goes to " + cfgDir + "\n"
	if err := os.WriteFile(filepath.Join(dir, "agentcg-nri.yaml"), append([]byte(header), b...), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(cfg), 0o644)
}

func dig(m map[string]any, keys ...string) any {
	var cur any = m
	for _, k := range keys {
		t, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = t[k]
	}
	return cur
}
