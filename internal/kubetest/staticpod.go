// Package kubetest supports the kubelet VM tests (scripts/vm's systemd
// profile: systemd as PID 1, containerd with SystemdCgroup = true and a
// standalone kubelet with cgroupDriver: systemd). It turns a DaemonSet's pod
// template into a static Pod manifest, reads the kubelet's read-only API and
// tells which memcg ops a pinned struct_ops link carries.
//
// Manifests are handled as generic YAML trees, not as typed API objects, so
// that every field of the chart's pod template reaches the kubelet unchanged
// except the few a static pod cannot have.
package kubetest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Object is one decoded manifest document.
type Object = map[string]any

// Decode splits a multi-document YAML stream (as `helm template` writes it)
// into objects, skipping empty documents. An error names the document index.
func Decode(data []byte) ([]Object, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []Object
	for i := 0; ; i++ {
		var o Object
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("manifest document %d: %w", i, err)
		}
		if len(o) == 0 {
			continue
		}
		if _, ok := o["kind"].(string); !ok {
			return nil, fmt.Errorf("manifest document %d: no kind", i)
		}
		out = append(out, o)
	}
}

// Kind returns the object's kind and metadata.name.
func Kind(o Object) (kind, name string) {
	kind, _ = o["kind"].(string)
	name, _ = mapAt(o, "metadata")["name"].(string)
	return kind, name
}

// Find returns the objects of a kind.
func Find(objs []Object, kind string) []Object {
	var out []Object
	for _, o := range objs {
		if k, _ := Kind(o); k == kind {
			out = append(out, o)
		}
	}
	return out
}

// File is a file the static pod expects on the host (a ConfigMap's key
// materialised where the converted hostPath volume points).
type File struct {
	Path string
	Data []byte
}

// StaticPodOptions say how to turn a DaemonSet into a static pod.
type StaticPodOptions struct {
	// ConfigDir is the host folder under which ConfigMap volumes become
	// hostPath volumes (ConfigDir/<volume name>/<key>). Required when the
	// template mounts a ConfigMap.
	ConfigDir string
	// ConfigMaps are the ConfigMaps the template may mount, by name.
	ConfigMaps []Object
	// PullPolicy is set on every container (default Never: the VM has no
	// registry, its images are pre-loaded).
	PullPolicy string
}

