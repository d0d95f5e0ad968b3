// Package runcwrap owns the runc-CLI wrapper used with Docker: on "create" it
// adds the agentcg createRuntime and poststop hooks to the bundle's
// config.json; every invocation then continues with the real runtime.
package runcwrap

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Wrapper flags, accepted anywhere on the command line (for example from
// daemon.json "runtimeArgs") and removed before the real runtime sees them.
const (
	FlagHook    = "--agentcg-hook"    // absolute path of agentcg-hook
	FlagConfig  = "--agentcg-config"  // config file passed on to the hook
	FlagRuntime = "--agentcg-runtime" // the real runtime (default runc)
	FlagTimeout = "--agentcg-timeout" // hook timeout passed on to the hook
)

// Options are the wrapper's own settings.
type Options struct {
	Hook    string
	Config  string
	Runtime string
	Timeout string
}

// SplitArgs removes the wrapper's flags (--flag=value or --flag value) from
// args and returns them as Options, leaving the runtime's arguments intact.
func SplitArgs(args []string) (Options, []string, error) {
	var o Options
	dst := map[string]*string{FlagHook: &o.Hook, FlagConfig: &o.Config, FlagRuntime: &o.Runtime, FlagTimeout: &o.Timeout}
	rest := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, val, hasVal := strings.Cut(a, "=")
		p, ours := dst[name]
		if !ours {
			rest = append(rest, a)
			continue
		}
		if !hasVal {
			if i+1 >= len(args) {
				return o, nil, fmt.Errorf("%s needs a value", name)
			}
			i++
			val = args[i]
		}
		*p = val
	}
	return o, rest, nil
}

// runc's global flags that take a value in the next argument.
var globalValueFlags = []string{"--root", "--log", "--log-format", "--criu", "--rootless"}

// Subcommand returns the runtime subcommand and its index in args (-1 if none).
func Subcommand(args []string) (string, int) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			return a, i
		}
		if !strings.Contains(a, "=") && slices.Contains(globalValueFlags, a) {
			i++
		}
	}
	return "", -1
}

// Bundle returns the --bundle/-b value among the subcommand's arguments, or
// cwd when absent (runc's default).
func Bundle(subArgs []string, cwd string) string {
	for i := 0; i < len(subArgs); i++ {
		a := subArgs[i]
		for _, f := range []string{"--bundle", "-b", "-bundle"} {
			if a == f && i+1 < len(subArgs) {
				return subArgs[i+1]
			}
			if v, ok := strings.CutPrefix(a, f+"="); ok {
				return v
			}
		}
	}
	return cwd
}

// Hooks returns the two hooks the wrapper injects. The hook path must be
// absolute: runtimes do not search PATH for hooks.
func Hooks(hookPath, configPath, timeout string, runtimeTimeoutSec int) (createRuntime, poststop specs.Hook, err error) {
	if !filepath.IsAbs(hookPath) {
		return specs.Hook{}, specs.Hook{}, fmt.Errorf("hook path %q is not absolute", hookPath)
	}
	mk := func(stage string) specs.Hook {
		args := []string{"agentcg-hook"}
		if configPath != "" {
			args = append(args, "--config", configPath)
		}
		if timeout != "" {
			args = append(args, "--timeout", timeout)
		}
		h := specs.Hook{Path: hookPath, Args: append(args, stage)}
		if runtimeTimeoutSec > 0 {
			t := runtimeTimeoutSec
			h.Timeout = &t
		}
		return h
	}
	return mk("createRuntime"), mk("poststop"), nil
}

