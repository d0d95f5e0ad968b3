package bpf

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Loaded objects are shared by every process through bpffs:
//
//	<PinDir>/maps/agentcg_{high,ctrs,totals}  the data maps, pinned by name
//	<PinDir>/ops/high-<key>, low-<key>         the struct_ops maps
//
// <key> hashes the object's bytes, the knob values baked into its .rodata
// and the ids of the data maps its programs use, so a pin is only ever
// reused by a process that would have loaded exactly the same thing. A
// process that finds both pins of its key opens them (BPF_OBJ_GET) and only
// creates links: no BTF probe, no ELF parsing, no verifier. The struct_ops
// map keeps its programs alive after the loading process exits.

// loadWait bounds how long a process waits for another one that is
// loading the same objects, before it loads them itself.
const loadWait = 20 * time.Second

// opsSet is what Attach needs: this process's handles on the two shared
// struct_ops maps and on the HIGH growth map.
type opsSet struct {
	high, low       *ebpf.Map
	growth          *ebpf.Map
	highPin, lowPin string
}

func (o *opsSet) close() {
	for _, m := range []*ebpf.Map{o.high, o.low, o.growth} {
		if m != nil {
			m.Close()
		}
	}
}

// current reports whether the pins the set was opened from are still there
// (detach --all removes them; a stale-pin cleanup by a process with other
// knobs may too).
func (o *opsSet) current() bool { return pinned(o.highPin) && pinned(o.lowPin) }

func (p *Policy) opsDir() string { return filepath.Join(p.cfg.PinDir, opsSubdir) }

// dataMapNames are the maps both objects share.
var dataMapNames = []string{highMapName, ctrsMapName, totalsMapName}

// opsKeys returns the pin names of the high and low ops for this policy's
// knobs and the given data map ids.
func (p *Policy) opsKeys(dataIDs []ebpf.MapID) (high, low string) {
	sum := func(obj []byte, knobs ...uint64) string {
		h := sha256.New()
		h.Write([]byte("agentcg-ops-v1\x00"))
		h.Write(obj)
		for _, v := range knobs {
			binary.Write(h, binary.LittleEndian, v)
		}
		for _, id := range dataIDs {
			binary.Write(h, binary.LittleEndian, uint32(id))
		}
		return hex.EncodeToString(h.Sum(nil)[:8])
	}
	c := p.cfg
	return "high-" + sum(_HighBytes),
		"low-" + sum(_LowBytes, uint64(c.GatePct), uint64(c.DelayBaseMs), uint64(c.DelayMaxMs),
			uint64(c.HighActiveWindowMs), c.HighGrowthBytes)
}

// openDataMaps opens the shared data maps from their pins; fs.ErrNotExist
// if one is missing.
func (p *Policy) openDataMaps() (map[string]*ebpf.Map, []ebpf.MapID, error) {
	ms := map[string]*ebpf.Map{}
	var ids []ebpf.MapID
	for _, name := range dataMapNames {
		m, err := ebpf.LoadPinnedMap(filepath.Join(p.mapsDir(), name), nil)
		if err == nil {
			var id ebpf.MapID
			id, err = mapID(m)
			if err == nil {
				ms[name], ids = m, append(ids, id)
				continue
			}
			m.Close()
		}
		closeMaps(ms)
		return nil, nil, err
	}
	return ms, ids, nil
}

func mapID(m *ebpf.Map) (ebpf.MapID, error) {
	info, err := m.Info()
	if err != nil {
		return 0, fmt.Errorf("map info: %w", err)
	}
	id, ok := info.ID()
	if !ok {
		return 0, errors.New("kernel reports no map id")
	}
	return id, nil
}

func closeMaps(ms map[string]*ebpf.Map) {
	for _, m := range ms {
		m.Close()
	}
}

// reopenOps opens the pinned ops of this policy's key, or returns
// fs.ErrNotExist. It loads nothing.
func (p *Policy) reopenOps() (*opsSet, error) {
	data, ids, err := p.openDataMaps()
	if err != nil {
		return nil, err
	}
	defer func() {
		for name, m := range data {
			if name != highMapName {
				m.Close()
			}
		}
	}()
	hk, lk := p.opsKeys(ids)
	o := &opsSet{growth: data[highMapName], highPin: filepath.Join(p.opsDir(), hk), lowPin: filepath.Join(p.opsDir(), lk)}
	if o.high, err = ebpf.LoadPinnedMap(o.highPin, nil); err == nil {
		o.low, err = ebpf.LoadPinnedMap(o.lowPin, nil)
	}
	if err != nil {
		o.close()
		return nil, err
	}
	return o, nil
}

