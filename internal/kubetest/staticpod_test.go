package kubetest

import (
	"reflect"
	"strings"
	"testing"
)

const manifests = `
# Source: agentcg/templates/configmap.yaml
apiVersion: v1
kind: ConfigMap
metadata: {name: agentcg-config, namespace: agentcg-system}
data:
  config.yaml: |
    mode: auto
  extra.txt: x
---
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agentcg-nri, namespace: agentcg-system}
spec:
  selector: {matchLabels: {app: agentcg}}
  template:
    metadata:
      labels: {app: agentcg}
      annotations: {a: b}
    spec:
      serviceAccountName: agentcg
      hostPID: true
      priorityClassName: system-node-critical
      tolerations: [{operator: Exists}]
      initContainers:
      - name: init
        image: busybox
      containers:
      - name: plugin
        image: agentcg/agentcg-nri:1
        imagePullPolicy: IfNotPresent
        securityContext: {capabilities: {add: [BPF, PERFMON]}}
        env: [{name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}]
        volumeMounts: [{name: config, mountPath: /etc/agentcg}, {name: bpffs, mountPath: /sys/fs/bpf}]
      volumes:
      - name: config
        configMap: {name: agentcg-config}
      - name: bpffs
        hostPath: {path: /sys/fs/bpf}
`

func TestStaticPod(t *testing.T) {
	objs, err := Decode([]byte(manifests))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 {
		t.Fatalf("%d objects, want 2 (empty documents skipped)", len(objs))
	}
	ds := Find(objs, "DaemonSet")
	if len(ds) != 1 {
		t.Fatalf("%d DaemonSets", len(ds))
	}
	pod, files, err := StaticPod(ds[0], StaticPodOptions{ConfigDir: "/run/kt", ConfigMaps: objs})
	if err != nil {
		t.Fatal(err)
	}
	meta := mapAt(pod, "metadata")
	if meta["name"] != "agentcg-nri" || meta["namespace"] != "agentcg-system" || mapAt(meta, "labels")["app"] != "agentcg" || mapAt(meta, "annotations")["a"] != "b" {
		t.Errorf("metadata = %v", meta)
	}
	spec := mapAt(pod, "spec")
	if _, ok := spec["serviceAccountName"]; ok {
		t.Error("serviceAccountName kept")
	}
	if spec["automountServiceAccountToken"] != false || spec["hostPID"] != true || spec["priorityClassName"] != "system-node-critical" {
		t.Errorf("spec fields: %v", spec)
	}
	for _, f := range []string{"initContainers", "containers"} {
		c := spec[f].([]any)[0].(map[string]any)
		if c["imagePullPolicy"] != "Never" {
			t.Errorf("%s imagePullPolicy = %v", f, c["imagePullPolicy"])
		}
	}
	c := spec["containers"].([]any)[0].(map[string]any)
	if !reflect.DeepEqual(c["securityContext"], map[string]any{"capabilities": map[string]any{"add": []any{"BPF", "PERFMON"}}}) {
		t.Errorf("securityContext changed: %v", c["securityContext"])
	}
	vols := spec["volumes"].([]any)
	wantVols := []any{
		map[string]any{"name": "config", "hostPath": map[string]any{"path": "/run/kt/config", "type": "Directory"}},
		map[string]any{"name": "bpffs", "hostPath": map[string]any{"path": "/sys/fs/bpf"}},
	}
	if !reflect.DeepEqual(vols, wantVols) {
		t.Errorf("volumes = %v\nwant %v", vols, wantVols)
	}
	wantFiles := []File{{"/run/kt/config/config.yaml", []byte("mode: auto\n")}, {"/run/kt/config/extra.txt", []byte("x")}}
	if !reflect.DeepEqual(files, wantFiles) {
		t.Errorf("files = %q, want %q", files, wantFiles)
	}
	// The DaemonSet itself is untouched.
	dsSpec := mapAt(mapAt(mapAt(ds[0], "spec"), "template"), "spec")
	if dsSpec["serviceAccountName"] != "agentcg" || mapAt(dsSpec["volumes"].([]any)[0], "configMap")["name"] != "agentcg-config" {
		t.Error("StaticPod modified its input")
	}
}

