// Package enroll owns the one place where a container's priority
// annotation becomes a policy attachment: configuration, annotation
// validation, authorisation of "high", cgroup resolution with the root
// check, and the container-id records that let detach work after the
// cgroup is gone. The NRI plugin and the OCI hook are thin front doors
// over it.
package enroll

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/agentcg/agentcg/policy"
	"go.yaml.in/yaml/v3"
)

// FailMode decides what happens to a container whose enrollment fails.
type FailMode string

const (
	// FailOpen lets the container run without the policy; a log line says why.
	FailOpen FailMode = "open"
	// FailClosed refuses the container with the reason.
	FailClosed FailMode = "closed"
)

// Defaults for the configuration file fields.
const (
	DefaultAnnotationKey = "agentcg.priority"
	DefaultStateDir      = "/run/agentcg/containers"
	DefaultProcRoot      = "/proc"
	DefaultConfigPath    = "/etc/agentcg/config.yaml"
)

// DefaultMaxHigh is the default cap on concurrently enrolled high
// containers per node. high takes memory protection away from everyone
// else; past a handful of protected containers the protection means
// little (they compete with each other) while the cost to the rest grows.
// Eight leaves room for one agent per core on common node sizes.
const DefaultMaxHigh = 8

// HighAllow says who may claim the high priority. Only sources that a
// tenant cannot write authorise it (design.md §6):
//   - NRI (containerd CRI): the pod's namespace as the kubelet reports it
//     (Namespaces), and pod-sandbox labels (PodLabels) only when
//     TrustPodLabels is set, which is right only behind an admission
//     policy that controls who may set those labels. Container labels
//     (containerd copies image LABELs into them) and annotations never
//     authorise high.
//   - OCI hook (Docker, podman, CRI-O): the container's resolved cgroup,
//     which must lie under one of CgroupParents. On Docker the cgroup
//     parent is chosen by the Docker API caller (--cgroup-parent), who is
//     root-equivalent: this authorises the caller, never the image.
//
// AllowAll lifts the restriction (single-tenant nodes).
type HighAllow struct {
	Namespaces     []string          `json:"namespaces" yaml:"namespaces"`
	PodLabels      map[string]string `json:"pod_labels,omitempty" yaml:"pod_labels"`
	TrustPodLabels bool              `json:"trust_pod_labels" yaml:"trust_pod_labels"`
	// CgroupParents are cgroup paths relative to cgroup_root, e.g.
	// agents-high.slice or user.slice/user-1001.slice. A slice name also
	// matches its systemd path (agents.slice/agents-high.slice), where
	// Docker's systemd driver puts --cgroup-parent agents-high.slice.
	CgroupParents []string `json:"cgroup_parents,omitempty" yaml:"cgroup_parents"`
	AllowAll      bool     `json:"allow_all" yaml:"allow_all"`
	// MaxConcurrent caps the enrolled high containers on the node, both
	// front doors together. Unset means DefaultMaxHigh; an explicit 0
	// means no cap.
	MaxConcurrent *int `json:"max_concurrent,omitempty" yaml:"max_concurrent"`
	// Labels was the old label allowlist, which also read container
	// labels. It is rejected with an explanation (see Validate).
	Labels map[string]string `json:"labels,omitempty" yaml:"labels"`
}

// Cap returns the effective cap on high containers; 0 means none.
func (h HighAllow) Cap() int {
	if h.MaxConcurrent == nil {
		return DefaultMaxHigh
	}
	return *h.MaxConcurrent
}

// Config is the agentcg configuration file shared by the plugin and the hook.
type Config struct {
	AnnotationKey string        `json:"annotation_key" yaml:"annotation_key"`
	High          HighAllow     `json:"high" yaml:"high"`
	CgroupRoot    string        `json:"cgroup_root" yaml:"cgroup_root"`
	ProcRoot      string        `json:"proc_root" yaml:"proc_root"`
	StateDir      string        `json:"state_dir" yaml:"state_dir"`
	FailMode      FailMode      `json:"fail_mode" yaml:"fail_mode"`
	Mode          policy.Mode   `json:"mode" yaml:"mode"`
	Policy        policy.Config `json:"policy" yaml:"policy"`
	// MetricsAddr is the plugin's Prometheus listen address ("" disables it).
	MetricsAddr string `json:"metrics_addr" yaml:"metrics_addr"`
	// HookLog is a file the OCI hook appends its log lines to; "" means
	// stderr, which runtimes usually show only when the hook fails.
	HookLog string `json:"hook_log" yaml:"hook_log"`
	// HookMetrics is the OCI hook's outcome counter file (Prometheus text
	// format, for node_exporter's textfile collector and agentcg status);
	// "" means hook.prom in the parent of StateDir.
	HookMetrics string `json:"hook_metrics,omitempty" yaml:"hook_metrics"`
	// HookTimeout bounds one hook invocation ("5s"; 0 means the default).
	// A hook only reopens the pinned objects (agentcg-hook preload at boot);
	// a hook that finds none loads them, which on slow (emulated) machines
	// needs more.
	HookTimeout Duration `json:"hook_timeout" yaml:"hook_timeout"`
}

// Duration is a time.Duration written as text ("5s") in JSON and YAML, so
// that a config written with encoding/json reads back through YAML.
type Duration time.Duration

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: %w", b, err)
	}
	*d = Duration(v)
	return nil
}

