package enroll_test

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentcg/agentcg/enroll"
	"github.com/agentcg/agentcg/policy"
)

// Annotation values are untrusted: parsing never panics, accepts exactly
// high and low, and an error quotes a bounded part of the value.
func FuzzAnnotation(f *testing.F) {
	for _, s := range [][3]string{
		{"agentcg.priority", "agent", "high"}, {"agentcg.priority", "", "low"}, {"k", "c", "HIGH"},
		{"k", "c.d", strings.Repeat("x", 300)}, {"k", "", "\xff\xfe"}, {"", "", ""},
	} {
		f.Add(s[0], s[1], s[2], s[2], "low")
	}
	f.Fuzz(func(t *testing.T, key, name, vContainer, vPod, vPlain string) {
		ann := map[string]string{key + "/container." + name: vContainer, key + "/pod": vPod, key: vPlain}
		v, k, ok := enroll.EffectiveAnnotation(ann, key, name)
		if !ok || ann[k] != v {
			t.Fatalf("EffectiveAnnotation = %q, %q, %v", v, k, ok)
		}
		if name != "" && k != key+"/container."+name && !(ann[key+"/container."+name] == v) {
			t.Fatalf("container key not first: matched %q", k)
		}
		p, err := enroll.ParseAnnotation(k, v)
		if err == nil {
			if (p != policy.High || v != "high") && (p != policy.Low || v != "low") {
				t.Fatalf("ParseAnnotation(%q) = %q", v, p)
			}
			return
		}
		if len(err.Error()) > len(k)+600 {
			t.Fatalf("error of %d bytes for a %d-byte value", len(err.Error()), len(v))
		}
	})
}

// Config decoding never panics, and whatever it accepts is valid and
// survives a JSON round trip unchanged.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		"", "fail_mode: closed\n", "high: {namespaces: [a], max_concurrent: 0}\n",
		`{"high":{"pod_labels":{"a":"b"},"trust_pod_labels":true,"cgroup_parents":["x.slice"]}}`,
		"policy: {gate_pct: 70}\nhook_timeout: 3s\n", "high: {labels: {a: b}}\n", "mode: [\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := enroll.ParseConfig(bytes.NewReader(in))
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted an invalid config: %v", err)
		}
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		c2, err := enroll.ParseConfig(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("round trip: %v\n%s", err, b)
		}
		b2, _ := json.Marshal(c2)
		if !bytes.Equal(b, b2) {
			t.Fatalf("round trip changed the config:\n%s\n%s", b, b2)
		}
	})
}

// Record decoding never panics; an accepted record is usable (absolute
// cgroup dir, known priority, door and mode) and round-trips.
func FuzzDecodeRecord(f *testing.F) {
	for _, s := range []string{
		`{"id":"a","door":"nri","cgroup_dir":"/sys/fs/cgroup/x","priority":"low","mode":"bpf"}`,
		`{"id":"a","cgroup_dir":"/x","priority":"high","mode":""}`,
		`{"id":"a","cgroup_dir":17}`, `{"id":"a"} {}`, "\x00", `{"id":"","priority":"low","cgroup_dir":"/x"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := enroll.DecodeRecord(in)
		if err != nil {
			return
		}
		if r.ID == "" || !filepath.IsAbs(r.CgroupDir) {
			t.Fatalf("accepted %+v", r)
		}
		if _, err := policy.ParsePriority(string(r.Priority)); err != nil {
			t.Fatalf("accepted priority %q", r.Priority)
		}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		r2, err := enroll.DecodeRecord(b)
		if err != nil || r2 != r {
			t.Fatalf("round trip: %+v, %v (was %+v)", r2, err, r)
		}
	})
}

// cgroupsPath expansion never panics and never yields a path that leaves
// the root: relative, clean, not empty, no ".." component.
func FuzzCgroupsPath(f *testing.F) {
	for _, s := range []string{
		"system.slice:docker:abc", "kubepods-besteffort-pod1.slice:cri-containerd:x", ":docker:abc",
		"-.slice:p:x", "a.slice:p:child.slice", "/kubepods/pod1/x", "a.slice:..:x", "../..", "/", "a::b", "a.slice:p:x/../../y",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		rel, err := enroll.RelFromCgroupsPath(in)
		if err != nil {
			return
		}
		if rel == "" || rel == "." || strings.HasPrefix(rel, "/") || filepath.Clean(rel) != rel {
			t.Fatalf("RelFromCgroupsPath(%q) = %q", in, rel)
		}
		for _, c := range strings.Split(rel, "/") {
			if c == ".." {
				t.Fatalf("RelFromCgroupsPath(%q) = %q has a .. component", in, rel)
			}
		}
		if abs, err := enroll.FromCgroupsPath("/r", in); err != nil || !strings.HasPrefix(abs, "/r/") {
			t.Fatalf("FromCgroupsPath(%q) = %q, %v", in, abs, err)
		}
	})
}
