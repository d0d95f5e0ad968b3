// Package runcwrap owns the runc-CLI wrapper used with Docker: on "create"
// or "run" of a container whose bundle carries the priority annotation it
// adds the agentcg createRuntime and poststop hooks to the bundle's
// config.json; every invocation then continues with the real runtime, with
// runc's arguments passed on byte for byte.
package runcwrap

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/agentcg/agentcg/enroll"
	"github.com/agentcg/agentcg/hook"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Wrapper flags. Docker's daemon.json "runtimeArgs" puts them first on the
// command line, before runc's own arguments, and only there are they read
// and removed: an argument that merely looks like one further on (a
// process argument of "runc exec", say) belongs to runc.
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

// SplitArgs removes the leading run of wrapper flags (--flag=value or
// --flag value) from args and returns them as Options. The rest, from the
// first argument that is not a wrapper flag on, is the runtime's, untouched.
func SplitArgs(args []string) (Options, []string, error) {
	var o Options
	dst := map[string]*string{FlagHook: &o.Hook, FlagConfig: &o.Config, FlagRuntime: &o.Runtime, FlagTimeout: &o.Timeout}
	i := 0
	for ; i < len(args); i++ {
		name, val, hasVal := strings.Cut(args[i], "=")
		p, ours := dst[name]
		if !ours {
			if strings.HasPrefix(name, "--agentcg-") {
				return o, nil, fmt.Errorf("unknown wrapper flag %s (known: %s, %s, %s, %s)", name, FlagHook, FlagConfig, FlagRuntime, FlagTimeout)
			}
			break
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
	return o, args[i:], nil
}

// runc's global flags that take a value; runc accepts each as -name or
// --name, with the value after "=" or in the next argument. criu is gone
// from recent runc but older ones (still in distributions) have it.
var globalValueFlags = map[string]bool{"root": true, "log": true, "log-format": true, "criu": true, "rootless": true}

// flagName returns the name of a flag argument ("-root", "--root=x" → root)
// and whether its value is attached; ok is false for a non-flag argument.
func flagName(a string) (name string, attached, ok bool) {
	if len(a) < 2 || a[0] != '-' || a == "--" {
		return "", false, false
	}
	name = strings.TrimPrefix(a[1:], "-")
	name, _, attached = strings.Cut(name, "=")
	return name, attached, true
}

// Globals are the wrapper-relevant global flags runc was given.
type Globals struct {
	Version   bool   // -v, --version
	Help      bool   // -h, --help
	Log       string // --log: runc's log file, where the shim looks for errors
	LogFormat string // --log-format: text or json
}

// Subcommand returns the runtime subcommand and its index in args (-1 if
// none), reading the global flags the way runc's parser does: "-flag" and
// "--flag" alike, a value after "=" or in the next argument, and "--"
// ending the flags.
func Subcommand(args []string) (sub string, idx int, g Globals) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			if i+1 < len(args) {
				return args[i+1], i + 1, g
			}
			return "", -1, g
		}
		name, attached, ok := flagName(a)
		if !ok {
			return a, i, g
		}
		switch name {
		case "v", "version":
			g.Version = true
		case "h", "help":
			g.Help = true
		}
		if !globalValueFlags[name] {
			continue
		}
		val := ""
		if attached {
			_, val, _ = strings.Cut(a, "=")
		} else if i+1 < len(args) {
			i++
			val = args[i]
		}
		switch name {
		case "log":
			g.Log = val
		case "log-format":
			g.LogFormat = val
		}
	}
	return "", -1, g
}

// Flags of create and run that take a value (runc 1.1 to 1.4).
var subValueFlags = map[string]bool{"bundle": true, "b": true, "console-socket": true, "pidfd-socket": true, "pid-file": true, "preserve-fds": true}

// Bundle returns the --bundle/-b value among create's or run's arguments
// (the last one wins, as in runc), or cwd when there is none. Values of
// other flags are skipped, so "--pid-file -b" does not read as a bundle.
func Bundle(subArgs []string, cwd string) string {
	bundle := cwd
	for i := 0; i < len(subArgs); i++ {
		a := subArgs[i]
		if a == "--" {
			break
		}
		name, attached, ok := flagName(a)
		if !ok || !subValueFlags[name] {
			continue
		}
		val := ""
		if attached {
			_, val, _ = strings.Cut(a, "=")
		} else if i+1 < len(subArgs) {
			i++
			val = subArgs[i]
		}
		if name == "bundle" || name == "b" {
			bundle = val
		}
	}
	return bundle
}

// Hooks returns the two hooks the wrapper injects. The hook path must be
// absolute: runtimes do not search PATH for hooks.
func Hooks(hookPath, configPath, timeout string, runtimeTimeoutSec int) (createRuntime, poststop specs.Hook, err error) {
	if !filepath.IsAbs(hookPath) {
		return specs.Hook{}, specs.Hook{}, fmt.Errorf("hook path %q is not absolute", hookPath)
	}
	mk := func(stage hook.Stage) specs.Hook {
		h := specs.Hook{Path: hookPath, Args: hook.Args(stage, configPath, timeout)}
		if runtimeTimeoutSec > 0 {
			t := runtimeTimeoutSec
			h.Timeout = &t
		}
		return h
	}
	return mk(hook.CreateRuntime), mk(hook.Poststop), nil
}