// Inject adds createRuntime and poststop to <bundle>/config.json, keeping
// every other field as it was (unknown ones included). A hook already
// present with the same path is not added twice.
func Inject(bundle string, createRuntime, poststop specs.Hook) error {
	path := filepath.Join(bundle, "config.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read bundle spec: %w", err)
	}
	var spec map[string]json.RawMessage
	if err := json.Unmarshal(b, &spec); err != nil {
		return fmt.Errorf("parse %s: %w", path, err)
	}
	hooks := map[string][]json.RawMessage{}
	if raw, ok := spec["hooks"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &hooks); err != nil {
			return fmt.Errorf("parse %s hooks: %w", path, err)
		}
	}
	for stage, h := range map[string]specs.Hook{"createRuntime": createRuntime, "poststop": poststop} {
		if hasHook(hooks[stage], h.Path) {
			continue
		}
		enc, err := json.Marshal(h)
		if err != nil {
			return err
		}
		hooks[stage] = append(hooks[stage], enc)
	}
	if spec["hooks"], err = json.Marshal(hooks); err != nil {
		return err
	}
	out, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	return writeAtomic(path, out)
}

func hasHook(list []json.RawMessage, path string) bool {
	for _, raw := range list {
		var h specs.Hook
		if json.Unmarshal(raw, &h) == nil && h.Path == path {
			return true
		}
	}
	return false
}

func writeAtomic(path string, data []byte) error {
	mode := os.FileMode(0o644)
	if st, err := os.Stat(path); err == nil {
		mode = st.Mode().Perm()
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".config.json-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// Environment variables that set the wrapper's options when no flag does.
const (
	EnvHook    = "AGENTCG_HOOK"
	EnvConfig  = "AGENTCG_CONFIG"
	EnvRuntime = "AGENTCG_RUNTIME"
	EnvTimeout = "AGENTCG_HOOK_TIMEOUT"
)

// DefaultRuntime is the real runtime unless configured otherwise.
const DefaultRuntime = "runc"

// Invocation is one wrapper call, resolved.
type Invocation struct {
	Options
	Args       []string // the runtime's arguments, without ours
	Subcommand string
	Bundle     string // set for create
	// ConfigTimeout is the hook timeout from the config file, used for
	// the runtime-enforced bound when no --agentcg-timeout is given.
	ConfigTimeout time.Duration
}

// Parse resolves options from flags, then the environment, then defaults:
// the hook defaults to agentcg-hook beside self (the wrapper's executable).
func Parse(args []string, getenv func(string) string, self, cwd string) (Invocation, error) {
	o, rest, err := SplitArgs(args)
	if err != nil {
		return Invocation{}, err
	}
	pick := func(v *string, env, def string) {
		if *v == "" {
			*v = getenv(env)
		}
		if *v == "" {
			*v = def
		}
	}
	pick(&o.Hook, EnvHook, filepath.Join(filepath.Dir(self), "agentcg-hook"))
	pick(&o.Config, EnvConfig, "")
	pick(&o.Runtime, EnvRuntime, DefaultRuntime)
	pick(&o.Timeout, EnvTimeout, "")
	inv := Invocation{Options: o, Args: rest}
	var i int
	inv.Subcommand, i = Subcommand(rest)
	if inv.Subcommand == "create" {
		inv.Bundle = Bundle(rest[i+1:], cwd)
		if !filepath.IsAbs(inv.Bundle) {
			inv.Bundle = filepath.Join(cwd, inv.Bundle)
		}
	}
	return inv, nil
}

// Modify injects the hooks when the invocation is a create; otherwise it
// does nothing.
func (inv Invocation) Modify() error {
	if inv.Subcommand != "create" {
		return nil
	}
	cr, ps, err := Hooks(inv.Hook, inv.Config, inv.Timeout, runtimeTimeout(inv.Timeout, inv.ConfigTimeout))
	if err != nil {
		return err
	}
	return Inject(inv.Bundle, cr, ps)
}

// runtimeTimeout is the runtime-enforced bound (whole seconds), above the
// hook's own timeout so that the hook gets to log why it gave up.
func runtimeTimeout(flag string, fromConfig time.Duration) int {
	d, err := time.ParseDuration(flag)
	if err != nil || d <= 0 {
		d = fromConfig
	}
	if d <= 0 {
		d = defaultHookTimeout
	}
	return int(d.Seconds()) + 3
}

const defaultHookTimeout = 5 * time.Second