func TestStaticPodItems(t *testing.T) {
	objs, err := Decode([]byte(strings.Replace(manifests, "configMap: {name: agentcg-config}",
		"configMap: {name: agentcg-config, items: [{key: config.yaml, path: conf/c.yaml}]}", 1)))
	if err != nil {
		t.Fatal(err)
	}
	_, files, err := StaticPod(Find(objs, "DaemonSet")[0], StaticPodOptions{ConfigDir: "/c", ConfigMaps: objs, PullPolicy: "IfNotPresent"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []File{{"/c/config/conf/c.yaml", []byte("mode: auto\n")}}; !reflect.DeepEqual(files, want) {
		t.Errorf("files = %q, want %q", files, want)
	}
}

func TestStaticPodErrors(t *testing.T) {
	for _, tc := range []struct {
		name, old, new string
		noConfigDir    bool
		want           string
	}{
		{"not a DaemonSet", "kind: DaemonSet", "kind: Deployment", false, `Deployment "agentcg-nri" is not a DaemonSet`},
		{"secret volume", "hostPath: {path: /sys/fs/bpf}", "secret: {secretName: s}", false, "volumes[1] (bpffs): a secret volume needs an API server"},
		{"projected volume", "hostPath: {path: /sys/fs/bpf}", "projected: {sources: []}", false, "volumes[1] (bpffs): a projected volume"},
		{"missing ConfigMap", "configMap: {name: agentcg-config}", "configMap: {name: other}", false, `volumes[0] (config): ConfigMap "other" not among the manifests`},
		{"missing key", "configMap: {name: agentcg-config}", "configMap: {name: agentcg-config, items: [{key: nope, path: p}]}", false, `items[0]: ConfigMap "agentcg-config" has no key "nope"`},
		{"escaping item path", "configMap: {name: agentcg-config}", "configMap: {name: agentcg-config, items: [{key: extra.txt, path: ../x}]}", false, `items[0]: bad path "../x"`},
		{"no ConfigDir", "", "", true, "volumes[0] (config) mounts a ConfigMap and ConfigDir is unset"},
		{"secret env", "fieldRef: {fieldPath: spec.nodeName}", "secretKeyRef: {name: s, key: k}", false, "containers[0] (plugin): env[0]: secretKeyRef needs an API server"},
		{"envFrom", "        env: [", "        envFrom: [{configMapRef: {name: c}}]\n        env: [", false, "containers[0] (plugin): envFrom needs an API server"},
		{"no template", "  template:\n", "  templatx:\n", false, "has no spec.template.spec"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs, err := Decode([]byte(strings.Replace(manifests, tc.old, tc.new, 1)))
			if err != nil {
				t.Fatal(err)
			}
			var ds Object
			for _, o := range objs {
				if _, n := Kind(o); n == "agentcg-nri" {
					ds = o
				}
			}
			opts := StaticPodOptions{ConfigDir: "/c", ConfigMaps: objs}
			if tc.noConfigDir {
				opts.ConfigDir = ""
			}
			_, _, err = StaticPod(ds, opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"kind: A\n---\nmetadata: {}\n", "manifest document 1: no kind"},
		{"kind: A\n---\n: : :\n", "manifest document 1:"},
	} {
		if _, err := Decode([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Decode(%q) err = %v, want %q", tc.in, err, tc.want)
		}
	}
}

func TestDecodePods(t *testing.T) {
	body := `{"kind":"PodList","apiVersion":"v1","items":[{"metadata":{"name":"w-agentcg-vm","namespace":"agents","uid":"u1","annotations":{"agentcg.priority":"high"}},
	"status":{"phase":"Running","containerStatuses":[{"name":"agent","containerID":"containerd://abc","ready":true,"state":{"running":{"startedAt":"x"}}},
	{"name":"sidecar","containerID":"containerd://def","state":{"waiting":{"reason":"ContainerCreating"}}}]}}]}`
	pods, err := DecodePods([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	p, ok := FindPod(pods, "agents", "w-agentcg-vm")
	if !ok {
		t.Fatal("pod not found")
	}
	if p.Running() {
		t.Error("Running() with a waiting container")
	}
	c, ok := p.Container("agent")
	if !ok || c.ID() != "abc" || !c.Ready {
		t.Errorf("agent = %+v", c)
	}
	p.Status.ContainerStatuses = p.Status.ContainerStatuses[:1]
	if !p.Running() {
		t.Error("not Running() with all containers running")
	}
	if _, err := DecodePods([]byte(`{"kind":"Status"}`)); err == nil {
		t.Error("a non-PodList decoded")
	}
}

// FuzzStaticPod: any manifest stream decodes or errors, and any DaemonSet in
// it converts or errors, without panicking; a converted pod is a Pod with
// every container's pull policy forced.
func FuzzStaticPod(f *testing.F) {
	f.Add([]byte(manifests))
	f.Add([]byte("kind: DaemonSet\nspec: {template: {spec: {containers: [1]}}}\n"))
	f.Add([]byte("kind: DaemonSet\nspec: {template: {spec: {containers: [{}], volumes: [{configMap: {}}]}}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := Decode(data)
		if err != nil {
			return
		}
		for _, ds := range Find(objs, "DaemonSet") {
			pod, _, err := StaticPod(ds, StaticPodOptions{ConfigDir: "/c", ConfigMaps: objs})
			if err != nil {
				continue
			}
			if k, _ := Kind(pod); k != "Pod" {
				t.Fatalf("kind %q", k)
			}
			for _, c := range mapAt(pod, "spec")["containers"].([]any) {
				if c.(map[string]any)["imagePullPolicy"] != "Never" {
					t.Fatalf("pull policy not forced: %v", c)
				}
			}
		}
	})
}
