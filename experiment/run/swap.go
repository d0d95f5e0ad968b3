package run

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/agentcg/agentcg/experiment/results"
)

// Zram is a compressed swap device the experiment sets up for the swap
// regime and tears down at the end (device "zram"), or the machine's
// existing swap that it only checks (device "existing").
type Zram struct {
	SysBlock string // /sys/block, a temp dir in tests
	Dev      string // /dev
	Control  string // /sys/class/zram-control

	name    string // zram0
	created bool   // hot_add'ed by us (else an unused existing zramN)
	on      bool
}

// Setup makes /dev/zramN a swap device of size bytes with algorithm
// (empty: the kernel's default) and turns it on.
func (z *Zram) Setup(ctx context.Context, size int64, algorithm string) (results.SwapDevice, error) {
	z.defaults()
	dev := results.SwapDevice{SizeBytes: size, Created: true}
	name, err := z.freeDevice()
	if err != nil {
		return dev, err
	}
	z.name = name
	sys := filepath.Join(z.SysBlock, name)
	if algorithm != "" {
		if err := os.WriteFile(filepath.Join(sys, "comp_algorithm"), []byte(algorithm), 0); err != nil {
			return dev, fmt.Errorf("zram %s: comp_algorithm %q: %w", name, algorithm, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(sys, "comp_algorithm")); err == nil {
		dev.Algorithm = selected(string(b))
	}
	if err := os.WriteFile(filepath.Join(sys, "disksize"), []byte(strconv.FormatInt(size, 10)), 0); err != nil {
		return dev, fmt.Errorf("zram %s: disksize %d: %w", name, size, err)
	}
	dev.Device = filepath.Join(z.Dev, name)
	if out, err := exec.CommandContext(ctx, "mkswap", dev.Device).CombinedOutput(); err != nil {
		return dev, fmt.Errorf("mkswap %s: %w: %s", dev.Device, err, bytes.TrimSpace(out))
	}
	if err := swapon(dev.Device); err != nil {
		return dev, err
	}
	z.on = true
	return dev, nil
}

func (z *Zram) defaults() {
	if z.SysBlock == "" {
		z.SysBlock = "/sys/block"
	}
	if z.Dev == "" {
		z.Dev = "/dev"
	}
	if z.Control == "" {
		z.Control = "/sys/class/zram-control"
	}
}

// freeDevice returns an unused zram device (disksize 0), adding one when
// every existing device is in use.
func (z *Zram) freeDevice() (string, error) {
	ents, _ := filepath.Glob(filepath.Join(z.SysBlock, "zram*"))
	for _, e := range ents {
		if b, err := os.ReadFile(filepath.Join(e, "disksize")); err == nil && strings.TrimSpace(string(b)) == "0" {
			return filepath.Base(e), nil
		}
	}
	b, err := os.ReadFile(filepath.Join(z.Control, "hot_add"))
	if err != nil {
		return "", fmt.Errorf("no free zram device and none can be added (%w): the swap regime needs CONFIG_ZRAM, or swap.device: existing", err)
	}
	z.created = true
	return "zram" + strings.TrimSpace(string(b)), nil
}

// selected picks the bracketed entry of comp_algorithm ("lzo [lzo-rle] lz4").
func selected(s string) string {
	if i := strings.IndexByte(s, '['); i >= 0 {
		if j := strings.IndexByte(s[i:], ']'); j > 0 {
			return s[i+1 : i+j]
		}
	}
	return strings.TrimSpace(s)
}

// Stat reads the device's mm_stat (zero before Setup).
func (z *Zram) Stat() results.Zram {
	var r results.Zram
	if z.name == "" {
		return r
	}
	b, err := os.ReadFile(filepath.Join(z.SysBlock, z.name, "mm_stat"))
	if err != nil {
		return r
	}
	return parseMMStat(string(b))
}

// parseMMStat reads orig_data_size compr_data_size mem_used_total
// mem_limit mem_used_max same_pages … (Documentation/admin-guide/blockdev/zram.rst).
func parseMMStat(s string) results.Zram {
	f := strings.Fields(s)
	n := func(i int) int64 {
		if i >= len(f) {
			return 0
		}
		v, _ := strconv.ParseInt(f[i], 10, 64)
		return v
	}
	return results.Zram{OrigBytes: n(0), ComprBytes: n(1), UsedBytes: n(2), SamePages: n(5)}
}

// Diff is end minus start; the ratio is over what was stored at the end.
func zramDiff(start, end results.Zram) *results.Zram {
	d := &results.Zram{OrigBytes: end.OrigBytes - start.OrigBytes, ComprBytes: end.ComprBytes - start.ComprBytes,
		UsedBytes: end.UsedBytes - start.UsedBytes, SamePages: end.SamePages - start.SamePages}
	if end.ComprBytes > 0 {
		d.Ratio = float64(end.OrigBytes) / float64(end.ComprBytes)
	}
	return d
}

// Teardown turns the device off and resets it (and removes it if added).
func (z *Zram) Teardown() error {
	if z.name == "" {
		return nil
	}
	dev := filepath.Join(z.Dev, z.name)
	var errs []error
	if z.on {
		if err := swapoff(dev); err != nil {
			errs = append(errs, err)
		} else {
			z.on = false
		}
	}
	if !z.on {
		errs = append(errs, os.WriteFile(filepath.Join(z.SysBlock, z.name, "reset"), []byte("1"), 0))
		if z.created {
			id := strings.TrimPrefix(z.name, "zram")
			errs = append(errs, os.WriteFile(filepath.Join(z.Control, "hot_remove"), []byte(id), 0))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tear down %s: %w", dev, err)
	}
	z.name = ""
	return nil
}

// ActiveSwapBytes is the total size of the machine's active swap.
func ActiveSwapBytes() int64 {
	b, err := os.ReadFile("/proc/swaps")
	if err != nil {
		return 0
	}
	var total int64
	for i, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		if i == 0 || len(f) < 3 {
			continue
		}
		kb, _ := strconv.ParseInt(f[2], 10, 64)
		total += kb * 1024
	}
	return total
}

func swapon(dev string) error {
	p, err := unix.BytePtrFromString(dev)
	if err != nil {
		return err
	}
	if _, _, e := unix.Syscall(unix.SYS_SWAPON, uintptr(unsafe.Pointer(p)), 0, 0); e != 0 {
		return fmt.Errorf("swapon %s: %w", dev, e)
	}
	return nil
}

func swapoff(dev string) error {
	p, err := unix.BytePtrFromString(dev)
	if err != nil {
		return err
	}
	if _, _, e := unix.Syscall(unix.SYS_SWAPOFF, uintptr(unsafe.Pointer(p)), 0, 0); e != 0 {
		return fmt.Errorf("swapoff %s: %w", dev, e)
	}
	return nil
}