// StaticPod converts a DaemonSet into a static Pod manifest for a kubelet
// without an API server, and returns the files its ConfigMap volumes need.
// Only what a static pod cannot have changes:
//   - ConfigMap volumes become hostPath volumes (no API server to read them from);
//   - the service account goes (static pods cannot reference API objects);
//   - imagePullPolicy is forced (pre-loaded images, no registry).
//
// Secret and projected volumes and env from ConfigMaps or Secrets are errors
// naming the volume or container.
func StaticPod(ds Object, opts StaticPodOptions) (Object, []File, error) {
	kind, name := Kind(ds)
	if kind != "DaemonSet" {
		return nil, nil, fmt.Errorf("static pod: %s %q is not a DaemonSet", kind, name)
	}
	tmpl := mapAt(mapAt(ds, "spec"), "template")
	spec, ok := deepCopy(tmpl["spec"]).(map[string]any)
	if !ok || len(spec) == 0 {
		return nil, nil, fmt.Errorf("static pod: DaemonSet %q has no spec.template.spec", name)
	}
	meta := map[string]any{"name": name}
	if ns, ok := mapAt(ds, "metadata")["namespace"].(string); ok && ns != "" {
		meta["namespace"] = ns
	}
	for _, k := range []string{"labels", "annotations"} {
		if v, ok := mapAt(tmpl, "metadata")[k]; ok {
			meta[k] = deepCopy(v)
		}
	}
	delete(spec, "serviceAccountName")
	delete(spec, "serviceAccount")
	spec["automountServiceAccountToken"] = false

	pull := opts.PullPolicy
	if pull == "" {
		pull = "Never"
	}
	for _, field := range []string{"initContainers", "containers"} {
		list, _ := spec[field].([]any)
		for i, c := range list {
			ctr, ok := c.(map[string]any)
			if !ok {
				return nil, nil, fmt.Errorf("static pod %q: %s[%d] is not a map", name, field, i)
			}
			if err := checkEnv(ctr); err != nil {
				return nil, nil, fmt.Errorf("static pod %q: %s[%d] (%v): %w", name, field, i, ctr["name"], err)
			}
			ctr["imagePullPolicy"] = pull
		}
	}
	if list, _ := spec["containers"].([]any); len(list) == 0 {
		return nil, nil, fmt.Errorf("static pod %q: no containers", name)
	}

	var files []File
	vols, _ := spec["volumes"].([]any)
	for i, v := range vols {
		vol, ok := v.(map[string]any)
		if !ok {
			return nil, nil, fmt.Errorf("static pod %q: volumes[%d] is not a map", name, i)
		}
		vname, _ := vol["name"].(string)
		for _, bad := range []string{"secret", "projected"} {
			if _, ok := vol[bad]; ok {
				return nil, nil, fmt.Errorf("static pod %q: volumes[%d] (%s): a %s volume needs an API server", name, i, vname, bad)
			}
		}
		cmv, ok := vol["configMap"].(map[string]any)
		if !ok {
			continue
		}
		if opts.ConfigDir == "" {
			return nil, nil, fmt.Errorf("static pod %q: volumes[%d] (%s) mounts a ConfigMap and ConfigDir is unset", name, i, vname)
		}
		dir := path.Join(opts.ConfigDir, vname)
		fs, err := configMapFiles(opts.ConfigMaps, cmv, dir)
		if err != nil {
			return nil, nil, fmt.Errorf("static pod %q: volumes[%d] (%s): %w", name, i, vname, err)
		}
		files = append(files, fs...)
		vols[i] = map[string]any{"name": vname, "hostPath": map[string]any{"path": dir, "type": "Directory"}}
	}
	pod := Object{"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
	return pod, files, nil
}

// configMapFiles lays out a configMap volume source's keys under dir, as
// the kubelet would: every data key, or only the listed items at their paths.
func configMapFiles(cms []Object, src map[string]any, dir string) ([]File, error) {
	want, _ := src["name"].(string)
	var data map[string]any
	found := false
	for _, cm := range cms {
		if k, n := Kind(cm); k == "ConfigMap" && n == want {
			data, found = mapAt(cm, "data"), true
		}
	}
	if !found {
		if opt, _ := src["optional"].(bool); opt {
			return nil, nil
		}
		return nil, fmt.Errorf("ConfigMap %q not among the manifests", want)
	}
	var files []File
	items, _ := src["items"].([]any)
	if len(items) == 0 {
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			s, _ := data[k].(string)
			files = append(files, File{Path: path.Join(dir, k), Data: []byte(s)})
		}
		return files, nil
	}
	for j, it := range items {
		m, _ := it.(map[string]any)
		key, _ := m["key"].(string)
		p, _ := m["path"].(string)
		s, ok := data[key].(string)
		if !ok {
			return nil, fmt.Errorf("items[%d]: ConfigMap %q has no key %q", j, want, key)
		}
		if p == "" || path.IsAbs(p) || slices.Contains(strings.Split(p, "/"), "..") {
			return nil, fmt.Errorf("items[%d]: bad path %q", j, p)
		}
		files = append(files, File{Path: path.Join(dir, p), Data: []byte(s)})
	}
	return files, nil
}

// checkEnv refuses env a kubelet without an API server cannot resolve.
func checkEnv(ctr map[string]any) error {
	if from, _ := ctr["envFrom"].([]any); len(from) > 0 {
		return errors.New("envFrom needs an API server")
	}
	env, _ := ctr["env"].([]any)
	for i, e := range env {
		vf := mapAt(mapAt(e, ""), "valueFrom")
		for _, bad := range []string{"configMapKeyRef", "secretKeyRef"} {
			if _, ok := vf[bad]; ok {
				return fmt.Errorf("env[%d]: %s needs an API server", i, bad)
			}
		}
	}
	return nil
}

// mapAt returns m[key] as a map, or an empty map; key "" returns m itself.
func mapAt(m any, key string) map[string]any {
	mm, _ := m.(map[string]any)
	if key == "" {
		if mm == nil {
			return map[string]any{}
		}
		return mm
	}
	v, _ := mm[key].(map[string]any)
	if v == nil {
		return map[string]any{}
	}
	return v
}

func deepCopy(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			out[k] = deepCopy(x)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = deepCopy(x)
		}
		return out
	default:
		return v
	}
}
