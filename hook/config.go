package hook

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/agentcg/agentcg/enroll"
	"go.yaml.in/yaml/v3"
)

// DefaultTimeout bounds a hook invocation unless configured otherwise.
const DefaultTimeout = 5 * time.Second

// RuntimeMargin is the least the runtime waits beyond the hook's own
// timeout before it kills the hook: the hook's timeout counts from its
// main, and exec, Go's start-up and the exit come on top. A runtime's kill
// fails the container even under fail_mode open, so the margin must hold
// on a loaded machine too.
const RuntimeMargin = 3 * time.Second

// RuntimeTimeoutSeconds is the bound in whole seconds that a runtime
// enforces on one hook process (the OCI hook "timeout", hooks.d "timeout"):
// the hook's own timeout (DefaultTimeout when 0) plus a fifth of it, at
// least RuntimeMargin, rounded up. Measured in the VM under TCG with
// twenty hooks at once (guest load 30), nine of twenty hooks that gave up
// at their 30 s timeout were still killed by a 33 s bound: exec and exit
// alone took seconds.
func RuntimeTimeoutSeconds(hookTimeout time.Duration) int {
	if hookTimeout <= 0 {
		hookTimeout = DefaultTimeout
	}
	return int(math.Ceil((hookTimeout + max(RuntimeMargin, hookTimeout/5)).Seconds()))
}

// EffectiveTimeout is the hook timeout cfg asks for (DefaultTimeout if none).
func EffectiveTimeout(cfg enroll.Config) time.Duration {
	if d := time.Duration(cfg.HookTimeout); d > 0 {
		return d
	}
	return DefaultTimeout
}

// MetricsFile is the hook_metrics file name when the config sets none: it
// sits in the parent of state_dir (/run/agentcg/hook.prom by default).
const MetricsFile = "hook.prom"

// MetricsPath is where the hook keeps its outcome counters for cfg.
func MetricsPath(cfg enroll.Config) string {
	if cfg.HookMetrics != "" {
		return cfg.HookMetrics
	}
	sd := cfg.StateDir
	if sd == "" {
		sd = enroll.DefaultStateDir
	}
	return filepath.Join(filepath.Dir(filepath.Clean(sd)), MetricsFile)
}

// Settings is what one hook run knows from its config file.
type Settings struct {
	Path string // the file read ("" when the defaults apply)
	// Config is the validated config when Err is nil. When Err is set it
	// holds what a lenient read recovered (defaults elsewhere), which is
	// good enough to find the log, the counters, the annotation key and,
	// at poststop, the records, but never to attach.
	Config enroll.Config
	// Err says why the file cannot be used; nil when it is valid.
	Err error
	// FailModeKnown is true when Config.FailMode is the operator's: the
	// file is valid, or it is invalid but sets fail_mode to open or closed
	// explicitly. A default open is not taken for an operator's choice in a
	// broken file: a misspelt "fail_mod: closed" must not fail open.
	FailModeKnown bool
}

// LoadSettings reads the config at path as enroll.LoadConfig does (no
// path: the default file if it exists, else the defaults). When the file
// is unusable it still returns what a lenient read finds; see Settings.
func LoadSettings(path string) Settings {
	cfg, err := enroll.LoadConfig(path)
	if path == "" {
		if _, serr := os.Stat(enroll.DefaultConfigPath); serr == nil {
			path = enroll.DefaultConfigPath
		}
	}
	if err == nil {
		return Settings{Path: path, Config: cfg, FailModeKnown: true}
	}
	s := Settings{Path: path, Config: enroll.DefaultConfig(), Err: err}
	if path == "" {
		path = enroll.DefaultConfigPath
	}
	b, rerr := os.ReadFile(path)
	if rerr != nil {
		return s
	}
	lenient(b, &s)
	return s
}

// lenient recovers the fields a hook needs to report a broken config and
// to detach: YAML that parses, with unknown keys ignored and each field
// that does not decode left at its default.
func lenient(b []byte, s *Settings) {
	var l struct {
		AnnotationKey string  `yaml:"annotation_key"`
		StateDir      string  `yaml:"state_dir"`
		CgroupRoot    string  `yaml:"cgroup_root"`
		FailMode      *string `yaml:"fail_mode"`
		HookLog       string  `yaml:"hook_log"`
		HookMetrics   string  `yaml:"hook_metrics"`
		HookTimeout   string  `yaml:"hook_timeout"`
		Policy        struct {
			PinDir string `yaml:"pin_dir"`
		} `yaml:"policy"`
	}
	// yaml.v3 keeps decoding past a field of the wrong type and reports a
	// *yaml.TypeError at the end: keep what it decoded then.
	err := yaml.NewDecoder(bytes.NewReader(b)).Decode(&l)
	var te *yaml.TypeError
	if err != nil && !errors.As(err, &te) {
		return
	}
	c := &s.Config
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&c.AnnotationKey, l.AnnotationKey)
	set(&c.StateDir, l.StateDir)
	if filepath.IsAbs(l.CgroupRoot) {
		c.CgroupRoot = l.CgroupRoot
	}
	set(&c.HookLog, l.HookLog)
	set(&c.HookMetrics, l.HookMetrics)
	set(&c.Policy.PinDir, l.Policy.PinDir)
	if d, err := time.ParseDuration(l.HookTimeout); err == nil && d > 0 {
		c.HookTimeout = enroll.Duration(d)
	}
	if l.FailMode != nil {
		switch fm := enroll.FailMode(*l.FailMode); fm {
		case enroll.FailOpen, enroll.FailClosed:
			c.FailMode, s.FailModeKnown = fm, true
		}
	}
}

// CheckConfig validates the hook's config file the way every hook run will
// read it (path "" means the default file, which then must exist), and
// checks that hook_log and the counter file's folder can be written. It is
// the install-time check: `agentcg-hook check-config` and `agentcg doctor`
// call it, so that a typo fails loudly before any container does.
func CheckConfig(path string) (enroll.Config, error) {
	if path == "" {
		path = enroll.DefaultConfigPath
	}
	if _, err := os.Stat(path); err != nil {
		return enroll.Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	s := LoadSettings(path)
	if s.Err != nil {
		return s.Config, s.Err
	}
	cfg := s.Config
	var errs []error
	if cfg.HookLog != "" {
		if !filepath.IsAbs(cfg.HookLog) {
			errs = append(errs, fmt.Errorf("hook_log %q: must be an absolute path", cfg.HookLog))
		} else if err := dirExists(filepath.Dir(cfg.HookLog)); err != nil {
			errs = append(errs, fmt.Errorf("hook_log %s: %w", cfg.HookLog, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return cfg, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

func dirExists(dir string) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("folder: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("%s is not a folder", dir)
	}
	return nil
}
