package cli

import (
	"os"
	"path/filepath"
	"testing"
)

func TestGitHead(t *testing.T) {
	const sha = "0123456789abcdef0123456789abcdef01234567"
	cases := map[string]map[string]string{
		"loose ref":  {"HEAD": "ref: refs/heads/main\n", "refs/heads/main": sha + "\n"},
		"packed ref": {"HEAD": "ref: refs/heads/main\n", "packed-refs": "# pack-refs\n" + sha + " refs/heads/main\n"},
		"detached":   {"HEAD": sha + "\n"},
	}
	for name, files := range cases {
		t.Run(name, func(t *testing.T) {
			d := t.TempDir()
			for f, body := range files {
				p := filepath.Join(d, ".git", f)
				os.MkdirAll(filepath.Dir(p), 0o755)
				if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if got := gitHead(d); got != sha {
				t.Fatalf("gitHead = %q", got)
			}
		})
	}
	if got := gitHead(t.TempDir()); got != "" {
		t.Fatalf("no repo: %q", got)
	}
}

func TestReportCommandNeedsDir(t *testing.T) {
	c := Command()
	c.SetArgs([]string{"report"})
	c.SetOut(os.Stderr)
	c.SetErr(os.Stderr)
	if err := c.Execute(); err == nil {
		t.Fatal("report without DIR accepted")
	}
	c = Command()
	c.SetArgs([]string{"report", t.TempDir()})
	if err := c.Execute(); err == nil {
		t.Fatal("report on a folder without runs/ succeeded")
	}
}