// ensureOps returns this process's handles on the shared ops, reopening
// the pins of its key when they exist and loading (then pinning) only when
// they do not. Callers hold opsMu.
func (p *Policy) ensureOps(ctx context.Context) (*opsSet, error) {
	if p.ops != nil {
		if p.ops.current() {
			return p.ops, nil
		}
		p.ops.close()
		p.ops = nil
	}
	o, err := p.reopenOps()
	if err == nil {
		p.ops = o
		return o, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("open pinned ops under %s: %w", p.cfg.PinDir, err)
	}
	unlock, err := p.lockLoad(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	// Whoever held the lock may have loaded exactly these.
	if o, err := p.reopenOps(); err == nil {
		p.ops = o
		return o, nil
	}
	t0 := time.Now()
	o, err = p.loadOps()
	if err != nil {
		return nil, err
	}
	p.loads.Add(1)
	p.log.Info("loaded BPF objects", "pin_dir", p.cfg.PinDir, "high_ops", filepath.Base(o.highPin),
		"low_ops", filepath.Base(o.lowPin), "took", time.Since(t0).Round(time.Millisecond))
	p.cleanStaleOps(o)
	p.ops = o
	return o, nil
}

// lockLoad takes an exclusive flock on the ops folder so that concurrent
// processes load once. It waits at most loadWait (or until ctx ends): past
// that it returns without the lock and the caller loads anyway (a pin race
// is harmless, see pinOrReuse).
func (p *Policy) lockLoad(ctx context.Context) (func(), error) {
	if err := os.MkdirAll(p.opsDir(), 0o755); err != nil {
		return nil, fmt.Errorf("pin dir: %w", err)
	}
	f, err := os.Open(p.opsDir())
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", p.opsDir(), err)
	}
	deadline := time.Now().Add(loadWait)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", p.opsDir(), err)
		}
		if time.Now().After(deadline) {
			f.Close()
			p.log.Warn("another process is still loading the BPF objects; loading them here too", "waited", loadWait, "dir", p.opsDir())
			return func() {}, nil
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("wait for the BPF load lock %s: %w", p.opsDir(), ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// loadOps loads both objects against the shared data maps (creating and
// pinning the missing ones, replacing pins that do not match this build)
// and pins their ops under their keys.
func (p *Policy) loadOps() (*opsSet, error) {
	highSpec, err := loadHigh()
	if err != nil {
		return nil, err
	}
	lowSpec, err := loadLow()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(p.mapsDir(), 0o755); err != nil {
		return nil, fmt.Errorf("pin dir: %w", err)
	}
	data := map[string]*ebpf.Map{}
	var ids []ebpf.MapID
	for _, name := range dataMapNames {
		m, err := p.dataMap(highSpec.Maps[name])
		if err != nil {
			closeMaps(data)
			return nil, err
		}
		id, err := mapID(m)
		if err != nil {
			m.Close()
			closeMaps(data)
			return nil, err
		}
		data[name], ids = m, append(ids, id)
	}
	defer func() {
		for name, m := range data {
			if name != highMapName {
				m.Close()
			}
		}
	}()
	vars := map[string]any{
		"gate_pct":          p.cfg.GatePct,
		"delay_base_ms":     p.cfg.DelayBaseMs,
		"delay_max_ms":      p.cfg.DelayMaxMs,
		"high_window_ns":    uint64(p.cfg.HighActiveWindowMs) * 1e6,
		"high_growth_bytes": p.cfg.HighGrowthBytes,
	}
	for name, v := range vars {
		if err := lowSpec.Variables[name].Set(v); err != nil {
			data[highMapName].Close()
			return nil, fmt.Errorf("set %s: %w", name, err)
		}
	}
	hk, lk := p.opsKeys(ids)
	o := &opsSet{growth: data[highMapName], highPin: filepath.Join(p.opsDir(), hk), lowPin: filepath.Join(p.opsDir(), lk)}
	opts := &ebpf.CollectionOptions{MapReplacements: data}
	var high highObjects
	if err := highSpec.LoadAndAssign(&high, opts); err != nil {
		o.close()
		return nil, fmt.Errorf("load high ops: %w", err)
	}
	defer high.Close()
	var low lowObjects
	if err := lowSpec.LoadAndAssign(&low, opts); err != nil {
		o.close()
		return nil, fmt.Errorf("load low ops: %w", err)
	}
	defer low.Close()
	if o.high, err = pinOrReuse(high.HighOps, o.highPin); err == nil {
		o.low, err = pinOrReuse(low.LowOps, o.lowPin)
	}
	if err != nil {
		o.close()
		return nil, err
	}
	return o, nil
}

// dataMap opens the pinned data map of spec, or creates and pins it. A pin
// that does not match spec (left by another build) is replaced; links made
// with the old map keep it.
func (p *Policy) dataMap(spec *ebpf.MapSpec) (*ebpf.Map, error) {
	pin := filepath.Join(p.mapsDir(), spec.Name)
	for attempt := 0; ; attempt++ {
		m, err := ebpf.LoadPinnedMap(pin, nil)
		if err == nil {
			if cerr := spec.Compatible(m); cerr == nil {
				return m, nil
			} else {
				m.Close()
				p.log.Warn("replacing a pinned map that does not match this build", "pin", pin, "err", cerr)
				if err := os.Remove(pin); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return nil, fmt.Errorf("replace %s: %w", pin, err)
				}
			}
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("open %s: %w", pin, err)
		}
		s := spec.Copy()
		s.Pinning = ebpf.PinNone // pinned below, where a lost race is visible
		m, err = ebpf.NewMap(s)
		if err != nil {
			return nil, fmt.Errorf("create map %s: %w", spec.Name, err)
		}
		err = m.Pin(pin)
		if err == nil {
			return m, nil
		}
		m.Close()
		if !errors.Is(err, fs.ErrExist) || attempt > 0 {
			return nil, fmt.Errorf("pin map %s: %w", pin, err)
		}
		// Another process pinned it first (it did not wait for the load
		// lock): use theirs.
	}
}

// pinOrReuse pins the freshly loaded ops map m at pin and returns a handle
// on it; if another process pinned the same key first, it returns theirs.
func pinOrReuse(m *ebpf.Map, pin string) (*ebpf.Map, error) {
	if err := m.Pin(pin); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("pin %s: %w", pin, err)
	}
	return ebpf.LoadPinnedMap(pin, nil)
}