// Inject adds createRuntime and poststop to <bundle>/config.json when the
// spec carries the annotation key (KEY or KEY/pod, as the hook reads it), keeping every other field as it was
// (unknown ones included); a spec without it is not touched. A hook already
// present with the same path is not added twice. injected reports whether
// the container has the hooks.
func Inject(bundle, annotationKey string, createRuntime, poststop specs.Hook) (injected bool, err error) {
	path := filepath.Join(bundle, "config.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("read bundle spec: %w", err)
	}
	var spec map[string]json.RawMessage
	if err := json.Unmarshal(b, &spec); err != nil {
		return false, fmt.Errorf("parse %s: %w", path, err)
	}
	var ann map[string]string
	if raw, ok := spec["annotations"]; ok {
		if err := json.Unmarshal(raw, &ann); err != nil {
			return false, fmt.Errorf("parse %s annotations: %w", path, err)
		}
	}
	if _, _, ok := enroll.EffectiveAnnotation(ann, annotationKey, ""); !ok {
		return false, nil
	}
	hooks := map[string][]json.RawMessage{}
	if raw, ok := spec["hooks"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &hooks); err != nil {
			return false, fmt.Errorf("parse %s hooks: %w", path, err)
		}
	}
	for stage, h := range map[string]specs.Hook{"createRuntime": createRuntime, "poststop": poststop} {
		if hasHook(hooks[stage], h.Path) {
			continue
		}
		enc, err := json.Marshal(h)
		if err != nil {
			return false, err
		}
		hooks[stage] = append(hooks[stage], enc)
	}
	if spec["hooks"], err = json.Marshal(hooks); err != nil {
		return false, err
	}
	out, err := json.Marshal(spec)
	if err != nil {
		return false, err
	}
	return true, writeAtomic(path, out)
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
	_, werr := tmp.Write(data)
	err = errors.Join(werr, tmp.Chmod(mode), tmp.Sync(), tmp.Close())
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
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
	Globals
	Args       []string // the runtime's arguments, without ours
	Subcommand string
	Bundle     string // set for create and run
	// AnnotationKey marks the containers that get the hooks; empty means
	// enroll.DefaultAnnotationKey.
	AnnotationKey string
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
	if o.Timeout != "" {
		// The hook would refuse a bad --timeout, failing every container.
		if d, err := time.ParseDuration(o.Timeout); err != nil || d <= 0 {
			return Invocation{}, fmt.Errorf("%s (or %s) %q: want a positive duration such as 30s", FlagTimeout, EnvTimeout, o.Timeout)
		}
	}
	inv := Invocation{Options: o, Args: rest}
	var i int
	inv.Subcommand, i, inv.Globals = Subcommand(rest)
	if inv.Injects() {
		inv.Bundle = Bundle(rest[i+1:], cwd)
		if !filepath.IsAbs(inv.Bundle) {
			inv.Bundle = filepath.Join(cwd, inv.Bundle)
		}
	}
	return inv, nil
}

// Injects reports whether the invocation creates a container: "create",
// or "run" (create and start in one).
func (inv Invocation) Injects() bool { return inv.Subcommand == "create" || inv.Subcommand == "run" }

// Own reports whether the wrapper itself must answer before runc does:
// --version or --help without a subcommand.
func (inv Invocation) Own() bool { return inv.Subcommand == "" && (inv.Version || inv.Help) }

// Modify injects the hooks when the invocation creates a container whose
// bundle carries the annotation; otherwise it does nothing. injected
// reports whether the hooks are in the bundle.
func (inv Invocation) Modify() (injected bool, err error) {
	if !inv.Injects() {
		return false, nil
	}
	key := inv.AnnotationKey
	if key == "" {
		key = enroll.DefaultAnnotationKey
	}
	var timeout time.Duration
	if d, err := time.ParseDuration(inv.Timeout); err == nil && d > 0 {
		timeout = d
	} else {
		timeout = inv.ConfigTimeout
	}
	cr, ps, err := Hooks(inv.Hook, inv.Config, inv.Timeout, hook.RuntimeTimeoutSeconds(timeout))
	if err != nil {
		return false, err
	}
	return Inject(inv.Bundle, key, cr, ps)
}

// ErrSelf is returned by LookRuntime when the only runtime it finds is the
// wrapper itself, which would exec itself for ever.
var ErrSelf = errors.New("the real runtime resolves to agentcg-runc itself")

// LookRuntime resolves the real runtime: name itself when it contains a
// slash, else the first executable called name in pathEnv (a PATH value)
// that is not the wrapper (self). A wrapper installed as "runc" in front of
// the real one thus finds the real one, and never itself.
func LookRuntime(name, self, pathEnv string) (string, error) {
	selfInfo, selfErr := os.Stat(self)
	isSelf := func(p string) bool {
		st, err := os.Stat(p)
		return err == nil && selfErr == nil && os.SameFile(st, selfInfo)
	}
	executable := func(p string) bool {
		st, err := os.Stat(p)
		return err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0
	}
	if strings.Contains(name, "/") {
		if !executable(name) {
			return "", fmt.Errorf("real runtime %s: not an executable file", name)
		}
		if isSelf(name) {
			return "", fmt.Errorf("real runtime %s: %w (set %s or %s)", name, ErrSelf, FlagRuntime, EnvRuntime)
		}
		return name, nil
	}
	sawSelf := false
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		if !executable(p) {
			continue
		}
		if isSelf(p) {
			sawSelf = true
			continue
		}
		return p, nil
	}
	if sawSelf {
		return "", fmt.Errorf("real runtime %q: %w and no other is in PATH (set %s or %s)", name, ErrSelf, FlagRuntime, EnvRuntime)
	}
	return "", fmt.Errorf("real runtime %q: not found in PATH", name)
}
