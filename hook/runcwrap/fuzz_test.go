package runcwrap_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/agentcg/agentcg/hook/runcwrap"
)

// FuzzSplit checks the argv split on arbitrary command lines (arguments
// separated by NUL): runc's part is always an untouched suffix of argv,
// the removed prefix holds only wrapper flags and their values, and the
// subcommand and bundle come from runc's part.
func FuzzSplit(f *testing.F) {
	for _, s := range []string{
		"--root\x00/run/r\x00--log\x00/l.json\x00--log-format\x00json\x00create\x00--bundle\x00/b\x00id",
		"--agentcg-hook=/h\x00--agentcg-runtime\x00crun\x00run\x00-d\x00-b\x00rel\x00id",
		"exec\x00id\x00sh\x00-c\x00--agentcg-config=/x",
		"-root\x00create\x00--\x00create\x00-b=/x",
		"--agentcg-timeout\x0030s\x00--version",
		"--agentcg-config",
		"--agentcg-bogus=1\x00create",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		args := strings.Split(line, "\x00")
		if line == "" {
			args = nil
		}
		o, rest, err := runcwrap.SplitArgs(args)
		if err != nil {
			return
		}
		if len(rest) > len(args) || !slices.Equal(rest, args[len(args)-len(rest):]) {
			t.Fatalf("runc's arguments %q are not a suffix of %q", rest, args)
		}
		prefix := args[:len(args)-len(rest)]
		for i := 0; i < len(prefix); i++ {
			name, _, hasVal := strings.Cut(prefix[i], "=")
			switch name {
			case runcwrap.FlagHook, runcwrap.FlagConfig, runcwrap.FlagRuntime, runcwrap.FlagTimeout:
			default:
				t.Fatalf("removed %q, not a wrapper flag (argv %q)", prefix[i], args)
			}
			if !hasVal {
				i++ // its value
			}
		}
		if len(rest) > 0 {
			name, _, _ := strings.Cut(rest[0], "=")
			if slices.Contains([]string{runcwrap.FlagHook, runcwrap.FlagConfig, runcwrap.FlagRuntime, runcwrap.FlagTimeout}, name) {
				t.Fatalf("wrapper flag %q left for runc (argv %q)", rest[0], args)
			}
		}
		_ = o
		sub, idx, _ := runcwrap.Subcommand(rest)
		if idx >= 0 && (idx >= len(rest) || rest[idx] != sub) {
			t.Fatalf("Subcommand(%q) = %q at %d", rest, sub, idx)
		}
		if idx < 0 && sub != "" {
			t.Fatalf("Subcommand(%q) = %q without an index", rest, sub)
		}
		if idx >= 0 {
			b := runcwrap.Bundle(rest[idx+1:], "/cwd")
			if b != "/cwd" && b != "" && !slices.ContainsFunc(rest[idx+1:], func(a string) bool { return a == b || strings.HasSuffix(a, "="+b) }) {
				t.Fatalf("bundle %q is in none of %q", b, rest[idx+1:])
			}
		}
		inv, err := runcwrap.Parse(args, func(string) string { return "" }, "/opt/agentcg-runc", "/cwd")
		if err == nil && !slices.Equal(inv.Args, rest) {
			t.Fatalf("Parse passes %q to runc, SplitArgs %q", inv.Args, rest)
		}
	})
}
