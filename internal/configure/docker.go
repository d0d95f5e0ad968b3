package configure

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
)

// RuntimeName is the Docker runtime configure registers.
const RuntimeName = "agentcg"

// DockerOptions says what configure wants from dockerd.
type DockerOptions struct {
	// WrapperPath is agentcg-runc's absolute path.
	WrapperPath string
	// RuntimeArgs are passed to the wrapper before runc's own arguments.
	RuntimeArgs []string
	// SetDefault makes agentcg dockerd's default runtime, so a plain
	// `docker run --annotation agentcg.priority=...` goes through it.
	SetDefault bool
}

func (o DockerOptions) runtime() map[string]any {
	rt := map[string]any{"path": o.WrapperPath}
	if len(o.RuntimeArgs) > 0 {
		args := make([]any, len(o.RuntimeArgs))
		for i, a := range o.RuntimeArgs {
			args[i] = a
		}
		rt["runtimeArgs"] = args
	}
	return rt
}

func decodeJSON(doc []byte) (map[string]any, error) {
	m := map[string]any{}
	if len(bytes.TrimSpace(doc)) == 0 {
		return m, nil
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber() // keep numbers exactly as written
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if m == nil {
		return nil, fmt.Errorf("parse: the top level must be an object")
	}
	return m, nil
}

// CheckDocker reports what doc (a daemon.json; empty means none) lacks.
func CheckDocker(doc []byte, opt DockerOptions) ([]Finding, error) {
	m, err := decodeJSON(doc)
	if err != nil {
		return nil, err
	}
	var out []Finding
	want := opt.runtime()
	rts, _ := m["runtimes"].(map[string]any)
	if have, ok := rts[RuntimeName]; !ok || !reflect.DeepEqual(have, want) {
		f := Finding{Key: "runtimes." + RuntimeName, Why: "dockerd runs containers of this runtime through agentcg-runc, which adds the hook for annotated ones"}
		if ok {
			b, _ := json.Marshal(have)
			f.Have = string(b)
		}
		b, _ := json.Marshal(want)
		f.Want = string(b)
		out = append(out, f)
	}
	if opt.SetDefault && m["default-runtime"] != RuntimeName {
		f := Finding{Key: "default-runtime", Want: `"` + RuntimeName + `"`, Why: "a plain docker run (no --runtime) goes through agentcg-runc; containers without the annotation pass through untouched"}
		if v, ok := m["default-runtime"]; ok {
			b, _ := json.Marshal(v)
			f.Have = string(b)
		}
		out = append(out, f)
	}
	return out, nil
}

// Docker returns doc with the agentcg runtime registered (and made the
// default with SetDefault) and the changes made. Every other key is kept;
// the output is indented JSON with sorted keys (JSON has no comments to
// lose, but the original key order and spacing are not kept). A doc that
// already has everything is returned unchanged.
func Docker(doc []byte, opt DockerOptions) ([]byte, []Finding, error) {
	if opt.WrapperPath == "" {
		return nil, nil, fmt.Errorf("no agentcg-runc path given")
	}
	findings, err := CheckDocker(doc, opt)
	if err != nil || len(findings) == 0 {
		return doc, nil, err
	}
	m, err := decodeJSON(doc)
	if err != nil {
		return nil, nil, err
	}
	rts, ok := m["runtimes"].(map[string]any)
	if !ok {
		if v, exists := m["runtimes"]; exists && v != nil {
			return nil, nil, fmt.Errorf("runtimes is a %T, not an object", v)
		}
		rts = map[string]any{}
	}
	rts[RuntimeName] = opt.runtime()
	m["runtimes"] = rts
	if opt.SetDefault {
		m["default-runtime"] = RuntimeName
	}
	out, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, nil, err
	}
	return append(out, '\n'), findings, nil
}
