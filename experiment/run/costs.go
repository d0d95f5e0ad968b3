package run

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/agentcg/agentcg/cgroup"
	"github.com/agentcg/agentcg/experiment/results"
)

// Cost is what making memory resident costs in one reclaim regime, in
// wall seconds per GB (10^9 bytes): filling it with no limit, filling it
// under a memory.max of half its size (so half is reclaimed on the way:
// swapped out or evicted), and reading it all back once under that limit
// (faulting the reclaimed half back in, reclaiming the other).
type Cost struct {
	Regime        string  `json:"regime"`
	Bytes         int64   `json:"bytes"`
	FillSPerGB    float64 `json:"fill_s_per_gb"`
	ReclaimSPerGB float64 `json:"fill_under_limit_s_per_gb"`
	RereadSPerGB  float64 `json:"reread_under_limit_s_per_gb"`
	ZramRatio     float64 `json:"zram_ratio,omitempty"`
	Note          string  `json:"note,omitempty"`
}

// MeasureCosts measures every regime with bytes of page content of the
// given random share. The swap regime needs zram (set up and torn down
// here), the file regime a disk-backed scratch folder.
func MeasureCosts(ctx context.Context, replayBin string, t Tree, z *Zram, scratch string, bytes int64, randomShare float64) ([]Cost, error) {
	dir := filepath.Join(t.Root, t.Parent+"-costs")
	_ = os.Remove(dir)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("costs cgroup: %w", err)
	}
	defer os.Remove(dir)
	gb := func(s float64) float64 { return s / (float64(bytes) / 1e9) }
	share := strconv.FormatFloat(randomShare, 'g', -1, 64)
	n := strconv.FormatInt(bytes, 10)
	set := func(max, swap int64) error {
		return errors.Join(cgroup.Write(dir, "memory.max", cgroup.FormatBytes(max)), cgroup.Write(dir, "memory.swap.max", cgroup.FormatBytes(swap)))
	}
	var out []Cost

	// none: no reclaim possible, so only the unlimited fill.
	if err := set(cgroup.Max, 0); err != nil {
		return nil, err
	}
	r, err := runRate(ctx, replayBin, dir, "--bytes", n, "--random-share", share, "--rereads", "1")
	if err != nil {
		return nil, err
	}
	out = append(out, Cost{Regime: "none", Bytes: bytes, FillSPerGB: gb(r.FillS), RereadSPerGB: gb(r.RereadS[0]),
		Note: "nothing reclaimable: a limit below the size is an OOM kill; the reread is of resident pages"})

	// swap: zram, half of the bytes over the limit.
	if z != nil {
		if ActiveSwapBytes() > 0 {
			return out, errors.New("swap regime: a swap device is already active")
		}
		if _, err := z.Setup(ctx, 2*bytes, ""); err != nil {
			return out, err
		}
		c := Cost{Regime: "swap", Bytes: bytes}
		err := func() error {
			defer z.Teardown()
			if err := set(cgroup.Max, cgroup.Max); err != nil {
				return err
			}
			r, err := runRate(ctx, replayBin, dir, "--bytes", n, "--random-share", share)
			if err != nil {
				return err
			}
			c.FillSPerGB = gb(r.FillS)
			if err := set(bytes/2, cgroup.Max); err != nil {
				return err
			}
			// The device's fullest moment, while the process holds its pages.
			done, stop := make(chan struct{}), make(chan struct{})
			var peak results.Zram
			go func() {
				defer close(done)
				t := time.NewTicker(100 * time.Millisecond)
				defer t.Stop()
				for {
					if st := z.Stat(); st.OrigBytes > peak.OrigBytes {
						peak = st
					}
					select {
					case <-stop:
						return
					case <-t.C:
					}
				}
			}()
			r, err = runRate(ctx, replayBin, dir, "--bytes", n, "--random-share", share, "--rereads", "1", "--hold", "1s")
			close(stop)
			<-done
			if err != nil {
				return err
			}
			c.ReclaimSPerGB, c.RereadSPerGB = gb(r.FillS), gb(r.RereadS[0])
			if peak.ComprBytes > 0 {
				c.ZramRatio = float64(peak.OrigBytes) / float64(peak.ComprBytes)
			}
			return nil
		}()
		if err != nil {
			return out, err
		}
		c.Note = "zram; the ratio is the device's when it held the most"
		out = append(out, c)
	}

	// file: clean page cache of a file on disk, half over the limit.
	if scratch != "" {
		f, err := PrepareFiles(scratch, map[string]int64{"costs": bytes}, randomShare)
		if err != nil {
			return out, err
		}
		defer f.Remove()
		c := Cost{Regime: "file", Bytes: bytes, Note: "a file on " + scratch + ", dropped from the page cache first"}
		if err := set(cgroup.Max, 0); err != nil {
			return out, err
		}
		r, err := runRate(ctx, replayBin, dir, "--bytes", n, "--file", f.Paths["costs"])
		if err != nil {
			return out, err
		}
		c.FillSPerGB = gb(r.FillS)
		if err := errors.Join(f.Drop(), set(bytes/2, 0)); err != nil {
			return out, err
		}
		r, err = runRate(ctx, replayBin, dir, "--bytes", n, "--file", f.Paths["costs"], "--rereads", "1")
		if err != nil {
			return out, err
		}
		c.ReclaimSPerGB, c.RereadSPerGB = gb(r.FillS), gb(r.RereadS[0])
		out = append(out, c)
	}
	return out, nil
}

// CostsText renders the costs as a table.
func CostsText(cs []Cost) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "regime\tbytes\tfill s/GB\tfill, half over the limit, s/GB\treread under the limit, s/GB\tzram ratio\tnote\t")
	for _, c := range cs {
		ratio := "–"
		if c.ZramRatio > 0 {
			ratio = fmt.Sprintf("%.2f:1", c.ZramRatio)
		}
		recl := "–"
		if c.ReclaimSPerGB > 0 {
			recl = fmt.Sprintf("%.2f", c.ReclaimSPerGB)
		}
		fmt.Fprintf(tw, "%s\t%.0f MB\t%.2f\t%s\t%.2f\t%s\t%s\t\n", c.Regime, float64(c.Bytes)/1e6, c.FillSPerGB, recl, c.RereadSPerGB, ratio, c.Note)
	}
	tw.Flush()
	return b.String()
}