// DefaultConfig is the configuration used when no file is given.
func DefaultConfig() Config {
	return Config{
		AnnotationKey: DefaultAnnotationKey,
		CgroupRoot:    "/sys/fs/cgroup",
		ProcRoot:      DefaultProcRoot,
		StateDir:      DefaultStateDir,
		FailMode:      FailOpen,
		Mode:          policy.ModeAuto,
		Policy:        policy.DefaultConfig(),
		High:          HighAllow{MaxConcurrent: new(DefaultMaxHigh)},
	}
}

// WithDefaults fills empty fields from DefaultConfig.
func (c Config) WithDefaults() Config {
	d := DefaultConfig()
	if c.AnnotationKey == "" {
		c.AnnotationKey = d.AnnotationKey
	}
	if c.CgroupRoot == "" {
		c.CgroupRoot = d.CgroupRoot
	}
	if c.ProcRoot == "" {
		c.ProcRoot = d.ProcRoot
	}
	if c.StateDir == "" {
		c.StateDir = d.StateDir
	}
	if c.FailMode == "" {
		c.FailMode = d.FailMode
	}
	if c.Mode == "" {
		c.Mode = d.Mode
	}
	if c.High.MaxConcurrent == nil {
		c.High.MaxConcurrent = new(DefaultMaxHigh)
	}
	c.Policy = c.Policy.WithDefaults()
	return c
}

// Validate rejects configurations the enroller cannot run with.
func (c Config) Validate() error {
	switch c.FailMode {
	case FailOpen, FailClosed:
	default:
		return fmt.Errorf("fail_mode %q: allowed values are open, closed", c.FailMode)
	}
	if _, err := policy.ParseMode(string(c.Mode)); err != nil {
		return err
	}
	if !filepath.IsAbs(c.CgroupRoot) {
		return fmt.Errorf("cgroup_root %q: must be an absolute path", c.CgroupRoot)
	}
	if c.HookMetrics != "" && !filepath.IsAbs(c.HookMetrics) {
		return fmt.Errorf("hook_metrics %q: must be an absolute path", c.HookMetrics)
	}
	if c.HookTimeout < 0 {
		return fmt.Errorf("hook_timeout %s: must not be negative", time.Duration(c.HookTimeout))
	}
	if err := c.High.validate(); err != nil {
		return err
	}
	if c.AnnotationKey == "" || strings.ContainsAny(c.AnnotationKey, " \t\n") {
		return fmt.Errorf("annotation_key %q: must be a non-empty key without spaces", c.AnnotationKey)
	}
	return c.Policy.Validate()
}

func (h HighAllow) validate() error {
	if len(h.Labels) > 0 {
		return errors.New("high.labels is no longer accepted: it also matched container labels, which containerd copies from the image's LABELs, so any image could claim high. " +
			"Use high.namespaces, or high.pod_labels with high.trust_pod_labels: true once an admission policy controls who sets those pod labels (plugin/README.md)")
	}
	if len(h.PodLabels) > 0 && !h.TrustPodLabels {
		return errors.New("high.pod_labels is set but high.trust_pod_labels is false: pod labels authorise high only behind an admission policy that controls who may set them; set high.trust_pod_labels: true to say one is in place")
	}
	if h.MaxConcurrent != nil && *h.MaxConcurrent < 0 {
		return fmt.Errorf("high.max_concurrent %d: must not be negative (0 means no cap)", *h.MaxConcurrent)
	}
	for i, p := range h.CgroupParents {
		if err := checkCgroupParent(p); err != nil {
			return fmt.Errorf("high.cgroup_parents[%d]: %w", i, err)
		}
	}
	return nil
}

// checkCgroupParent accepts a clean relative path without "." or ".."
// components.
func checkCgroupParent(p string) error {
	if p == "" || strings.HasPrefix(p, "/") {
		return fmt.Errorf("%q: must be a path relative to cgroup_root, e.g. agents-high.slice", p)
	}
	for _, c := range strings.Split(p, "/") {
		if c == "" || c == "." || c == ".." {
			return fmt.Errorf("%q: empty, \".\" and \"..\" components are not allowed", p)
		}
	}
	return nil
}

// ParseConfig reads a YAML or JSON configuration (JSON is valid YAML),
// rejects unknown keys, fills defaults and validates the result.
func ParseConfig(r io.Reader) (Config, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	// Decode over the defaults: an omitted field keeps its default, and an
	// explicit 0 (meaningful for policy.high_active_window_ms) stays 0.
	c := DefaultConfig()
	if len(bytes.TrimSpace(b)) > 0 {
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
			return Config{}, fmt.Errorf("parse config: %w", err)
		}
	}
	c = c.WithDefaults()
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return c, nil
}

// LoadConfig reads the configuration file at path. An empty path, or the
// default path when it does not exist, yields DefaultConfig.
func LoadConfig(path string) (Config, error) {
	explicit := path != ""
	if !explicit {
		path = DefaultConfigPath
	}
	f, err := os.Open(path)
	if err != nil {
		if !explicit && errors.Is(err, os.ErrNotExist) {
			return DefaultConfig(), nil
		}
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	defer f.Close()
	c, err := ParseConfig(f)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}