// cleanStaleOps removes ops pins other than cur's that no pinned link uses:
// other knobs, or another build. Removing a pin never affects a link (the
// link holds the map), so this only costs a process that still wanted that
// key a reload. Called with the load lock held.
func (p *Policy) cleanStaleOps(cur *opsSet) {
	ents, err := os.ReadDir(p.opsDir())
	if err != nil {
		return
	}
	used := p.linkedOpsMaps()
	for _, e := range ents {
		pin := filepath.Join(p.opsDir(), e.Name())
		if pin == cur.highPin || pin == cur.lowPin {
			continue
		}
		m, err := ebpf.LoadPinnedMap(pin, nil)
		if err == nil {
			id, ierr := mapID(m)
			m.Close()
			if ierr == nil && used[id] {
				continue
			}
		}
		if err := os.Remove(pin); err == nil {
			p.log.Info("removed stale ops pin", "pin", pin)
		}
	}
}

// linkedOpsMaps returns the ids of the struct_ops maps the pinned links use.
func (p *Policy) linkedOpsMaps() map[ebpf.MapID]bool {
	used := map[ebpf.MapID]bool{}
	ents, _ := os.ReadDir(p.linksDir())
	for _, e := range ents {
		l, err := link.LoadPinnedLink(filepath.Join(p.linksDir(), e.Name()), nil)
		if err != nil {
			continue
		}
		if id, err := structOpsMapID(l); err == nil {
			used[id] = true
		}
		l.Close()
	}
	return used
}

// structOpsMapID reads bpf_link_info.struct_ops.map_id of a struct_ops
// link (cilium/ebpf does not decode it).
func structOpsMapID(l link.Link) (ebpf.MapID, error) {
	fl, ok := l.(interface{ FD() int })
	if !ok {
		return 0, fmt.Errorf("link %T has no fd", l)
	}
	var info [64]byte // type, id, prog_id, pad, then the union at offset 16
	attr := struct {
		fd, infoLen uint32
		info        uint64
	}{uint32(fl.FD()), uint32(len(info)), uint64(uintptr(unsafe.Pointer(&info[0])))}
	_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_OBJ_GET_INFO_BY_FD, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(l)
	runtime.KeepAlive(&info)
	if errno != 0 {
		return 0, fmt.Errorf("link info: %w", errno)
	}
	if typ := binary.LittleEndian.Uint32(info[0:]); typ != unix.BPF_LINK_TYPE_STRUCT_OPS {
		return 0, fmt.Errorf("link type %d is not struct_ops", typ)
	}
	return ebpf.MapID(binary.LittleEndian.Uint32(info[16:])), nil
}

// opsPinned reports whether pinDir holds loaded ops: then this boot's
// kernel has memcg_bpf_ops (bpffs does not outlive a boot), and Load needs
// no BTF probe.
func opsPinned(pinDir string) bool {
	ents, err := os.ReadDir(filepath.Join(pinDir, opsSubdir))
	if err != nil {
		return false
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "high-") || strings.HasPrefix(e.Name(), "low-") {
			return true
		}
	}
	return false
}
