package replay

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// dutyPeriod is the CPU replay's duty cycle: each worker spins for its share
// of the period and sleeps the rest.
const dutyPeriod = 10 * time.Millisecond

// burner replays a CPU percentage (which may exceed 100 on several cores)
// with one spinning worker per 100%.
type burner struct {
	percent atomic.Uint64 // float64 bits
	max     float64
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	spun    atomic.Int64 // nanoseconds the workers were set to spin, summed
}

// spinTime is the time the workers were set to spin so far: what the trace
// asked for, whether or not the scheduler gave them the CPU.
func (b *burner) spinTime() time.Duration { return time.Duration(b.spun.Load()) }

func startBurner(ctx context.Context, maxPercent float64) *burner {
	ctx, cancel := context.WithCancel(ctx)
	b := &burner{max: maxPercent, cancel: cancel}
	for w := range int(math.Ceil(maxPercent / 100)) {
		b.wg.Add(1)
		go b.work(ctx, w)
	}
	return b
}

// set changes the target; it is clamped to [0, max].
func (b *burner) set(percent float64) {
	b.percent.Store(math.Float64bits(min(max(percent, 0), b.max)))
}

func (b *burner) work(ctx context.Context, w int) {
	defer b.wg.Done()
	for ctx.Err() == nil {
		busy := time.Duration(workerShare(math.Float64frombits(b.percent.Load()), w) * float64(dutyPeriod))
		b.spun.Add(int64(busy))
		for end := time.Now().Add(busy); time.Now().Before(end); {
		}
		if rest := dutyPeriod - busy; rest > 0 {
			time.Sleep(rest)
		}
	}
}

// workerShare is the share of each duty period worker w spins to make up
// percent in total: workers below it spin fully, the one it ends in partly.
func workerShare(percent float64, w int) float64 {
	return min(max(percent/100-float64(w), 0), 1)
}

func (b *burner) stop() {
	b.cancel()
	b.wg.Wait()
}
