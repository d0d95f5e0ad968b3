package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

func TestRoot(t *testing.T) {
	for _, tc := range []struct {
		args []string
		out  string // substring of stdout
		err  string // substring of the error, "" for success
	}{
		{[]string{"--version"}, "agentcg-image version", ""},
		{[]string{"--help"}, "replay", ""},
		{[]string{"nri", "--binary", filepath.Join(t.TempDir(), "missing"), "--out", filepath.Join(t.TempDir(), "x.tar")}, "", "missing"},
		{[]string{"pause"}, "", `"binary" not set`},
		{[]string{"replay", "extra"}, "", "unknown command"},
	} {
		var out bytes.Buffer
		root := newRoot(&out)
		root.SetArgs(tc.args)
		err := root.Execute()
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%v: error %v, want %q", tc.args, err, tc.err)
		}
		if !strings.Contains(out.String(), tc.out) {
			t.Errorf("%v: output %q lacks %q", tc.args, out.String(), tc.out)
		}
	}
}
