package bpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf/btf"
)

// Feature is the kernel feature the BPF policy needs.
const Feature = "memcg_bpf_ops"

// featureType is the kernel BTF type that exists when Feature is built in.
const featureType = "bpf_struct_ops_memcg_bpf_ops"

// Series names the kernel patches that add Feature.
const Series = `the memcg BPF struct_ops RFC series ("mm: memcontrol: Add BPF hooks for memory controller", Hui Zhu, bpf-next v6)`

// MissingFeatureError says that the running kernel cannot run the BPF policy.
type MissingFeatureError struct {
	Err error // why the probe failed: BTF unreadable, or the type is absent
}

func (e *MissingFeatureError) Error() string {
	return fmt.Sprintf("kernel lacks %s (no BTF type %s): the BPF policy needs %s: %v", Feature, featureType, Series, e.Err)
}

func (e *MissingFeatureError) Unwrap() error { return e.Err }

// IsMissingFeature reports whether err comes from a failed Probe.
func IsMissingFeature(err error) bool {
	var m *MissingFeatureError
	return errors.As(err, &m)
}

// Probe checks the running kernel's BTF for memcg_bpf_ops. It returns nil
// when the BPF policy can run, and a *MissingFeatureError otherwise.
func Probe() error {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return &MissingFeatureError{Err: fmt.Errorf("load kernel BTF: %w", err)}
	}
	if _, err := spec.AnyTypeByName(featureType); err != nil {
		return &MissingFeatureError{Err: err}
	}
	return nil
}
