package configure

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"github.com/spf13/cobra"
)

// ErrMissing is returned by `configure --check` when something is missing,
// so that the command exits non-zero.
var ErrMissing = errors.New("runtime configuration incomplete")

// Command is `agentcg configure`.
func Command() *cobra.Command {
	var (
		runtimes   []string
		file       string
		check      bool
		dryRun     bool
		asJSON     bool
		copt       = DefaultContainerdOptions()
		dopt       DockerOptions
		configPath string
	)
	cmd := &cobra.Command{
		Use:   "configure --runtime containerd|docker [--check] [--dry-run]",
		Short: "Configure containerd (NRI, timeouts, annotations) or Docker (the agentcg runtime) for agentcg",
		Long: `Configure a container runtime for agentcg, idempotently.

containerd: in config.toml, turn NRI on, raise the NRI plugin request and
registration timeouts to at least --request-timeout/--registration-timeout,
and add 'agentcg.*' to pod_annotations and container_annotations of every
CRI runtime handler (CRI passes only listed annotations on). The file is
edited as text: comments, order and quoting are kept; a new key goes at the
end of its table.

docker: in daemon.json, register the "agentcg" runtime (agentcg-runc);
--set-default makes it the default runtime, so a plain
'docker run --annotation agentcg.priority=low IMAGE' gets the policy and
containers without the annotation pass through untouched. Other keys are
kept; keys come out sorted.

A changed file is first copied to <file>.agentcg-backup-<time>. Nothing is
written when nothing is missing. Restart the runtime afterwards.
--check writes nothing, lists what is missing and exits 1 if anything is.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(runtimes) == 0 {
				return errors.New("--runtime containerd|docker is required")
			}
			if file != "" && len(runtimes) > 1 {
				return errors.New("--file applies to one --runtime")
			}
			out := cmd.OutOrStdout()
			var results []Result
			missing := false
			for _, rt := range runtimes {
				var edit EditFunc
				path := file
				switch rt {
				case "containerd":
					if path == "" {
						path = DefaultContainerdConfig
					}
					if copt.Version == 0 {
						copt.Version = containerdSchema(cmd.Context())
					}
					edit = func(doc []byte) ([]byte, []Finding, error) { return Containerd(doc, copt) }
				case "docker":
					if path == "" {
						path = DefaultDockerConfig
					}
					o := dopt
					if o.WrapperPath == "" {
						o.WrapperPath = findWrapper()
					}
					if !filepath.IsAbs(o.WrapperPath) {
						return fmt.Errorf("--wrapper %q: must be an absolute path", o.WrapperPath)
					}
					if configPath != "" {
						o.RuntimeArgs = append(o.RuntimeArgs, "--agentcg-config="+configPath)
					}
					edit = func(doc []byte) ([]byte, []Finding, error) { return Docker(doc, o) }
				default:
					return fmt.Errorf("--runtime %q: allowed values are containerd, docker", rt)
				}
				res, err := Apply(path, edit, check || dryRun, time.Now())
				if err != nil {
					return err
				}
				missing = missing || len(res.Changes) > 0
				results = append(results, res)
				if !asJSON {
					report(out, rt, res, check, dryRun)
				}
			}
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(results); err != nil {
					return err
				}
			}
			if check && missing {
				return ErrMissing
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&runtimes, "runtime", nil, "containerd and/or docker")
	f.StringVar(&file, "file", "", "config file (default "+DefaultContainerdConfig+" or "+DefaultDockerConfig+")")
	f.BoolVar(&check, "check", false, "only report what is missing; exit 1 if anything is")
	f.BoolVar(&dryRun, "dry-run", false, "print the edited file instead of writing it")
	f.BoolVar(&asJSON, "json", false, "print the results as JSON")
	f.DurationVar(&copt.RequestTimeout, "request-timeout", copt.RequestTimeout, "containerd: minimum NRI plugin_request_timeout")
	f.DurationVar(&copt.RegistrationTimeout, "registration-timeout", copt.RegistrationTimeout, "containerd: minimum NRI plugin_registration_timeout")
	f.Int64Var(&copt.Version, "config-version", 0, "containerd: schema for a new config.toml, 3 (2.x) or 2 (1.7) (default: from containerd --version)")
	f.StringVar(&dopt.WrapperPath, "wrapper", "", "docker: agentcg-runc path (default: beside this binary, else /usr/local/bin/agentcg-runc)")
	f.StringVar(&configPath, "agentcg-config", "/etc/agentcg/config.yaml", "docker: config file the wrapper passes to the hook (\"\" for none)")
	f.BoolVar(&dopt.SetDefault, "set-default", false, "docker: make agentcg dockerd's default runtime")
	return cmd
}

func report(w io.Writer, rt string, res Result, check, dryRun bool) {
	switch {
	case len(res.Changes) == 0:
		fmt.Fprintf(w, "%s: %s has everything agentcg needs\n", rt, res.File)
		return
	case check:
		fmt.Fprintf(w, "%s: %s is missing:\n", rt, res.File)
	case dryRun:
		fmt.Fprintf(w, "%s: %s would change:\n", rt, res.File)
	default:
		fmt.Fprintf(w, "%s: %s changed:\n", rt, res.File)
	}
	for _, c := range res.Changes {
		fmt.Fprintf(w, "  - %s\n", c)
	}
	switch {
	case dryRun:
		fmt.Fprintf(w, "--- %s as it would be written:\n%s", res.File, res.Contents)
	case check:
		fmt.Fprintf(w, "fix: agentcg configure --runtime %s\n", rt)
	default:
		if res.Backup != "" {
			fmt.Fprintf(w, "backup: %s\n", res.Backup)
		}
		daemon := map[string]string{"containerd": "containerd", "docker": "docker"}[rt]
		fmt.Fprintf(w, "restart %s to apply (e.g. systemctl restart %s)\n", rt, daemon)
	}
}

// findWrapper looks for agentcg-runc beside the running binary (a package
// installs both into /usr/bin), else in /usr/local/bin.
func findWrapper() string {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "agentcg-runc")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "/usr/local/bin/agentcg-runc"
}

var containerdVersion = regexp.MustCompile(`\bv?(\d+)\.\d+`)

// containerdSchema picks the config schema for a new file: 2 for
// containerd 1.x, else 3 (also when containerd does not answer in 10 s).
func containerdSchema(ctx context.Context) int64 {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "containerd", "--version").Output()
	if err != nil {
		return 3
	}
	// "containerd github.com/containerd/containerd/v2 2.1.9 ..." or "containerd containerd.io 1.7.27 ..."
	if m := containerdVersion.FindSubmatch(out); m != nil {
		if major, err := strconv.Atoi(string(m[1])); err == nil && major < 2 {
			return 2
		}
	}
	return 3
}
