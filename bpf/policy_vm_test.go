//go:build vmtest

package bpf

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/agentcg/agentcg/cgroup"
	"github.com/agentcg/agentcg/internal/vmtest"
	"github.com/agentcg/agentcg/policy"
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

const cgRoot = "/sys/fs/cgroup"

func newPolicy(t *testing.T, cfg policy.Config) *Policy {
	t.Helper()
	base := t.TempDir()
	cfg.PinDir = filepath.Join("/sys/fs/bpf", "agentcg-"+filepath.Base(base))
	p, err := Load(Options{Config: cfg, RecordDir: filepath.Join(base, "links")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.DetachAll(context.Background()); err != nil {
			t.Errorf("detach all: %v", err)
		}
		p.Close()
		os.Remove(cfg.PinDir)
	})
	return p
}

func TestProbeInGuest(t *testing.T) {
	vmtest.Require(t)
	if err := Probe(); err != nil {
		t.Fatalf("probe: %v", err)
	}
}

// opsProgNames reads the prog ids the kernel reports in a struct_ops map's
// value, per memcg_bpf_ops member, and returns each program's name ("" =
// not set).
func opsProgNames(t *testing.T, m *ebpf.Map) map[string]string {
	t.Helper()
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		t.Fatal(err)
	}
	var wrapper *btf.Struct
	if err := spec.TypeByName(featureType, &wrapper); err != nil {
		t.Fatal(err)
	}
	var dataOff uint32
	var ops *btf.Struct
	for _, m := range wrapper.Members {
		if m.Name == "data" {
			dataOff = m.Offset.Bytes()
			ops = m.Type.(*btf.Struct)
		}
	}
	buf := make([]byte, m.ValueSize())
	if err := m.Lookup(uint32(0), buf); err != nil {
		t.Fatalf("lookup %v: %v", m, err)
	}
	out := map[string]string{}
	for _, mem := range ops.Members {
		id := binary.LittleEndian.Uint64(buf[dataOff+mem.Offset.Bytes():])
		if id == 0 {
			out[mem.Name] = ""
			continue
		}
		prog, err := ebpf.NewProgramFromID(ebpf.ProgramID(id))
		if err != nil {
			t.Fatalf("%s: prog %d: %v", mem.Name, id, err)
		}
		info, err := prog.Info()
		prog.Close()
		if err != nil {
			t.Fatal(err)
		}
		out[mem.Name] = info.Name
	}
	return out
}

// TestOpsMapsHoldTheirOwnPrograms guards against the cilium/ebpf v0.22.0
// bug that puts every memcg_bpf_ops program into every ops map of an object.
func TestOpsMapsHoldTheirOwnPrograms(t *testing.T) {
	vmtest.Require(t)
	p := newPolicy(t, policy.DefaultConfig())
	if err := p.Preload(context.Background()); err != nil {
		t.Fatal(err)
	}
	high := opsProgNames(t, p.ops.high)
	low := opsProgNames(t, p.ops.low)
	t.Logf("high_ops %v, low_ops %v", high, low)
	want := map[string][2]string{
		"below_low":             {"high_below_low", ""},
		"below_min":             {"high_below_min", ""},
		"get_high_delay_ms":     {"", "low_delay"},
		"handle_cgroup_online":  {"", ""},
		"handle_cgroup_offline": {"", ""},
	}
	for member, w := range want {
		if high[member] != w[0] || low[member] != w[1] {
			t.Errorf("%s: high_ops has %q (want %q), low_ops has %q (want %q)", member, high[member], w[0], low[member], w[1])
		}
	}
}

