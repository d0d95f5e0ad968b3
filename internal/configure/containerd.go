// Package configure edits a container runtime's configuration so that
// agentcg works with it: containerd's config.toml (NRI on, timeouts,
// agentcg.* annotations passed to the runtime) and Docker's daemon.json (the
// agentcg runtime). Edits are idempotent, keep the rest of the file, and
// Check reports what is missing without writing.
package configure

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// Default locations and values.
const (
	DefaultContainerdConfig = "/etc/containerd/config.toml"
	DefaultDockerConfig     = "/etc/docker/daemon.json"
	// AnnotationPattern is what CRI must copy into the OCI spec for the
	// plugin to see agentcg.priority and agentcg.priority/container.<name>.
	AnnotationPattern = "agentcg.*"
	// DefaultRequestTimeout bounds one NRI request (containerd's default
	// is 2 s; the first attach on a slow machine can take longer).
	DefaultRequestTimeout = 10 * time.Second
	// DefaultRegistrationTimeout bounds plugin registration (default 5 s).
	DefaultRegistrationTimeout = 30 * time.Second
)

// nriPlugin is the NRI plugin's id in both config versions.
const nriPlugin = "io.containerd.nri.v1.nri"

// ContainerdOptions says what configure wants from containerd.
type ContainerdOptions struct {
	RequestTimeout      time.Duration
	RegistrationTimeout time.Duration
	// Version is the config schema to create when the file is empty: 3
	// for containerd 2.x, 2 for 1.7. An existing file's own version wins.
	Version int64
}

// DefaultContainerdOptions are the flags' defaults.
func DefaultContainerdOptions() ContainerdOptions {
	return ContainerdOptions{RequestTimeout: DefaultRequestTimeout, RegistrationTimeout: DefaultRegistrationTimeout, Version: 3}
}

// Finding is one thing a runtime config lacks, and how to fix it.
type Finding struct {
	Key  string `json:"key"`  // the setting, as a TOML or JSON path
	Have string `json:"have"` // what the file has ("" when absent)
	Want string `json:"want"` // what agentcg needs
	Why  string `json:"why"`
}

func (f Finding) String() string {
	have := f.Have
	if have == "" {
		have = "unset"
	}
	return fmt.Sprintf("%s is %s, want %s: %s", f.Key, have, f.Want, f.Why)
}

// criRuntimes is where each config version keeps CRI's runtime handlers.
func criRuntimes(version int64) []string {
	if version >= 3 {
		return []string{"plugins", "io.containerd.cri.v1.runtime", "containerd", "runtimes"}
	}
	return []string{"plugins", "io.containerd.grpc.v1.cri", "containerd", "runtimes"}
}

// containerdOps lists the edits agentcg needs in a decoded config, each with
// why, whether it already holds or not.
func containerdOps(m map[string]any, opt ContainerdOptions) ([]tomlOp, []string, int64, error) {
	version := opt.Version
	if v, ok := m["version"]; ok {
		iv, ok := normalise(v).(int64)
		if !ok {
			return nil, nil, 0, fmt.Errorf("version %v: not an integer", v)
		}
		version = iv
	} else if len(m) > 0 {
		// containerd reads a file without `version` as schema 1: adding
		// version 3 would silently drop every key it has.
		version = 1
	}
	if version < 2 || version > 3 {
		return nil, nil, 0, fmt.Errorf("version %d (a file without a version key is version 1): only config versions 2 (containerd 1.7) and 3 (containerd 2.x) are supported; `containerd config migrate` writes version 3", version)
	}
	var ops []tomlOp
	var why []string
	add := func(op tomlOp, reason string) { ops = append(ops, op); why = append(why, reason) }
	if _, ok := m["version"]; !ok {
		add(tomlOp{path: []string{"version"}, value: version}, "the config schema version")
	}
	nri := []string{"plugins", nriPlugin}
	add(tomlOp{path: append(slices.Clone(nri), "disable"), value: false}, "NRI must be on for agentcg-nri to see containers")
	if v, ok := Lookup(m, append(slices.Clone(nri), "disable_connections")); ok && v == true {
		add(tomlOp{path: append(slices.Clone(nri), "disable_connections"), value: false}, "an external agentcg-nri connects through the NRI socket")
	}
	for _, t := range []struct {
		key  string
		min  time.Duration
		text string
	}{
		{"plugin_request_timeout", opt.RequestTimeout, "containerd drops a plugin whose request takes longer"},
		{"plugin_registration_timeout", opt.RegistrationTimeout, "containerd drops a plugin that registers slower"},
	} {
		path := append(slices.Clone(nri), t.key)
		if v, ok := Lookup(m, path); ok {
			if s, ok := v.(string); ok {
				if d, err := time.ParseDuration(s); err == nil && d >= t.min {
					continue // a longer timeout the operator chose stays
				}
			}
		}
		add(tomlOp{path: path, value: t.min.String()}, t.text)
	}
	base := criRuntimes(version)
	names := []string{"runc"}
	if rts, ok := Lookup(m, base); ok {
		if rm, ok := rts.(map[string]any); ok && len(rm) > 0 {
			names = slices.Sorted(maps.Keys(rm))
		}
	}
	for _, rt := range names {
		for _, key := range []string{"pod_annotations", "container_annotations"} {
			path := append(append(slices.Clone(base), rt), key)
			if v, ok := Lookup(m, path); ok {
				if arr, ok := v.([]any); ok && slices.Contains(arr, any("*")) {
					continue
				}
			}
			add(tomlOp{path: path, value: AnnotationPattern, element: true},
				"CRI passes only the listed annotations to the runtime and NRI; agentcg reads agentcg.priority and agentcg.priority/container.<name>")
		}
	}
	return ops, why, version, nil
}

// CheckContainerd reports what doc (a containerd config.toml; empty means
// containerd's built-in defaults) lacks for agentcg.
func CheckContainerd(doc []byte, opt ContainerdOptions) ([]Finding, error) {
	var m map[string]any
	if err := toml.Unmarshal(doc, &m); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if m == nil {
		m = map[string]any{}
	}
	ops, why, _, err := containerdOps(m, opt)
	if err != nil {
		return nil, err
	}
	var out []Finding
	for i, op := range ops {
		if op.path[0] == "version" || satisfied(m, op) {
			continue
		}
		f := Finding{Key: tomlPath(op.path), Why: why[i]}
		if v, ok := Lookup(m, op.path); ok {
			f.Have, _ = tomlValue(normalise(v))
		}
		if op.element {
			f.Want = "a list containing '" + op.value.(string) + "'"
		} else {
			f.Want, _ = tomlValue(op.value)
		}
		out = append(out, f)
	}
	return out, nil
}

// Containerd returns doc edited for agentcg and the changes made (none when
// doc already has everything: running it twice changes nothing).
func Containerd(doc []byte, opt ContainerdOptions) ([]byte, []Finding, error) {
	findings, err := CheckContainerd(doc, opt)
	if err != nil || len(findings) == 0 {
		return doc, nil, err
	}
	var m map[string]any
	if err := toml.Unmarshal(doc, &m); err != nil {
		return nil, nil, fmt.Errorf("parse: %w", err)
	}
	if m == nil {
		m = map[string]any{}
	}
	ops, _, _, err := containerdOps(m, opt)
	if err != nil {
		return nil, nil, err
	}
	var todo []tomlOp
	for _, op := range ops {
		if !satisfied(m, op) {
			todo = append(todo, op)
		}
	}
	out, err := tomlEdit(doc, todo)
	if err != nil {
		return nil, nil, err
	}
	return out, findings, nil
}
