package configure

import (
	"bytes"
	"testing"
)

// FuzzContainerd: for any input, Containerd either refuses or returns a
// document that check finds complete and that a second run leaves alone.
func FuzzContainerd(f *testing.F) {
	f.Add(readTestdata(f, "containerd-2.1.9-default.toml"))
	f.Add([]byte("version = 2\n[plugins.\"io.containerd.nri.v1.nri\"]\n disable = true\n"))
	f.Add([]byte("version = 3\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]\n  pod_annotations = [\n 'x', # c\n]\n"))
	f.Add([]byte(""))
	opt := DefaultContainerdOptions()
	f.Fuzz(func(t *testing.T, doc []byte) {
		out, _, err := Containerd(doc, opt)
		if err != nil {
			return
		}
		if fs, err := CheckContainerd(out, opt); err != nil || len(fs) != 0 {
			t.Fatalf("after configure: %v %v\n%s", fs, err, out)
		}
		again, changes, err := Containerd(out, opt)
		if err != nil || len(changes) != 0 || !bytes.Equal(again, out) {
			t.Fatalf("second run: %v %v", changes, err)
		}
	})
}

// FuzzDocker: the same for daemon.json.
func FuzzDocker(f *testing.F) {
	f.Add([]byte(`{"runtimes": {"x": {"path": "/x"}}, "n": 1.5}`))
	f.Add([]byte(""))
	opt := DockerOptions{WrapperPath: "/usr/bin/agentcg-runc", SetDefault: true}
	f.Fuzz(func(t *testing.T, doc []byte) {
		out, _, err := Docker(doc, opt)
		if err != nil {
			return
		}
		if fs, err := CheckDocker(out, opt); err != nil || len(fs) != 0 {
			t.Fatalf("after configure: %v %v\n%s", fs, err, out)
		}
	})
}