func TestAttachDetachListStats(t *testing.T) {
	vmtest.Require(t)
	ctx := context.Background()
	p := newPolicy(t, policy.DefaultConfig())
	parent := cg(t, filepath.Join(cgRoot, "agentcg-basic"))
	h := cg(t, filepath.Join(parent, "high"))
	l := cg(t, filepath.Join(parent, "low"))
	hl, err := p.Attach(ctx, h, policy.High)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Attach(ctx, l, policy.Low); err != nil {
		t.Fatal(err)
	}
	again, err := p.Attach(ctx, h, policy.High)
	if err != nil || again != hl {
		t.Fatalf("re-attach: %v %+v != %+v", err, again, hl)
	}
	links, err := p.List(ctx)
	if err != nil || len(links) != 2 {
		t.Fatalf("list: %v %+v", err, links)
	}
	for _, k := range links {
		if k.Orphan {
			t.Errorf("unexpected orphan %+v", k)
		}
		if _, err := os.Stat(k.PinPath); err != nil {
			t.Errorf("pin: %v", err)
		}
	}
	// Switching priority replaces the link.
	sw, err := p.Attach(ctx, h, policy.Low)
	if err != nil || sw.Priority != policy.Low {
		t.Fatalf("switch: %v %+v", err, sw)
	}
	// Parent attach is refused (children have ops): errno must be in the error.
	if _, err := p.Attach(ctx, parent, policy.Low); err == nil {
		t.Errorf("attach to parent of attached cgroups succeeded")
	} else {
		t.Logf("parent attach refused as expected: %v", err)
	}
	// LOW allocates: get_high_delay_ms runs, gate is closed (no HIGH active).
	timed(t, l, "alloc", 8, 1)
	st, err := p.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lid, _ := cgroup.ID(l)
	if st[lid].DelayCalls == 0 || st[lid].DelayNonZero != 0 {
		t.Errorf("low counters %+v: want calls and no delays", st[lid])
	}
	for _, d := range []string{h, l} {
		if err := p.Detach(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Detach(ctx, l); err != nil {
		t.Errorf("second detach: %v", err)
	}
	links, _ = p.List(ctx)
	ents, _ := os.ReadDir(p.linksDir())
	if len(links) != 0 || len(ents) != 0 {
		t.Errorf("after detach: links %+v pins %d", links, len(ents))
	}
}

// median of ds, leaving ds in its order (callers pair runs by index).
func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// Preload loads the objects and pins the shared maps before any attach.
func TestPreload(t *testing.T) {
	vmtest.Require(t)
	p := newPolicy(t, policy.DefaultConfig())
	if err := p.Preload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p.ops == nil || p.Loads() != 1 {
		t.Fatalf("Preload returned with ops %v after %d loads, want one load", p.ops, p.Loads())
	}
	for _, pin := range []string{filepath.Join(p.mapsDir(), highMapName), p.ops.highPin, p.ops.lowPin} {
		if _, err := os.Stat(pin); err != nil {
			t.Errorf("not pinned after Preload: %v", err)
		}
	}
}

// TestTotalsOutliveDetach: the per-priority totals match the per-cgroup
// counters while nothing is evicted, and neither Detach nor removing the
// cgroup takes anything off them.
func TestTotalsOutliveDetach(t *testing.T) {
	vmtest.Require(t)
	ctx := context.Background()
	p := newPolicy(t, policy.DefaultConfig())
	parent := cg(t, filepath.Join(cgRoot, "agentcg-totals"))
	l := cg(t, filepath.Join(parent, "low"))
	if _, err := p.Attach(ctx, l, policy.Low); err != nil {
		t.Fatal(err)
	}
	timed(t, l, "alloc", 8, 1)
	tot, err := p.Totals(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := p.Stats(ctx)
	lid, _ := cgroup.ID(l)
	t.Logf("totals %+v; LOW cgroup %+v", tot, st[lid])
	if tot[policy.Low].DelayCalls == 0 || tot[policy.Low] != st[lid] {
		t.Errorf("LOW totals %+v, want the LOW cgroup's non-zero counters %+v", tot[policy.Low], st[lid])
	}
	if tot[policy.High] != (policy.Counters{}) {
		t.Errorf("HIGH totals %+v without a HIGH cgroup", tot[policy.High])
	}
	if err := p.Detach(ctx, l); err != nil {
		t.Fatal(err)
	}
	rmCgroup(l)
	after, err := p.Totals(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after[policy.Low] != tot[policy.Low] {
		t.Errorf("LOW totals after detach and rmdir %+v, want %+v", after[policy.Low], tot[policy.Low])
	}
}

// TestAttachDirUsesTheOpenedCgroup: cgroup v2 refuses rename, so the swap
// is rmdir + mkdir at the same path after the caller opened the directory.
// The attach goes to the opened (now removed) cgroup or fails; the new
// cgroup at the path never gets the ops.
func TestAttachDirUsesTheOpenedCgroup(t *testing.T) {
	vmtest.Require(t)
	ctx := context.Background()
	p := newPolicy(t, policy.DefaultConfig())
	parent := cg(t, filepath.Join(cgRoot, "agentcg-attachdir"))
	a := cg(t, filepath.Join(parent, "a"))
	f, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	oldID, _ := cgroup.ID(a)
	if err := os.Remove(a); err != nil {
		t.Fatal(err)
	}
	cg(t, a) // the swapped-in cgroup at the same path
	newID, _ := cgroup.ID(a)
	l, err := p.AttachDir(ctx, f, a, policy.Low)
	t.Logf("AttachDir on the removed cgroup %d (path now cgroup %d): %+v, %v", oldID, newID, l, err)
	if err == nil && l.CgroupID != oldID {
		t.Fatalf("link on cgroup %d, want the opened cgroup %d or an error", l.CgroupID, oldID)
	}
	timed(t, a, "alloc", 8, 1)
	st, _ := p.Stats(ctx)
	links, _ := p.List(ctx)
	for _, k := range links {
		if k.CgroupID == newID {
			t.Errorf("the swapped-in cgroup got a link: %+v", k)
		}
	}
	if st[newID].DelayCalls != 0 {
		t.Errorf("get_high_delay_ms ran for the swapped-in cgroup: %+v", st[newID])
	}
	// The same descriptor flow on a live cgroup attaches it.
	b := cg(t, filepath.Join(parent, "b"))
	fb, err := os.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	bid, _ := cgroup.ID(b)
	if l, err := p.AttachDir(ctx, fb, b, policy.Low); err != nil || l.CgroupID != bid || l.CgroupPath != b {
		t.Fatalf("AttachDir on a live cgroup: %+v, %v", l, err)
	}
	timed(t, b, "alloc", 8, 1)
	if st, _ := p.Stats(ctx); st[bid].DelayCalls == 0 {
		t.Errorf("no get_high_delay_ms calls for the attached cgroup: %+v", st[bid])
	}
}
